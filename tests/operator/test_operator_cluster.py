"""The operator (kopf's KopfRunner, in-process) against a real API server: children appear
with owners and labels, spec changes follow, suspend scales to zero, drift is repaired, and
deleting the pipeline lets the garbage collector take the children."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

WORKLOADS = ("producer", "bronze-driver", "silver-driver", "gold-driver", "api")


@pytest.fixture
def operator(
    kube_control_plane: Any,
    crd_installed: Any,
    kube_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(kube_control_plane.kubeconfig))
    monkeypatch.setenv("CRYPTOLAKE_OPERATOR_METRICS_PORT", "0")
    args = ["run", "--standalone", "--namespace", kube_namespace, "-m",
            "cryptolake.operator.handlers", "--verbose"]  # fmt: skip
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


def deployments(kube_api: client.ApiClient, namespace: str) -> dict[str, Any]:
    items = client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
    return {d.metadata.name: d for d in items}


def test_children_follow_the_pipeline(
    operator: KopfRunner,
    pipelines: Any,
    kube_api: client.ApiClient,
    load_sample: Callable[[str], dict[str, Any]],
    eventually: Callable[..., Any],
) -> None:
    ns = pipelines.namespace
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    started = time.monotonic()
    created = pipelines.create(load_sample("minimal"))
    uid = created["metadata"]["uid"]

    def all_children() -> bool:
        names = set(deployments(kube_api, ns))
        return {f"minimal-{w}" for w in WORKLOADS} <= names and bool(
            apps.list_namespaced_stateful_set(ns).items
        )

    eventually(all_children, 10, "every child")
    children_s = time.monotonic() - started
    for deployment in deployments(kube_api, ns).values():
        (owner,) = deployment.metadata.owner_references
        assert (owner.kind, owner.uid) == ("CryptoPipeline", uid)
        assert deployment.metadata.labels["app.kubernetes.io/instance"] == "minimal"
    assert core.read_namespaced_secret("minimal-s3-credentials", ns).data["accessKey"]

    # No node runs pods here: the status must say so, not claim health.
    status = eventually(lambda: pipelines.get("minimal").get("status", {}).get("phase"), 15,
                        "a phase")  # fmt: skip
    assert status == "Provisioning"
    ready = next(
        c for c in pipelines.get("minimal")["status"]["conditions"] if c["type"] == "Ready"
    )
    assert ready["status"] == "False"

    # A spec change: observedGeneration follows and the workloads scale to zero.
    changed_at = time.monotonic()
    generation = pipelines.patch("minimal", {"spec": {"suspend": True}})["metadata"]["generation"]
    eventually(
        lambda: pipelines.get("minimal")["status"].get("observedGeneration") == generation,
        10, "observedGeneration",
    )  # fmt: skip
    generation_s = time.monotonic() - changed_at
    assert all(d.spec.replicas == 0 for d in deployments(kube_api, ns).values())
    assert pipelines.get("minimal")["status"]["phase"] == "Suspended"

    # Drift: a deleted child comes back.
    core.delete_namespaced_config_map("minimal-config", ns)
    eventually(lambda: core.read_namespaced_config_map("minimal-config", ns), 15, "ConfigMap back")

    # Delete: garbage collection (kube-controller-manager) removes the children.
    pipelines.delete("minimal")
    eventually(lambda: not deployments(kube_api, ns), 90, "children garbage-collected")
    print(f"children_s={children_s:.2f} generation_s={generation_s:.2f}")


def test_a_crash_looping_driver_turns_processing_false(
    operator: KopfRunner,
    pipelines: Any,
    kube_api: client.ApiClient,
    load_sample: Callable[[str], dict[str, Any]],
    eventually: Callable[..., Any],
) -> None:
    ns = pipelines.namespace
    core = client.CoreV1Api(kube_api)
    pipelines.create(load_sample("minimal"))
    eventually(lambda: "minimal-silver-driver" in deployments(kube_api, ns), 10, "the driver")
    # No kubelet runs here: a pod of the driver is made to report what a kubelet would.
    labels = {
        "app.kubernetes.io/instance": "minimal",
        "app.kubernetes.io/component": "silver-driver",
    }
    pod = {
        "metadata": {"name": "minimal-silver-driver-x1", "labels": labels},
        "spec": {"containers": [{"name": "driver", "image": "jobs"}]},
    }
    # Pod admission needs the namespace's default service account (made by a controller).
    eventually(lambda: core.read_namespaced_service_account("default", ns), 15, "default SA")
    core.create_namespaced_pod(ns, pod)
    waiting = {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
    status = {"containerStatuses": [{
        "name": "driver", "ready": False, "restartCount": 4, "image": "jobs", "imageID": "",
        "state": {"waiting": waiting},
    }]}  # fmt: skip
    reported = time.monotonic()
    core.patch_namespaced_pod_status("minimal-silver-driver-x1", ns, {"status": status})

    def processing() -> dict[str, Any] | None:
        conditions = pipelines.get("minimal").get("status", {}).get("conditions", [])
        found = next((c for c in conditions if c["type"] == "ProcessingReady"), None)
        return found if found and found["reason"] == "Failing" else None

    condition = eventually(processing, 10, "ProcessingReady False (Failing)")
    assert condition["status"] == "False"
    assert "silver-driver: CrashLoopBackOff" in condition["message"]
    assert time.monotonic() - reported <= 10
    assert pipelines.get("minimal")["status"]["phase"] == "Degraded"
