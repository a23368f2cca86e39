"""The chart's rendering, values schema and the choices that matter (security, RBAC, labels,
probes), checked over `helm template` output: helm-unittest's assertions, in Python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cryptolake.stack.helm import CHART_DIR as CHART
from cryptolake.stack.helm import REPO_DIR as REPO
from cryptolake.stack.helm import CommandFailed, Tool, render

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{len(found)} {kind} named *{name_suffix}"
    return found[0]


STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)


def test_ci_values_exist_for_each_variant() -> None:
    names = {path.name for path in CI_VALUES}
    assert {"default-values.yaml", "kind-values.yaml", "namespaced-values.yaml"} <= names


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_lint_is_clean_in_strict_mode(helm: Tool, values: Path) -> None:
    done = helm.run("lint", "--strict", str(CHART), "--values", str(values))
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout, done.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_every_resource_carries_the_standard_labels(values: Path) -> None:
    for doc in render(values):
        if doc["kind"] == "CustomResourceDefinition":
            continue  # crds/ are installed verbatim, never templated
        labels = doc["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_workloads_select_their_own_pods_and_run_hardened(values: Path) -> None:
    docs = render(values)
    pods = [(d["metadata"]["name"], d["spec"]["template"]) for d in of_kind(docs, "Deployment")]
    pods += [(d["metadata"]["name"], d) for d in of_kind(docs, "Pod")]
    for doc in of_kind(docs, "Deployment"):
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), doc["metadata"]["name"]
    for name, pod in pods:
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name


def test_operator_deployment() -> None:
    deployment = one(render(), "Deployment", "-operator")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "localhost/cryptolake/operator:0.1.0"
    assert container["args"] == [
        "run", "--namespace=cryptolake-system", "--standalone", "--log-format=json",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]  # fmt: skip
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["CRYPTOLAKE_OPERATOR_METRICS_PORT"] == "9402"
    assert env["CRYPTOLAKE_OPERATOR_JOBS_IMAGE"] == "localhost/cryptolake/jobs:0.1.0"
    # One replica without peering must never overlap a second one during a rollout.
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert pod["serviceAccountName"] == "cryptolake-operator"


def test_workload_image_values_reach_the_operator_settings() -> None:
    """Each workloadImages key is an OperatorSettings field (CRYPTOLAKE_OPERATOR_<KEY>_IMAGE)."""
    from cryptolake.operator.settings import OperatorSettings  # noqa: PLC0415

    container = one(render(), "Deployment", "-operator")["spec"]["template"]["spec"]
    names = {item["name"] for item in container["containers"][0]["env"]}
    fields = {f"CRYPTOLAKE_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    image_env = {name for name in names if name.endswith("_IMAGE")}
    assert image_env and image_env <= fields
    assert {name for name in fields if name.endswith("_IMAGE")} == image_env


def _rules(docs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples of every ClusterRole."""
    return sorted(
        (group, resource, verb)
        for role in of_kind(docs, "ClusterRole")
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    )


def test_rbac_equals_the_kustomize_manifests() -> None:
    """The chart splits k8s/operator/rbac.yaml's ClusterRole in two; together they grant
    exactly the same (apiGroup, resource, verb) triples."""
    kustomize = list(yaml.safe_load_all((REPO / "k8s" / "operator" / "rbac.yaml").read_text()))
    assert _rules(render()) == _rules(kustomize)


def test_rbac_is_least_privilege() -> None:
    rules = _rules(render())
    assert not [rule for rule in rules if "*" in rule], "no wildcards"
    assert ("", "secrets", "delete") not in rules
    assert ("", "secrets", "get") in rules  # the operator reads the MinIO credentials back
    assert ("", "secrets", "list") not in rules  # …one Secret by name, never all of them
    assert not [r for r in rules if r[1] in {"nodes", "clusterroles", "clusterrolebindings"}]


