"""Which topic a stream reads. Kafka gives every topic an id (KIP-516), a new one when a topic is
deleted and created again under the same name. A checkpoint's offsets belong to one topic id:
read against a recreated topic they point past its end, and Spark (``failOnDataLoss`` off, so
that retention never stops the archive) would skip the new topic's first records with only a
warning. So each query records the id it reads beside its checkpoint, checks it before each
batch is written, and stops with ``TopicReplaced`` when it changed. ``CRYPTOLAKE_ADOPT_TOPIC_ID``
set to the new id starts the query anew at the new topic's first offset."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from cryptolake.common.kafka_client import java_kafka_config
from cryptolake.jobs.files import delete_path, read_text, write_text
from cryptolake.jobs.settings import JobSettings

log = logging.getLogger(__name__)

# Uuid.ZERO_UUID, what a broker that keeps no topic ids reports.
NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"
# How long one look at the topic may wait for the broker.
DESCRIBE_TIMEOUT_S = 30


class TopicReplaced(RuntimeError):
    """The topic a query reads is not the one its checkpoint's offsets belong to."""


class Verdict(Enum):
    SAME = "same"  # the recorded topic: read on
    RECORD = "record"  # nothing recorded yet (a new query, or one from before ids): record it
    ADOPT = "adopt"  # a recreated topic the user adopted: start anew at its first offset
    REPLACED = "replaced"  # a recreated topic: stop before writing anything
    UNKNOWN = "unknown"  # topic missing, broker silent or without ids: look again next batch


def judge(recorded: str | None, current: str | None, adopt: str | None) -> Verdict:
    """What a query does, given the id it recorded, the topic's id now and the id the user
    adopted (``CRYPTOLAKE_ADOPT_TOPIC_ID``)."""
    if current is None:
        return Verdict.UNKNOWN
    if recorded == current:
        return Verdict.SAME
    if recorded is None:
        return Verdict.RECORD
    return Verdict.ADOPT if adopt == current else Verdict.REPLACED


def replaced_message(topic: str, query: str, recorded: str, current: str, adopt: str | None) -> str:
    wrong = f" (CRYPTOLAKE_ADOPT_TOPIC_ID is {adopt}, another id)" if adopt else ""
    return (
        f"{topic} was deleted and created again since {query} last read it (topic id "
        f"{recorded}, now {current}): the checkpoint's offsets belong to the old topic, and "
        "reading on would skip the new topic's first records. Stopped before writing them"
        f"{wrong}. To read the new topic from its first offset (the tables keep what they "
        f"hold), start the jobs with CRYPTOLAKE_ADOPT_TOPIC_ID={current}"
    )


def replaced_in(error_text: str) -> str | None:
    """The message of a TopicReplaced raised inside a batch, from the text of the streaming
    query's error (Spark wraps the Python traceback); None when it is another error."""
    marker = f"{TopicReplaced.__module__}.{TopicReplaced.__name__}: "
    _, found, rest = error_text.rpartition(marker)
    return rest.splitlines()[0] if found else None


