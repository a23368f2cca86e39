"""The operator's command line accepts what its manifests pass it (k8s/ and the chart)."""

from __future__ import annotations

import pytest
import yaml

from cryptolake.operator.cli import build_parser
from cryptolake.stack.helm import CHART_DIR, REPO_DIR, render


def _operator_args(docs: list[dict]) -> list[str]:
    (deployment,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return [str(arg) for arg in container["args"]]


def test_the_kustomize_deployment_args_parse() -> None:
    docs = list(yaml.safe_load_all((REPO_DIR / "k8s/operator/deployment.yaml").read_text()))
    args = build_parser().parse_args(_operator_args(docs))
    assert args.all_namespaces and args.peering == "cryptolake-operator"
    assert args.log_format == "json"


@pytest.mark.parametrize("values", sorted((CHART_DIR / "ci").glob("*-values.yaml")), ids=str)
def test_the_chart_deployment_args_parse(values) -> None:
    args = build_parser().parse_args(_operator_args(render(values)))
    assert args.command == "run" and args.liveness.endswith("/healthz")
    assert args.standalone != bool(args.peering)


def test_peering_and_standalone_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--standalone", "--peering", "x"])
