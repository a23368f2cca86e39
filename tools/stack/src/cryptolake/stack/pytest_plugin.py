"""Pytest fixtures for real services: one Kafka broker, one MinIO server and one Kubernetes
control plane per test session; fresh topics, buckets and namespaces per test.

Registered by the repository's root ``conftest.py``. Tests that use a service fixture are
marked ``integration`` automatically, so ``-m "not integration"`` runs the pure tests alone.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cryptolake.stack.kafka import KafkaBroker, KafkaBrokerConfig, free_port
from cryptolake.stack.kube import ControlPlane, ControlPlaneConfig
from cryptolake.stack.minio import MinioServer, MinioServerConfig, ensure_bucket

SERVICE_FIXTURES = {
    "kafka_broker",
    "kafka_topics",
    "minio_server",
    "s3_bucket",
    "kube_control_plane",
    "kube_namespace",
    "cluster",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--keep-cluster",
        action="store_true",
        help="e2e: leave the cluster the `cluster` fixture started running (reuse it next time)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real single-node KRaft broker on free loopback ports, started once per session."""
    config = KafkaBrokerConfig(
        data_dir=tmp_path_factory.mktemp("kafka"),
        port=free_port(),
        controller_port=free_port(),
        heap="384m",
        num_partitions=3,
    )
    broker = KafkaBroker(config)
    broker.start()
    yield broker
    broker.stop()


@dataclass(frozen=True)
class TopicNames:
    bootstrap_servers: str
    trades: str
    dlq: str


@pytest.fixture
def kafka_topics(kafka_broker: KafkaBroker) -> TopicNames:
    """Topic names no other test uses (the code under test creates them)."""
    suffix = uuid.uuid4().hex[:8]
    return TopicNames(kafka_broker.bootstrap_servers, f"test.{suffix}.trades", f"test.{suffix}.dlq")


@pytest.fixture(scope="session")
def minio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """A real single-node MinIO on a free loopback port, started once per session."""
    server = MinioServer(
        MinioServerConfig(data_dir=tmp_path_factory.mktemp("minio"), port=free_port())
    )
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str
    access_key: str
    secret_key: str
    name: str

    @property
    def s3a_root(self) -> str:
        """The bucket as a Hadoop S3A path prefix (``s3a://name/``), for Spark."""
        return f"s3a://{self.name}/"


@pytest.fixture
def s3_bucket(minio_server: MinioServer) -> S3Bucket:
    """A bucket no other test uses, created (S3 bucket names: lower case, 3-63 characters)."""
    bucket = S3Bucket(
        minio_server.endpoint,
        minio_server.access_key,
        minio_server.secret_key,
        f"test-{uuid.uuid4().hex[:12]}",
    )
    ensure_bucket(bucket.endpoint, bucket.access_key, bucket.secret_key, bucket.name)
    return bucket


@dataclass(frozen=True)
class KubeCluster:
    """How to reach a Kubernetes API server: its kubeconfig (for kopf, kubectl, the official
    client) and, read from it, what a raw REST client needs."""

    kubeconfig: Path
    server: str
    token: str | None
    ssl_context: ssl.SSLContext

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client on the API server (``client.get("/api/v1/namespaces")``)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(
            base_url=self.server, headers=headers, verify=self.ssl_context, timeout=30, **kwargs
        )


