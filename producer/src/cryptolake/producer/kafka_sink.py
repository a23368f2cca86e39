"""The Kafka writer: idempotent, acks=all, keyed ``"{exchange}:{symbol}"``, every delivery
report counted. Trades go to ``crypto.trades.v1``, dead letters to ``crypto.trades.dlq``.

What ``produce()`` itself refuses never stops the producer: a full local queue is waited out
(backpressure), a message over ``message.max.bytes`` is dropped and counted as failed (logged
once per topic). Only a fatal producer error is raised, as :class:`SinkError`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
)

from cryptolake.common.kafka_client import librdkafka_config
from cryptolake.common.market_snapshot import MarketSnapshot
from cryptolake.common.trade import TOPIC_CONFIG, DeadLetter, Trade
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.settings import ProducerSettings

log = logging.getLogger(__name__)
_LIBRDKAFKA_LOG = logging.getLogger("cryptolake.producer.librdkafka")


class SinkError(RuntimeError):
    """The broker cannot be used (topics cannot be created, fatal producer error)."""


class NotAuthorized(SinkError):
    """The broker does not (yet) allow this login what it asked."""


class BrokerNotAnswering(SinkError):
    """The broker did not answer an admin request in time (not started yet, or down)."""


# What librdkafka reports while no broker answers at the bootstrap address.
UNREACHABLE_ERRORS = frozenset({
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
})  # fmt: skip


AUTHORIZATION_ERRORS = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
})  # fmt: skip


def build_producer_config(settings: ProducerSettings) -> dict[str, Any]:
    return {
        **librdkafka_config(settings),
        "client.id": "cryptolake-producer",
        # Idempotence gives exactly-once per partition across retries and keeps key order.
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.compression,
        "linger.ms": settings.linger_ms,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        # Give a broker restart time to come back before a message counts as failed.
        "message.timeout.ms": 120_000,
    }


def topic_config(settings: ProducerSettings) -> dict[str, str]:
    """The settings a topic is created with: retention from settings, plus the contract's
    ``TOPIC_CONFIG`` (the broker's append time as every record's timestamp)."""
    return {"retention.ms": str(settings.topic_retention_ms), **TOPIC_CONFIG}


def ensure_topics(settings: ProducerSettings, timeout_s: float = 30.0) -> None:
    """Create the trades, DLQ and markets topics if missing (partitions and retention from settings,
    ``TOPIC_CONFIG``); an existing topic is left as is, with a warning where it differs.

    Waits instead of failing the process into a restart: for a broker that does not answer
    yet, up to ``broker_wait_s``; for a login it does not authorize yet (the operator grants
    the ACLs once the broker answers), up to ``authorization_wait_s``."""

    def gave_up(state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        limit = (settings.authorization_wait_s if isinstance(error, NotAuthorized)
                 else settings.broker_wait_s)  # fmt: skip
        return (state.seconds_since_start or 0.0) >= limit

    retrying = Retrying(
        stop=gave_up,
        wait=wait_exponential(multiplier=1, max=10),
        retry=retry_if_exception_type((NotAuthorized, BrokerNotAnswering)),
        before_sleep=_waiting,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            _ensure_topics(settings, timeout_s)


def _waiting(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    awaited = "its ACLs" if isinstance(error, NotAuthorized) else "the broker"
    log.info("%s: waiting for %s (%.0f s so far)", error, awaited, state.seconds_since_start)


def _ensure_topics(settings: ProducerSettings, timeout_s: float) -> None:
    conf: dict[str, str | int | float | bool] = {**librdkafka_config(settings)}
    admin = AdminClient(conf)
    config = topic_config(settings)
    wanted = [
        NewTopic(topic, settings.topic_partitions, settings.topic_replication, config=config)
        for topic in (settings.trades_topic, settings.dlq_topic, settings.markets_topic)
    ]
    for topic, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            try:
                future.result(timeout=timeout_s)
            except TimeoutError as exc:
                raise BrokerNotAnswering(_not_answering(settings, timeout_s)) from exc
            log.info(
                "created topic %s (%d partitions, retention %d ms)",
                topic,
                settings.topic_partitions,
                settings.topic_retention_ms,
            )
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in AUTHORIZATION_ERRORS:
                raise NotAuthorized(
                    f"{settings.kafka_username or 'this client'} may not create or describe "
                    f"{topic} on {settings.bootstrap_servers} ({error.name()})"
                ) from exc
            if error.code() in UNREACHABLE_ERRORS:
                raise BrokerNotAnswering(_not_answering(settings, timeout_s)) from exc
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise SinkError(
                    f"cannot create topic {topic} on {settings.bootstrap_servers}: {error.str()}"
                ) from exc
            log.info("topic %s exists", topic)
            _warn_on_other_config(admin, topic, config, timeout_s)


def _not_answering(settings: ProducerSettings, timeout_s: float) -> str:
    return (f"no broker answered at {settings.bootstrap_servers} within {timeout_s:.0f} s "
            "(is it up, and is CRYPTOLAKE_BOOTSTRAP_SERVERS right?)")  # fmt: skip


def _warn_on_other_config(
    admin: AdminClient, topic: str, wanted: dict[str, str], timeout_s: float
) -> None:
    """An existing topic keeps its settings; say so for each that differs from ours."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    for future in admin.describe_configs([resource], request_timeout=timeout_s).values():
        actual = future.result(timeout=timeout_s)
        for name, value in wanted.items():
            if name in actual and actual[name].value != value:
                log.warning(
                    "topic %s keeps %s=%s, not the configured %s (left as is)",
                    topic,
                    name,
                    actual[name].value,
                    value,
                )


