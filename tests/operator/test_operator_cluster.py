"""The operator (kopf's KopfRunner, in-process) against a real API server: children appear
with owners and labels, spec changes follow, suspend scales to zero, drift is repaired, and
deleting the pipeline lets the garbage collector take the children."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from kopf.testing import KopfRunner
from kubernetes import client

from cryptolake.operator.pki import issue, make_ca
from cryptolake.operator.services import TOPICS
from cryptolake.stack.kafka import free_port
from cryptolake.stack.minio import s3_client

WORKLOADS = ("producer", "ingest", "refine", "api")


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


@pytest.fixture
def s3_secret(kube_api: client.ApiClient, kube_namespace: str, minio_server: Any) -> str:
    """A Secret named ``s3`` with the session MinIO's keys, for external-storage pipelines."""
    client.CoreV1Api(kube_api).create_namespaced_secret(kube_namespace, {
        "metadata": {"name": "s3"},
        "stringData": {"accessKey": minio_server.access_key, "secretKey": minio_server.secret_key},
    })  # fmt: skip
    return "s3"


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
    pipelines.patch("minimal", {"spec": {"suspend": False}})
    eventually(
        lambda: all(d.spec.replicas == 1 for d in deployments(kube_api, ns).values()),
        10, "resumed workloads",
    )  # fmt: skip

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
    eventually(lambda: "minimal-refine" in deployments(kube_api, ns), 10, "the driver")
    # No kubelet runs here: a pod of the driver is made to report what a kubelet would.
    labels = {
        "app.kubernetes.io/instance": "minimal",
        "app.kubernetes.io/component": "refine",
    }
    pod = {
        "metadata": {"name": "minimal-refine-x1", "labels": labels},
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
    core.patch_namespaced_pod_status("minimal-refine-x1", ns, {"status": status})

    def processing() -> dict[str, Any] | None:
        conditions = pipelines.get("minimal").get("status", {}).get("conditions", [])
        found = next((c for c in conditions if c["type"] == "ProcessingReady"), None)
        return found if found and found["reason"] == "Failing" else None

    condition = eventually(processing, 10, "ProcessingReady False (Failing)")
    assert condition["status"] == "False"
    assert "refine: CrashLoopBackOff" in condition["message"]
    assert time.monotonic() - reported <= 10
    assert pipelines.get("minimal")["status"]["phase"] == "Degraded"


def test_topics_and_bucket_follow_the_spec_and_an_outage_degrades(
    operator: KopfRunner,
    pipelines: Any,
    kube_api: client.ApiClient,
    kafka_broker: Any,
    minio_server: Any,
    s3_secret: str,
    eventually: Callable[..., Any],
) -> None:
    """External broker and S3 (the session's real Kafka and MinIO): the operator creates the
    topics and the bucket to the spec; a broker it cannot reach turns BrokerReady False with
    the reason, and fixing the spec brings it back."""
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    spec = {
        "sources": [{"exchange": "simulator", "symbols": ["BTC-USDT"]}],
        "broker": {"engine": "external", "bootstrapServers": kafka_broker.bootstrap_servers,
                   "tls": False, "topic": {"partitions": 4, "retentionHours": 24}},
        "storage": {"engine": "external", "endpoint": minio_server.endpoint,
                    "credentialsSecret": s3_secret, "bucket": bucket},
    }  # fmt: skip
    pipelines.create({"apiVersion": "cryptolake.io/v1alpha1", "kind": "CryptoPipeline",
                      "metadata": {"name": "ext"}, "spec": spec})  # fmt: skip
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})

    def settings(topic: str) -> tuple[str, str]:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        config = admin.describe_configs([resource])[resource].result(timeout=10)
        return config["retention.ms"].value, config["message.timestamp.type"].value

    def topics_ready() -> bool:
        # A topic that existed before (the session's broker: the producer tests create the
        # markets topic) gets its partitions first, its settings a moment later.
        found = admin.list_topics(timeout=5).topics
        return all(t in found and len(found[t].partitions) >= 4 for t in TOPICS) and all(
            settings(t) == (str(24 * 3_600_000), "LogAppendTime") for t in TOPICS
        )

    eventually(topics_ready, 15, "topics with 4 partitions, 24 h retention, broker time")
    s3 = s3_client(minio_server.endpoint, minio_server.access_key, minio_server.secret_key)
    eventually(lambda: bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}, 15, "bucket")

    def broker_condition() -> dict[str, Any]:
        conditions = pipelines.get("ext").get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "BrokerReady"), {})

    eventually(lambda: broker_condition().get("status") == "True", 15, "BrokerReady True")
    closed = f"127.0.0.1:{free_port()}"
    pipelines.patch("ext", {"spec": {"broker": {"bootstrapServers": closed}}})
    eventually(lambda: broker_condition().get("reason") == "Unreachable", 20, "Unreachable")
    assert closed in broker_condition()["message"]
    assert pipelines.get("ext")["status"]["phase"] == "Degraded"
    pipelines.patch(
        "ext", {"spec": {"broker": {"bootstrapServers": kafka_broker.bootstrap_servers}}}
    )
    eventually(lambda: broker_condition().get("status") == "True", 20, "BrokerReady again")


