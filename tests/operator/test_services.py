"""The topic settings the operator applies, as pure builders: what a created topic gets and
what every reconcile sets again on existing ones (the broker itself: test_operator_cluster)."""

from __future__ import annotations

from confluent_kafka.admin import AlterConfigOpType, ConfigResource

from cryptolake.common.market_snapshot import MARKETS_TOPIC
from cryptolake.common.trade import DLQ_TOPIC, TOPIC_CONFIG, TRADES_TOPIC
from cryptolake.operator.services import (
    TopicSpec,
    build_config_alterations,
    build_topic_config,
)

WANTED = TopicSpec(partitions=6, replication=3, retention_ms=86_400_000)


def test_topics_are_created_with_retention_and_the_broker_append_time() -> None:
    assert build_topic_config(WANTED) == {
        "retention.ms": "86400000",
        "message.timestamp.type": "LogAppendTime",
    }
    assert TOPIC_CONFIG.items() <= build_topic_config(WANTED).items()


def test_every_reconcile_sets_the_same_config_on_every_topic_incrementally() -> None:
    alterations = build_config_alterations(WANTED)
    assert [(a.restype, a.name) for a in alterations] == [
        (ConfigResource.Type.TOPIC, TRADES_TOPIC),
        (ConfigResource.Type.TOPIC, DLQ_TOPIC),
        (ConfigResource.Type.TOPIC, MARKETS_TOPIC),
    ]
    for alteration in alterations:
        entries = {
            e.name: (e.value, e.incremental_operation) for e in alteration.incremental_configs
        }
        assert entries == {
            name: (value, AlterConfigOpType.SET)
            for name, value in build_topic_config(WANTED).items()
        }