def read_kubeconfig(path: Path) -> KubeCluster:
    """The current context of a kubeconfig: server, CA (or insecure-skip-tls-verify), and a
    bearer token or client certificate. Exec plugins and auth providers are not supported."""
    config = yaml.safe_load(path.read_text())
    context = _named(config, "contexts", config["current-context"])["context"]
    cluster = _named(config, "clusters", context["cluster"])["cluster"]
    user = _named(config, "users", context["user"]).get("user") or {}
    base = path.parent
    if cluster.get("insecure-skip-tls-verify"):
        context_ssl = ssl.create_default_context()
        context_ssl.check_hostname = False
        context_ssl.verify_mode = ssl.CERT_NONE
    elif "certificate-authority-data" in cluster:
        ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        context_ssl = ssl.create_default_context(cadata=ca_pem)
    elif "certificate-authority" in cluster:
        ca_file = base / cluster["certificate-authority"]
        context_ssl = ssl.create_default_context(cafile=str(ca_file))
    else:
        context_ssl = ssl.create_default_context()
    cert = _pem_file(user, "client-certificate", base)
    key = _pem_file(user, "client-key", base)
    if cert is not None:
        context_ssl.load_cert_chain(cert, key)
    return KubeCluster(path, cluster["server"], user.get("token"), context_ssl)


def _named(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for entry in config.get(section) or ():
        if entry["name"] == name:
            return dict(entry)
    raise LookupError(f"kubeconfig has no {section[:-1]} named {name!r}")


def _pem_file(user: dict[str, Any], key: str, base: Path) -> str | None:
    """``key`` (a path) or ``key-data`` (base64 PEM, written to a private temporary file)."""
    if key in user:
        return str(base / user[key])
    if f"{key}-data" not in user:
        return None
    handle, name = tempfile.mkstemp(suffix=".pem")
    with os.fdopen(handle, "wb") as pem:
        pem.write(base64.b64decode(user[f"{key}-data"]))
    return name


@pytest.fixture(scope="session")
def kube_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A Kubernetes API server for the session: ``$KUBECONFIG`` (its current context) if set,
    else etcd + kube-apiserver + kube-controller-manager built from source, on free loopback
    ports (no node: objects, admission, RBAC, garbage collection — no pods running)."""
    if os.environ.get("KUBECONFIG"):
        yield read_kubeconfig(Path(os.environ["KUBECONFIG"]))
        return
    control_plane = ControlPlane(
        ControlPlaneConfig(
            data_dir=tmp_path_factory.mktemp("kube"),
            apiserver_port=free_port(),
            etcd_client_port=free_port(),
            etcd_peer_port=free_port(),
            controller_manager_port=free_port(),
        )
    )
    control_plane.start()
    yield read_kubeconfig(control_plane.kubeconfig)
    control_plane.stop()


@pytest.fixture
def kube_namespace(kube_control_plane: KubeCluster) -> Iterator[str]:
    """A namespace no other test uses, created; deleted afterwards (without waiting for its
    contents to go)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    with kube_control_plane.client() as client:
        client.post(
            "/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        ).raise_for_status()
        yield name
        deleted = client.delete(f"/api/v1/namespaces/{name}")
        if deleted.status_code != 404:
            deleted.raise_for_status()


# --- a cluster that runs pods (the e2e tier) -----------------------------------------------


def _docker_answers() -> bool:
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    if shutil.which("docker") is None or shutil.which("kind") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[KubeCluster]:
    """A Kubernetes cluster that runs the project's pods, in this order: the one ``$KUBECONFIG``
    names (its images must be there); kind where a Docker engine answers (kind-config.yaml, the
    images built with docker and loaded with ``kind load``); else the local cluster of
    ``make cluster-up`` with ``make images`` imported. A cluster this fixture started is taken
    down afterwards unless ``--keep-cluster``."""
    keep = bool(request.config.getoption("--keep-cluster"))
    if os.environ.get("KUBECONFIG"):
        yield read_kubeconfig(Path(os.environ["KUBECONFIG"]))
        return
    if _docker_answers():
        from cryptolake.stack.kind import KindCluster  # noqa: PLC0415

        kind = KindCluster()
        kind.up()
        yield read_kubeconfig(kind.kubeconfig)
        if not keep:
            kind.down()
        return
    from cryptolake.stack.cluster import Cluster, cluster_images  # noqa: PLC0415

    local = Cluster()
    local.up(cluster_images(build=True), timeout_s=600)
    yield read_kubeconfig(local.kubeconfig)
    if not keep:
        local.down()
