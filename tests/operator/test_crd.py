"""The CRD is generated from the models, structural, and the samples satisfy it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cryptolake.operator.crd import build_crd, crd_yaml
from cryptolake.operator.models import CryptoPipelineSpec

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "k8s" / "crd" / "cryptopipelines.cryptolake.io.yaml"
SAMPLES = sorted((REPO / "k8s" / "samples").glob("*.yaml"))


def test_committed_crd_equals_the_generated_one() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), (
        "k8s/crd is stale: run `.venv/bin/python -m cryptolake.operator crd > "
        f"{CRD_FILE.relative_to(REPO)}`"
    )


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes += walk(child, f"{path}.{name}")
    if "items" in schema:
        nodes += walk(schema["items"], f"{path}[]")
    return nodes


def test_schema_is_structural() -> None:
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(root):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for forbidden in ("$ref", "anyOf", "oneOf", "additionalProperties", "title", "const"):
            assert forbidden not in node, (path, forbidden)


def test_omitted_sections_get_every_default() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    processing = spec["properties"]["processing"]["default"]
    assert processing["ingest"]["trigger"] == "10 seconds"
    assert (processing["refine"]["trigger"], processing["refine"]["lateness"]) == (
        "1 second", "2 minutes",
    )  # fmt: skip
    assert spec["properties"]["broker"]["default"]["topic"]["partitions"] == 3
    assert spec["properties"]["storage"]["default"]["retainPolicy"] == "Retain"


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.stem for s in SAMPLES])
def test_samples_are_valid_pipelines(sample: Path) -> None:
    resource = yaml.safe_load(sample.read_text())
    assert resource["apiVersion"] == "cryptolake.io/v1alpha1"
    assert resource["kind"] == "CryptoPipeline"
    spec = CryptoPipelineSpec.model_validate(resource["spec"])
    assert spec.sources