class KafkaSink:
    """Produces trades and dead letters; call ``serve()`` often so delivery reports run."""

    def __init__(self, settings: ProducerSettings, metrics: ProducerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        # librdkafka's own log lines go through logging, formatted like ours.
        self.producer = Producer(build_producer_config(settings), logger=_LIBRDKAFKA_LOG)
        self.trades_topic = settings.trades_topic
        self.dlq_topic = settings.dlq_topic
        self.delivered = 0
        self.dlq_delivered = 0
        self.snapshots_delivered = 0
        self.failed = 0
        self.too_large = 0  # refused by produce() as over message.max.bytes (part of failed)
        self._refusals_logged: set[tuple[str, int]] = set()
        self._produced_by_exchange: dict[str, Any] = {}
        self._latency = metrics.delivery_latency
        self.fatal: KafkaError | None = None

    def _on_trade_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._on_failure(err, msg)
            return
        self.delivered += 1
        key = msg.key() or b":"
        exchange = key[: key.find(b":")].decode()
        counter = self._produced_by_exchange.get(exchange)
        if counter is None:
            counter = self._produced_by_exchange[exchange] = self.metrics.produced.labels(exchange)
        counter.inc()
        latency = msg.latency()
        if latency is not None:
            self._latency.observe(latency)

    def _on_dlq_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._on_failure(err, msg)
            return
        self.dlq_delivered += 1

    def _on_failure(self, err: KafkaError, msg: Message) -> None:
        self.failed += 1
        self.metrics.delivery_errors.labels(msg.topic()).inc()
        log.error("delivery failed to %s (key %r): %s", msg.topic(), msg.key(), err.str())
        if err.fatal():
            self.fatal = err

    def _produce(self, topic: str, value: bytes, key: str, callback: Any) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=callback)
                return
            except BufferError:
                # Local queue full: let librdkafka drain it, then retry (backpressure).
                self.producer.poll(0.05)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise SinkError(f"cannot produce to {topic}: {error.str()}") from exc
                self._on_refused(topic, key, len(value), error)
                return

    def _on_refused(self, topic: str, key: str, size: int, error: KafkaError) -> None:
        """A message librdkafka refuses outright (too large, unknown topic, …): counted as
        failed, never fatal; the first one per topic and error is logged."""
        self.failed += 1
        reason = error.str()
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self.too_large += 1
            reason = "over message.max.bytes"
        self.metrics.delivery_errors.labels(topic).inc()
        if (topic, error.code()) not in self._refusals_logged:
            self._refusals_logged.add((topic, error.code()))
            log.error(
                "dropped a %d-byte message to %s (key %.80r): %s; further ones are only counted "
                "(cryptolake_producer_delivery_errors_total)",
                size,
                topic,
                key,
                reason,
            )

    def publish_trades(self, trades: Iterable[Trade]) -> None:
        topic, callback = self.trades_topic, self._on_trade_delivery
        for trade in trades:
            self._produce(topic, trade.to_json(), trade.key, callback)

    def publish_snapshots(self, snapshots: Iterable[MarketSnapshot]) -> None:
        topic = self.settings.markets_topic
        for snapshot in snapshots:
            self._produce(topic, snapshot.to_json(), snapshot.key, self._on_snapshot_delivery)

    def _on_snapshot_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._on_failure(err, msg)
            return
        self.snapshots_delivered += 1

    def publish_dead_letters(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self._produce(self.dlq_topic, letter.to_json(), letter.key, self._on_dlq_delivery)

    def serve(self) -> None:
        """Run pending delivery reports without blocking."""
        self.producer.poll(0)
        if self.fatal is not None:
            raise SinkError(f"fatal producer error: {self.fatal.str()}")

    def flush(self, timeout_s: float) -> int:
        """Wait for every queued message to be acknowledged; returns how many are left."""
        remaining: int = self.producer.flush(timeout_s)
        if self.too_large:
            log.error("%d messages were dropped as over message.max.bytes", self.too_large)
        return remaining
