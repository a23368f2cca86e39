"""The chart against a real kube-apiserver (the source-built control plane, or $KUBECONFIG):
the CRDs install the way `make crd-upgrade` does, every values variant's manifests are accepted
by `kubectl apply --dry-run=server`, and `helm install` / `helm uninstall` really run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from cryptolake.stack.helm import CHART_DIR, Tool, helm, kubectl, template_args

CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))


@pytest.fixture(scope="module")
def kube(kube_control_plane: Any) -> Tool:
    return kubectl(kube_control_plane.kubeconfig)


@pytest.fixture(scope="module")
def cluster_helm(kube_control_plane: Any) -> Tool:
    return helm(kube_control_plane.kubeconfig)


@pytest.fixture(scope="module")
def chart_crds(kube: Tool) -> None:
    """The chart's crds/ applied server-side (make crd-upgrade), twice: idempotent."""
    for _ in range(2):
        kube.run("apply", "--server-side", "--force-conflicts", "-f", str(CHART_DIR / "crds"))
    kube.run(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/cryptopipelines.cryptolake.io", "crd/kopfpeerings.kopf.dev",
        "crd/clusterkopfpeerings.kopf.dev",
    )  # fmt: skip


def _wait_for_default_service_account(kube: Tool, namespace: str) -> None:
    """The controller manager gives a new namespace its `default` ServiceAccount a moment
    later; pods (the helm test pod) are admitted only once it exists."""
    deadline = time.monotonic() + 30
    while kube.run("get", "serviceaccount", "default", "-n", namespace, check=False).returncode:
        assert time.monotonic() < deadline, "no default ServiceAccount after 30 s"
        time.sleep(0.2)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_the_api_server_accepts_every_variant(
    cluster_helm: Tool, kube: Tool, chart_crds: None, kube_namespace: str, values: Path
) -> None:
    # Namespaced variants bind in namespaces that must exist: this test's own.
    overrides = (f"operator.watchNamespaces={{{kube_namespace}}}",)
    if "watchNamespaces" not in values.read_text():
        overrides = ()
    manifests = cluster_helm.run(
        "template", "cl", str(CHART_DIR), "--namespace", kube_namespace,
        *template_args((values,), overrides),
    ).stdout  # fmt: skip
    _wait_for_default_service_account(kube, kube_namespace)
    done = kube.run("apply", "--dry-run=server", "-n", kube_namespace, "-f", "-", stdin=manifests)
    applied = [line for line in done.stdout.splitlines() if line.strip()]
    assert applied and all("(server dry run)" in line for line in applied), done.stdout
    assert any(line.startswith("deployment.apps/cl-cryptolake-operator") for line in applied)


def _objects(kube: Tool, kind: str, namespace: str, selector: str) -> list[str]:
    listed = kube.run("get", kind, "-n", namespace, "-l", selector, "-o", "json").stdout
    return sorted(item["metadata"]["name"] for item in json.loads(listed)["items"])


def test_install_then_uninstall_leaves_nothing(
    cluster_helm: Tool, kube: Tool, chart_crds: None, kube_namespace: str
) -> None:
    release = "r" + kube_namespace.removeprefix("test-")
    selector = f"app.kubernetes.io/instance={release}"
    installed = cluster_helm.run(
        "install", release, str(CHART_DIR), "--namespace", kube_namespace,
        "--set", "pipeline.enabled=true", "--set", "grafana.enabled=true",
        "--set", "pipeline.apiNodePort.enabled=true",
        "--set", "pipeline.apiNodePort.allowUnauthenticated=true",
        "--set", f"pipeline.apiNodePort.nodePort={30000 + hash(release) % 2000}",
    )  # fmt: skip
    notes = installed.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {kube_namespace} wait --for=condition=Ready cpl/minimal" in notes
    assert f"rollout status deploy/{release}-cryptolake-operator" in notes
    assert "make crd-upgrade" in notes

    assert _objects(kube, "deployments", kube_namespace, selector) == [
        f"{release}-cryptolake-grafana", f"{release}-cryptolake-operator",
    ]  # fmt: skip
    assert _objects(kube, "cryptopipelines", kube_namespace, selector) == ["minimal"]
    assert _objects(kube, "clusterroles", kube_namespace, selector) == [
        f"{release}-cryptolake-operator", f"{release}-cryptolake-operator-cluster",
    ]  # fmt: skip
    # Upgrading keeps the generated Grafana password (lookup of the existing Secret).
    password = kube.run(
        "get", "secret", f"{release}-cryptolake-grafana", "-n", kube_namespace,
        "-o", "jsonpath={.data.admin-password}",
    ).stdout  # fmt: skip
    cluster_helm.run(
        "upgrade", release, str(CHART_DIR), "--namespace", kube_namespace, "--reuse-values"
    )
    again = kube.run(
        "get", "secret", f"{release}-cryptolake-grafana", "-n", kube_namespace,
        "-o", "jsonpath={.data.admin-password}",
    ).stdout  # fmt: skip
    assert password and again == password

    cluster_helm.run("uninstall", release, "--namespace", kube_namespace, "--wait")
    for kind in ("all", "configmaps", "secrets", "cryptopipelines", "serviceaccounts"):
        assert _objects(kube, kind, kube_namespace, selector) == [], kind
    assert _objects(kube, "clusterroles,clusterrolebindings", kube_namespace, selector) == []
    # crds/ stay (Helm never deletes them), as its docs promise.
    kube.run("get", "crd", "cryptopipelines.cryptolake.io")


def test_a_bad_pipeline_spec_is_rejected_by_the_api_server(
    cluster_helm: Tool, chart_crds: None, kube_namespace: str
) -> None:
    """The values schema leaves pipeline.spec to the CRD: the API server names the field."""
    done = cluster_helm.run(
        "install", "bad", str(CHART_DIR), "--namespace", kube_namespace,
        "--set", "pipeline.enabled=true", "--set", "pipeline.spec.sources[0].exchange=nasdaq",
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "spec.sources[0].exchange" in done.stderr and "nasdaq" in done.stderr, done.stderr
