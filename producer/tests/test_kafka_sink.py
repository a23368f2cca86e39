"""What ``produce()`` refuses never stops the producer: a full queue is waited out, a message
over ``message.max.bytes`` is dropped and counted (logged once), anything else is a SinkError.
No broker is needed: librdkafka refuses an oversized message before it connects."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from cryptolake.common.trade import TOPIC_CONFIG, DeadLetter, RejectReason, Trade
from cryptolake.producer.kafka_sink import KafkaSink, SinkError, topic_config
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.settings import ProducerSettings

NOW_US = 1_700_000_000_000_000
TWO_MB = 2 * 1024 * 1024
# The discard port: nothing listens, so nothing is ever delivered.
SETTINGS = ProducerSettings(bootstrap_servers="127.0.0.1:9", metrics_port=0)


@pytest.fixture
def sink() -> Iterator[KafkaSink]:
    sink = KafkaSink(SETTINGS, ProducerMetrics())
    real = sink.producer  # tests may swap in a fake
    yield sink
    real.purge()
    real.flush(0)


def unbounded_letter(raw: str) -> DeadLetter:
    """A dead letter built around the producer's helper: nothing cuts its raw."""
    return DeadLetter("binance", RejectReason.BAD_SYMBOL, "built by hand", raw, NOW_US)


def delivery_errors(sink: KafkaSink, topic: str) -> float:
    value = sink.metrics.registry.get_sample_value(
        "cryptolake_producer_delivery_errors_total", {"topic": topic}
    )
    return value or 0.0


def test_topics_are_created_with_the_contract_config() -> None:
    assert topic_config(SETTINGS) == {
        "retention.ms": str(SETTINGS.topic_retention_ms),
        "message.timestamp.type": "LogAppendTime",
    }
    assert TOPIC_CONFIG.items() <= topic_config(SETTINGS).items()


def test_an_oversized_dead_letter_is_dropped_counted_and_logged_once(
    sink: KafkaSink, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cryptolake.producer.kafka_sink"):
        sink.publish_dead_letters([unbounded_letter("x" * TWO_MB)] * 3)
        sink.publish_dead_letters([unbounded_letter("small")])
    assert (sink.failed, sink.too_large) == (3, 3)
    assert delivery_errors(sink, SETTINGS.dlq_topic) == 3
    dropped = [r for r in caplog.records if "over message.max.bytes" in r.getMessage()]
    assert len(dropped) == 1
    assert SETTINGS.dlq_topic in dropped[0].getMessage()


def test_an_oversized_trade_is_dropped_and_counted_too(sink: KafkaSink) -> None:
    # Trade() itself validates nothing: a price of 2 MB, as no make_trade should let through.
    huge = Trade("binance", "BTC-USDT", "1", "1." + "0" * TWO_MB, "1", "buy", NOW_US, NOW_US)
    sink.publish_trades([huge])
    assert (sink.failed, sink.too_large) == (1, 1)
    assert delivery_errors(sink, SETTINGS.trades_topic) == 1


class FakeProducer:
    """Raises the given errors from successive ``produce`` calls, then accepts."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.produced: list[tuple[str, bytes, str]] = []
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: str, **_: Any) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.produced.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def test_a_full_queue_is_polled_until_the_message_fits(sink: KafkaSink) -> None:
    fake = FakeProducer(BufferError("Local: Queue full"), BufferError("Local: Queue full"))
    sink.producer = fake  # type: ignore[assignment]
    sink.publish_dead_letters([unbounded_letter("raw")])
    assert (fake.polls, len(fake.produced), sink.failed) == (2, 1, 0)


def test_a_fatal_produce_error_is_a_sink_error(sink: KafkaSink) -> None:
    fatal = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    sink.producer = FakeProducer(KafkaException(fatal))  # type: ignore[assignment]
    with pytest.raises(SinkError, match="cannot produce to"):
        sink.publish_dead_letters([unbounded_letter("raw")])


def test_a_refused_message_is_counted_and_the_next_one_goes_out(sink: KafkaSink) -> None:
    refused = KafkaError(KafkaError._UNKNOWN_PARTITION, "Local: Unknown partition")
    fake = FakeProducer(KafkaException(refused))
    sink.producer = fake  # type: ignore[assignment]
    sink.publish_dead_letters([unbounded_letter("first"), unbounded_letter("second")])
    assert (sink.failed, sink.too_large, len(fake.produced)) == (1, 0, 1)
    assert delivery_errors(sink, SETTINGS.dlq_topic) == 1
