"""Pytest fixtures for real services: one Kafka broker per test session, fresh topics per test.

Registered by the repository's root ``conftest.py``. Tests that use a service fixture are
marked ``integration`` automatically, so ``-m "not integration"`` runs the pure tests alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptolake.stack.kafka import KafkaBroker, KafkaBrokerConfig, free_port

SERVICE_FIXTURES = {"kafka_broker", "kafka_topics"}


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
