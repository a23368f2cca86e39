"""kind-config.yaml and skaffold.yaml agree with the repository: every build context and
Dockerfile exists, every chart path and values file exists, and the ports match the chart."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from cryptolake.stack.helm import CHART_DIR, REPO_DIR, render

KIND = yaml.safe_load((REPO_DIR / "kind-config.yaml").read_text())
SKAFFOLD = yaml.safe_load((REPO_DIR / "skaffold.yaml").read_text())
KIND_VALUES = CHART_DIR / "ci" / "kind-values.yaml"
COMPONENTS = ("operator", "producer", "jobs", "api", "minio")
DOCKERFILES = {
    "operator": "operator/Dockerfile",
    "producer": "producer/Dockerfile",
    "jobs": "jobs/Dockerfile",
    "api": "api/Dockerfile",
    "minio": "tools/images/minio/Dockerfile",
}


def _node_ports(docs: list[dict[str, Any]]) -> set[int]:
    return {
        port["nodePort"]
        for doc in docs
        if doc["kind"] == "Service" and doc["spec"].get("type") == "NodePort"
        for port in doc["spec"]["ports"]
    }


def test_kind_maps_exactly_the_node_ports_of_the_kind_values() -> None:
    assert KIND["kind"] == "Cluster" and KIND["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in KIND["nodes"]]
    assert roles == ["control-plane", "worker"]
    mapped = {
        mapping["containerPort"]
        for node in KIND["nodes"]
        for mapping in node.get("extraPortMappings", [])
    }
    assert mapped == _node_ports(render(KIND_VALUES)) == {30080, 30300}
    for node in KIND["nodes"]:
        for mapping in node.get("extraPortMappings", []):
            assert mapping["hostPort"] == mapping["containerPort"]
            assert mapping["listenAddress"] == "127.0.0.1"  # not on every interface


def test_every_component_image_has_an_artifact_whose_files_exist() -> None:
    artifacts = SKAFFOLD["build"]["artifacts"]
    assert sorted(a["image"] for a in artifacts) == sorted(
        f"localhost/cryptolake/{name}" for name in COMPONENTS
    )
    for artifact in artifacts:
        context = REPO_DIR / artifact["context"]
        dockerfile = context / artifact["docker"]["dockerfile"]
        assert context.is_dir() and dockerfile.is_file(), artifact
        component = artifact["image"].rsplit("/", 1)[1]
        assert dockerfile == REPO_DIR / DOCKERFILES[component]


@pytest.mark.parametrize("component", COMPONENTS)
def test_dockerfiles_are_multi_stage_non_root_with_a_base_argument(component: str) -> None:
    text = (REPO_DIR / DOCKERFILES[component]).read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, re.MULTILINE)
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) >= 2 and stages[-1] == "${BASE_IMAGE}"
    assert re.search(r"^USER 10001", text, re.MULTILINE), "runs as the chart's non-root uid"
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
        assert (REPO_DIR / source).exists(), f"{DOCKERFILES[component]} copies missing {source}"


def test_the_helm_release_points_at_the_chart_and_its_values() -> None:
    (release,) = SKAFFOLD["deploy"]["helm"]["releases"]
    assert (REPO_DIR / release["chartPath"]).resolve() == CHART_DIR
    for values in release["valuesFiles"]:
        assert (REPO_DIR / values).is_file(), values
    templated = release["setValueTemplates"]
    # Each artifact's image reaches the chart: the operator's own, the rest as workload images.
    for name in COMPONENTS:
        assert any(f"localhost_cryptolake_{name}" in value for value in templated.values()), name
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for key in templated:
        node = values
        for part in key.split("."):
            assert part in node, f"{key} is not a chart value"
            node = node[part]


def test_port_forward_reaches_the_api_service_of_the_pipeline() -> None:
    (forward,) = SKAFFOLD["portForward"]
    values = yaml.safe_load(KIND_VALUES.read_text())
    assert forward["resourceName"] == f"{values['pipeline']['name']}-api"
    from cryptolake.operator.builders import API_PORT  # noqa: PLC0415

    assert forward["port"] == API_PORT
    (dev,) = SKAFFOLD["profiles"]
    patched = {patch["path"]: patch["value"] for patch in dev["patches"]}
    assert patched["/deploy/helm/releases/0/setValues"] == {"pipeline.enabled": True}
    # The chart's pipeline, and any the operator handles by default, live in its namespace.
    assert forward["namespace"] == release_namespace()


def release_namespace() -> str:
    (release,) = SKAFFOLD["deploy"]["helm"]["releases"]
    return str(release["namespace"])