@dataclass
class TopicGuard:
    """One query's check of the topic it reads: ``on_start`` before the query starts (adopts
    a recreated topic when told to), ``before_batch`` first thing in each batch."""

    spark: SparkSession
    settings: JobSettings
    query: str
    recorded: str | None = field(default=None, init=False)

    @property
    def record_path(self) -> str:
        return f"{self.settings.checkpoints}/{self.query}-topic.json"

    def on_start(self, *, reset: list[tuple[str, str | None]]) -> bool:
        """Check the topic before the query starts; True when a recreated topic was adopted.
        Adopting writes each ``(path, text)`` of ``reset`` (None: delete the path) in order,
        then records the new id: a crash between the steps adopts again on the next start."""
        text = read_text(self.spark, self.record_path)
        self.recorded = json.loads(text)["id"] if text else None
        current = self._authorized_topic_id()
        adopt = self.settings.adopt_topic_id
        verdict = judge(self.recorded, current, adopt)
        if verdict is Verdict.UNKNOWN:
            if adopt:
                raise TopicReplaced(
                    f"CRYPTOLAKE_ADOPT_TOPIC_ID is set, but the id of {self.settings.trades_topic} "
                    "cannot be read now (topic missing or broker unreachable): try again"
                )
            return False
        if verdict is Verdict.REPLACED:
            assert self.recorded is not None and current is not None
            raise TopicReplaced(replaced_message(
                self.settings.trades_topic, self.query, self.recorded, current, adopt))  # fmt: skip
        if verdict is Verdict.ADOPT:
            for path, content in reset:
                if content is None:
                    delete_path(self.spark, path)
                else:
                    write_text(self.spark, path, content)
            log.warning("%s: adopted %s with id %s (was %s): reading it from its first offset",
                        self.query, self.settings.trades_topic, current, self.recorded)  # fmt: skip
        if verdict in (Verdict.ADOPT, Verdict.RECORD):
            self._record(current)
        return verdict is Verdict.ADOPT

    def before_batch(self) -> None:
        """Raise TopicReplaced when the topic is no longer the recorded one (the batch was
        planned with the old offsets against the new topic: nothing of it may be written)."""
        current = self.topic_id()
        verdict = judge(self.recorded, current, None)
        if verdict is Verdict.RECORD:
            self._record(current)
        elif verdict is Verdict.REPLACED:
            assert self.recorded is not None and current is not None
            raise TopicReplaced(replaced_message(
                self.settings.trades_topic, self.query, self.recorded, current, None))  # fmt: skip

    def _authorized_topic_id(self) -> str | None:
        """``topic_id``, waiting up to ``authorization_wait_s`` while the broker does not yet
        let this login describe the topic (the operator grants the ACLs once the broker
        answers): a fresh pipeline's drivers start once, instead of failing into restarts."""
        retrying = Retrying(
            stop=stop_after_delay(self.settings.authorization_wait_s),
            wait=wait_exponential(multiplier=1, max=10),
            retry=retry_if_exception_type(NotAuthorized),
            before_sleep=lambda state: log.info(
                "%s: %s: waiting for its ACLs (%.0f s so far)", self.query,
                state.outcome.exception() if state.outcome else "", state.seconds_since_start,
            ),
            reraise=True,
        )  # fmt: skip
        for attempt in retrying:
            with attempt:
                return self.topic_id()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _record(self, current: str | None) -> None:
        assert current is not None
        body = {"topic": self.settings.trades_topic, "id": current}
        write_text(self.spark, self.record_path, json.dumps(body))
        self.recorded = current

    def topic_id(self) -> str | None:
        """The topic's id from the Kafka admin client on Spark's class path; None when the
        topic does not exist, the broker does not answer in time or keeps no ids."""
        jvm = self.spark.sparkContext._jvm
        assert jvm is not None
        topic = self.settings.trades_topic
        admin = _shared_admin(self.spark, self.settings)
        described = admin.describeTopics(jvm.java.util.Collections.singletonList(topic))
        seconds = jvm.java.util.concurrent.TimeUnit.SECONDS
        try:
            topic_id = str(described.allTopicNames().get(DESCRIBE_TIMEOUT_S, seconds)
                           .get(topic).topicId().toString())  # fmt: skip
        except Py4JJavaError as exc:
            cause = _java_cause(exc)
            if cause in ("UnknownTopicOrPartitionException", "TimeoutException"):
                log.info("%s: no id for %s now (%s)", self.query, topic, cause)
                return None
            if cause.endswith("AuthorizationException"):
                raise NotAuthorized(
                    f"{self.settings.kafka_username or 'this client'} may not describe "
                    f"{topic} ({cause})"
                ) from exc
            raise
        return None if topic_id == NO_TOPIC_ID else topic_id


# One admin client per broker configuration and process: the queries' guards share it (a
# client per guard would outlive its query, reconnecting to a broker that may be gone).
_ADMINS: dict[tuple[tuple[str, str], ...], Any] = {}


class NotAuthorized(RuntimeError):
    """The broker does not (yet) let this login describe the topic."""


def _shared_admin(spark: SparkSession, settings: JobSettings) -> Any:
    key = tuple(sorted(java_kafka_config(settings).items()))
    if key not in _ADMINS:
        timeout = {"default.api.timeout.ms": str(DESCRIBE_TIMEOUT_S * 1000)}
        _ADMINS[key] = java_admin(spark, settings, timeout)
    return _ADMINS[key]


def java_admin(
    spark: SparkSession, settings: JobSettings, extra: dict[str, str] | None = None
) -> Any:
    """A Kafka admin client of the Java library on Spark's class path (close it when done)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    properties = jvm.java.util.Properties()
    for key, value in {**java_kafka_config(settings), **(extra or {})}.items():
        properties.put(key, value)
    return jvm.org.apache.kafka.clients.admin.Admin.create(properties)


def _java_cause(exc: Py4JJavaError) -> str:
    """The simple class name of the innermost Java exception behind a py4j error."""
    java = exc.java_exception
    while java.getCause() is not None:
        java = java.getCause()
    return str(java.getClass().getSimpleName())