def test_retain_policy_decides_what_happens_to_the_volumes(
    operator: KopfRunner,
    pipelines: Any,
    kube_api: client.ApiClient,
    load_sample: Callable[[str], dict[str, Any]],
    eventually: Callable[..., Any],
) -> None:
    ns = pipelines.namespace
    core = client.CoreV1Api(kube_api)
    for name, policy in (("keep", "Retain"), ("drop", "Delete")):
        resource = load_sample("minimal")
        resource["metadata"]["name"] = name
        resource["spec"]["storage"]["retainPolicy"] = policy
        pipelines.create(resource)

    def claims(instance: str) -> list[Any]:
        selector = f"app.kubernetes.io/instance={instance}"
        return core.list_namespaced_persistent_volume_claim(ns, label_selector=selector).items

    # The StatefulSet controller makes one claim for the broker and one for MinIO.
    for name in ("keep", "drop"):
        eventually(lambda name=name: len(claims(name)) == 2, 30, f"{name}'s volume claims")
    pipelines.delete("keep")
    pipelines.delete("drop")
    eventually(
        lambda: all(c.metadata.deletion_timestamp for c in claims("drop")),
        15,
        "drop's claims deleted",
    )
    time.sleep(2)
    assert [c.metadata.deletion_timestamp for c in claims("keep")] == [None, None]


def test_delete_on_a_shared_external_bucket_removes_only_the_pipelines_prefix(
    operator: KopfRunner,
    pipelines: Any,
    kube_api: client.ApiClient,
    minio_server: Any,
    s3_secret: str,
    eventually: Callable[..., Any],
) -> None:
    ns = pipelines.namespace
    bucket = f"shared-{uuid.uuid4().hex[:8]}"
    s3 = s3_client(minio_server.endpoint, minio_server.access_key, minio_server.secret_key)
    s3.create_bucket(Bucket=bucket)
    others = ["team-b/gold/candles_1m/part-0.parquet", "team-a-old/x", "README"]
    ours = ["team-a/gold/candles_1m/part-0.parquet", "team-a/_checkpoints/refine/offsets/0"]
    for key in others + ours:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    spec = {
        "sources": [{"exchange": "simulator", "symbols": ["BTC-USDT"]}],
        "storage": {"engine": "external", "endpoint": minio_server.endpoint,
                    "credentialsSecret": s3_secret, "bucket": bucket, "prefix": "team-a",
                    "retainPolicy": "Delete"},
    }  # fmt: skip
    pipelines.create({"apiVersion": "cryptolake.io/v1alpha1", "kind": "CryptoPipeline",
                      "metadata": {"name": "shared"}, "spec": spec})  # fmt: skip
    config = client.CoreV1Api(kube_api).read_namespaced_config_map
    eventually(lambda: config("shared-config", ns).data["CRYPTOLAKE_TABLE_ROOT"]
               == f"s3a://{bucket}/team-a", 20, "the table root under the prefix")  # fmt: skip
    pipelines.delete("shared")

    def gone() -> bool:
        try:
            pipelines.get("shared")
        except client.exceptions.ApiException as error:
            return error.status == 404
        return False

    eventually(gone, 30, "the pipeline deleted (finalizer done)")
    left = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert left == sorted(others)


def test_an_idle_operator_stays_alive(
    kube_control_plane: Any, crd_installed: Any, kube_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No pipeline to reconcile is no reason to fail liveness (it restarted idle operators in
    a loop): /healthz answers 200 while kopf's event loop runs."""
    monkeypatch.setenv("KUBECONFIG", str(kube_control_plane.kubeconfig))
    monkeypatch.setenv("CRYPTOLAKE_OPERATOR_METRICS_PORT", "0")
    monkeypatch.setenv("CRYPTOLAKE_OPERATOR_LIVENESS_STALE_S", "1")  # what the old probe used
    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    args = ["run", "--standalone", "--namespace", kube_namespace, "-m",
            "cryptolake.operator.handlers", "--liveness", liveness]  # fmt: skip
    with KopfRunner(args, timeout=60) as runner:
        time.sleep(4)
        with urllib.request.urlopen(liveness, timeout=5) as answer:
            assert answer.status == 200
            assert "last_reconcile_age_s" in json.loads(answer.read())
    assert runner.exception is None, runner.output


def test_the_pipeline_ca_is_made_once_and_an_older_kafka_secrets_ca_is_kept(
    operator: KopfRunner,
    pipelines: Any,
    kube_api: client.ApiClient,
    load_sample: Callable[[str], dict[str, Any]],
    eventually: Callable[..., Any],
) -> None:
    """An operator before the <name>-ca Secret kept the CA in <name>-kafka-auth: a pipeline
    upgraded in place keeps that CA (the broker's certificate stays valid for its clients),
    and MinIO's new certificate is signed by it."""
    ns, core = pipelines.namespace, client.CoreV1Api(kube_api)
    older = make_ca("an older operator's CA")
    server = issue(older, "minimal-broker", ["minimal-broker"])
    core.create_namespaced_secret(ns, {"metadata": {"name": "minimal-kafka-auth"}, "stringData": {
        "ca.crt": older.certificate, "ca.key": older.key, "tls.crt": server.certificate,
        "tls.key": server.key, "admin": "a", "producer": "p", "jobs": "j"}})  # fmt: skip
    pipelines.create(load_sample("minimal"))

    def text(name: str, key: str) -> str:
        return base64.b64decode(core.read_namespaced_secret(name, ns).data[key]).decode()

    eventually(lambda: text("minimal-minio-tls", "tls.crt"), 20, "MinIO's certificate")
    assert text("minimal-ca", "ca.crt") == older.certificate
    assert text("minimal-minio-tls", "tls.crt").endswith(older.certificate)
    assert text("minimal-kafka-auth", "tls.crt") == server.certificate  # kept as it was
