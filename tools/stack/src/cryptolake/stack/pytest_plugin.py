"""Pytest fixtures for real services: one Kafka broker and one MinIO server per test session,
fresh topics and buckets per test.

Registered by the repository's root ``conftest.py``. Tests that use a service fixture are
marked ``integration`` automatically, so ``-m "not integration"`` runs the pure tests alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cryptolake.stack.kafka import KafkaBroker, KafkaBrokerConfig, free_port
from cryptolake.stack.minio import MinioServer, MinioServerConfig, ensure_bucket

SERVICE_FIXTURES = {"kafka_broker", "kafka_topics", "minio_server", "s3_bucket"}


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