def test_by_default_the_operator_is_bound_in_its_own_namespace_only() -> None:
    docs = render()
    (binding,) = of_kind(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "cryptolake-system"
    cluster_bindings = [b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")]
    assert cluster_bindings == ["cryptolake-operator-cluster"]
    wide = render(set_values=("operator.clusterWide=true",))
    assert not of_kind(wide, "RoleBinding")
    args = one(wide, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    assert "--all-namespaces" in args["args"]


def test_watching_namespaces_binds_per_namespace_and_peers() -> None:
    docs = render(CHART / "ci" / "namespaced-values.yaml")
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["cryptolake-a", "cryptolake-b"]
    cluster_bindings = [b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")]
    # Only the cluster-scoped reads are bound cluster-wide.
    assert cluster_bindings == ["cryptolake-operator-cluster"]
    peerings = of_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["cryptolake-a", "cryptolake-b"]
    deployment = one(docs, "Deployment", "-operator")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=cryptolake-a" in args and "--namespace=cryptolake-b" in args
    assert "--peering=cryptolake-operator" in args and "--all-namespaces" not in args
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_crds_are_the_operator_files() -> None:
    """crds/ holds the very CRD the operator generates (k8s/crd) and kopf's peering CRDs of
    k8s/operator/peering.yaml."""
    generated = REPO / "k8s" / "crd" / "cryptopipelines.cryptolake.io.yaml"
    assert (CHART / "crds" / generated.name).read_text() == generated.read_text(), (
        "charts/cryptolake/crds is stale: run `make crd`"
    )
    peering = [
        doc
        for doc in yaml.safe_load_all((REPO / "k8s" / "operator" / "peering.yaml").read_text())
        if doc["kind"] == "CustomResourceDefinition"
    ]
    chart = list(yaml.safe_load_all((CHART / "crds" / "kopf-peerings.yaml").read_text()))
    assert chart == peering


def test_the_default_pipeline_is_the_minimal_sample() -> None:
    sample = yaml.safe_load((REPO / "k8s" / "samples" / "minimal.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["pipeline"]["spec"] == sample["spec"]
    assert values["pipeline"]["name"] == sample["metadata"]["name"]


def test_pipeline_and_api_node_port() -> None:
    assert not of_kind(render(), "CryptoPipeline")
    docs = render(CHART / "ci" / "pipeline-values.yaml")
    pipeline = one(docs, "CryptoPipeline")
    assert pipeline["metadata"]["name"] == "markets"
    assert pipeline["spec"]["broker"]["engine"] == "redpanda"
    kind = render(CHART / "ci" / "kind-values.yaml")
    service = one(kind, "Service", "minimal-api-nodeport")
    assert service["spec"]["ports"][0]["nodePort"] == 30080
    # The operator's API pods carry these labels (operator/builders.py).
    from cryptolake.operator.builders import Pipeline, build_api  # noqa: PLC0415
    from cryptolake.operator.models import CryptoPipelineSpec  # noqa: PLC0415

    spec = CryptoPipelineSpec.model_validate(yaml.safe_load((CHART / "values.yaml").read_text())[
        "pipeline"]["spec"])  # fmt: skip
    api_pod = build_api(Pipeline("minimal", "default", "uid", spec))[0]["spec"]["template"]
    assert service["spec"]["selector"].items() <= api_pod["metadata"]["labels"].items()


def test_monitors_render_only_where_the_prometheus_operator_is() -> None:
    values = CHART / "ci" / "monitoring-values.yaml"
    assert not of_kind(render(values), "ServiceMonitor")
    docs = render(values, api_versions=("monitoring.coreos.com/v1",))
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pods = one(docs, "PodMonitor")
    assert {e["port"] for e in pods["spec"]["podMetricsEndpoints"]} == {"http", "metrics"}


# --- values.schema.json ------------------------------------------------------------------------


def _schema_nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, node)]
    for name, child in node.get("properties", {}).items():
        nodes += _schema_nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        nodes += _schema_nodes(node["items"], f"{path}[]")
    return nodes


def test_schema_describes_and_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    free_form = {".pipeline.spec"}  # checked by the API server against the CRD
    for path, node in _schema_nodes(schema):
        assert node.get("description"), f"{path or '(root)'} has no description"
        if node.get("type") == "object" and "properties" in node and path not in free_form:
            assert node.get("additionalProperties") is False, f"{path} is open"


def test_values_yaml_keys_are_all_in_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            child = node.get("properties", {}).get(key)
            assert child is not None, f"{path}.{key} is not in values.schema.json"
            if isinstance(value, dict) and "properties" in child:
                walk(value, child, f"{path}.{key}")

    walk(yaml.safe_load((CHART / "values.yaml").read_text()), schema, "")


INVALID_VALUES = [
    # (--set value, what the error must name)
    ("operator.replicaCount=0", "/operator/replicaCount"),
    ("operator.logFormat=xml", "/operator/logFormat"),
    ("operator.image.pullPolicy=Sometimes", "/operator/image/pullPolicy"),
    ("operator.watchNamespaces[0]=Bad_Name", "/operator/watchNamespaces/0"),
    ("operator.metricsPort=80", "/operator/metricsPort"),
    ("operator.resources.limits.memory=lots", "/operator/resources/limits/memory"),
    ("operator.surprise=1", "'surprise' not allowed"),
    ("unknownTopLevel=1", "'unknownTopLevel' not allowed"),
    ("serviceAccount.create=yes", "/serviceAccount/create"),
    ("pipeline.name=Not_A_Name", "/pipeline/name"),
    ("pipeline.apiNodePort.nodePort=8080", "/pipeline/apiNodePort/nodePort"),
    ("grafana.service.type=Ingress", "/grafana/service/type"),
    ("datasources.prometheus.url=prometheus:9090", "/datasources/prometheus/url"),
    ("serviceMonitor.interval=often", "/serviceMonitor/interval"),
]


@pytest.mark.parametrize(("value", "named"), INVALID_VALUES, ids=[v for v, _ in INVALID_VALUES])
def test_invalid_values_fail_naming_the_key(helm: Tool, value: str, named: str) -> None:
    done = helm.run("template", "x", str(CHART), "--set", value, check=False)
    assert done.returncode != 0, f"{value} was accepted"
    assert "values don't meet the specifications of the schema" in done.stderr
    assert named in done.stderr, done.stderr


def test_a_missing_required_pipeline_spec_is_rejected(helm: Tool, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    # null deletes a default key in Helm's merge: the spec without its sources.
    values.write_text("pipeline:\n  enabled: true\n  spec:\n    sources: null\n")
    done = helm.run("template", "x", str(CHART), "--values", str(values), check=False)
    assert done.returncode != 0 and "/pipeline/spec" in done.stderr, done.stderr


def test_a_node_port_without_api_keys_needs_an_explicit_yes() -> None:
    with pytest.raises(CommandFailed, match="exposes the pipeline's API on every node"):
        render(set_values=("pipeline.apiNodePort.enabled=true",))
    keyed = render(set_values=("pipeline.apiNodePort.enabled=true", "pipeline.enabled=true",
                               "pipeline.spec.api.authSecret=api-keys"))  # fmt: skip
    assert one(keyed, "Service", "-api-nodeport")["spec"]["type"] == "NodePort"
    dev = render(set_values=("pipeline.apiNodePort.enabled=true",
                             "pipeline.apiNodePort.allowUnauthenticated=true"))  # fmt: skip
    assert one(dev, "Service", "-api-nodeport")
