"""The trades topic deleted and created again under the same name, on a real broker: the
streams stop with a clear error before writing a record of the new topic (a running query,
and a restarted one), and once the new topic is adopted every trade of both topics is in
bronze, silver and Gold exactly once."""

import json
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic
from pyspark.sql import functions as F

from cryptolake.common.candles import reference_bars
from cryptolake.jobs import tables
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.topic import TopicReplaced, Verdict, judge, replaced_in

BASE_US = 1_740_830_400_000_000  # 2025-03-01 12:00 UTC


@pytest.mark.parametrize(
    ("recorded", "current", "adopt", "verdict"),
    [
        ("A", "A", None, Verdict.SAME),
        ("A", "A", "A", Verdict.SAME),  # adopted before: nothing to do again
        (None, "A", None, Verdict.RECORD),
        (None, "B", "B", Verdict.RECORD),  # nothing recorded: nothing to adopt from
        ("A", "B", None, Verdict.REPLACED),
        ("A", "B", "C", Verdict.REPLACED),  # the user adopted another id
        ("A", "B", "B", Verdict.ADOPT),
        ("A", None, None, Verdict.UNKNOWN),  # topic missing or broker silent
        (None, None, "B", Verdict.UNKNOWN),
    ],
)
def test_judge(recorded, current, adopt, verdict):
    assert judge(recorded, current, adopt) is verdict


def test_replaced_in_finds_the_message_in_sparks_error_text():
    text = (
        "[STREAM_FAILED] Query [id = 1] terminated with exception: An exception was raised by "
        'the Python Proxy. Return Message: Traceback (most recent call last):\n  File "x", '
        "line 1\ncryptolake.jobs.topic.TopicReplaced: t was deleted and created again\n"
    )
    assert replaced_in(text) == "t was deleted and created again"
    assert replaced_in("[STREAM_FAILED] CAST_INVALID_INPUT") is None


def trade(trade_id: str, seconds: float) -> dict:
    at = BASE_US + int(seconds * 1_000_000)
    price = f"{100 + int(trade_id[1:]) % 7}.{int(trade_id[1:]) % 100:02d}"
    return {"schema_version": 1, "exchange": "binance", "symbol": "BTC-USDT",
            "trade_id": trade_id, "price": price, "qty": "0.125", "side": "buy",
            "event_time": at, "ingest_time": at}  # fmt: skip


def produce(bootstrap: str, topic: str, trades: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for t in trades:
        producer.produce(topic, json.dumps(t).encode(), key=t["symbol"].encode())
    assert producer.flush(30) == 0


def recreate(admin: AdminClient, topic: str) -> str:
    """Delete ``topic`` and create it again (one partition); the new topic's id."""
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result()

    def created() -> bool:
        futures = admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=30)
        try:
            futures[topic].result()
            return True
        except KafkaException as exc:  # the deletion still under way
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return False
            raise

    deadline = time.monotonic() + 60
    while not created():
        assert time.monotonic() < deadline, "the topic could not be created again"
        time.sleep(0.5)
    return topic_id(admin, topic)


def topic_id(admin: AdminClient, topic: str) -> str:
    """The id as Kafka's Java client writes it (librdkafka prints plain base64; Java the URL-safe
    alphabet)."""
    deadline = time.monotonic() + 30
    while True:
        (described,) = admin.describe_topics(TopicCollection([topic])).values()
        try:
            return str(described.result().topic_id).replace("+", "-").replace("/", "_")
        except KafkaException as exc:  # a topic just created is not in every metadata cache yet
            if (
                exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART
                or time.monotonic() > deadline
            ):
                raise
            time.sleep(0.5)


def assert_candles_equal_recomputation(candles, trades: list[dict]) -> None:
    """Every 1-minute bar equals the Decimal recomputation from ``trades``, field by field."""
    epoch_minute = (F.col("minute").cast("long") / 60).cast("long").alias("epoch_minute")
    served = {(r.symbol, r.epoch_minute): r.asDict()
              for r in candles.select("*", epoch_minute).collect()}  # fmt: skip
    expected = reference_bars(trades)
    assert set(served) == set(expected)
    for key, bar in served.items():
        for name in ("open", "high", "low", "close", "volume", "quote_volume", "trades"):
            assert bar[name] == expected[key][name], (key, name, bar[name], expected[key][name])


def wait_for(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(1)


def test_a_recreated_topic_stops_the_streams_until_adopted_then_nothing_is_lost(
    spark, kafka_broker, tmp_path
):
    topic = f"test.{uuid.uuid4().hex[:8]}.trades"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    settings = JobSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers, trades_topic=topic,
        table_root=str(tmp_path / "lake"), metrics_port=0, refine_trigger="1 second",
        bronze_trigger="1 second",
    )  # fmt: skip
    # 40 trades in the first topic, 15 in the second: offsets go backwards, as in a
    # recreated topic, so Spark on its own would plan offsets 40→15 and skip them.
    first = [trade(f"a{i}", i * 3) for i in range(40)]
    second = [trade(f"b{i}", 120 + i * 3) for i in range(15)]
    produce(kafka_broker.bootstrap_servers, topic, first)

    queries = start_streams(spark, settings, "all", available_now=False)
    try:

        def ingested() -> bool:
            rows = spark.read.format("delta").load(settings.table_path(tables.SILVER_TRADES))
            return rows.count() == len(first)

        wait_for("the first topic's trades reach silver", ingested, timeout_s=180)
        old_id = topic_id(admin, topic)
        new_id = recreate(admin, topic)
        assert new_id != old_id
        produce(kafka_broker.bootstrap_servers, topic, second)
        recreated_at = time.monotonic()
        # Both running queries stop before writing a record of the new topic.
        wait_for("both queries stop", lambda: not any(q.isActive for q in queries), 120)
        stopped_s = time.monotonic() - recreated_at
    finally:
        for query in queries:
            query.stop()
    for query in queries:
        message = replaced_in(str(query.exception()))
        assert message is not None, query.exception()
        assert f"topic id {old_id}, now {new_id}" in message
        assert f"CRYPTOLAKE_ADOPT_TOPIC_ID={new_id}" in message

    def silver_ids() -> list[str]:
        rows = spark.read.format("delta").load(settings.table_path(tables.SILVER_TRADES))
        return sorted(r.trade_id for r in rows.select("trade_id").collect())

    assert silver_ids() == sorted(t["trade_id"] for t in first)

    # A restart refuses too, before starting a query.
    with pytest.raises(TopicReplaced, match=f"CRYPTOLAKE_ADOPT_TOPIC_ID={new_id}"):
        start_streams(spark, settings, "all", available_now=True)

    adopted = settings.model_copy(update={"adopt_topic_id": new_id})
    started = time.monotonic()
    for query in start_streams(spark, adopted, "all", available_now=True):
        query.awaitTermination()
    recovery_s = time.monotonic() - started
    every = first + second
    assert silver_ids() == sorted(t["trade_id"] for t in every)
    bronze = spark.read.format("delta").load(settings.table_path(tables.BRONZE_TRADES))
    assert bronze.count() == len(every)
    candles = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
    assert_candles_equal_recomputation(candles, every)
    print(f"recreated topic: both queries stopped {stopped_s:.1f} s after its first records; "
          f"adopting it took {recovery_s:.1f} s to read it into every table")  # fmt: skip

    # Told again (the setting left in place): adopted already, nothing read twice.
    for query in start_streams(spark, adopted, "all", available_now=True):
        query.awaitTermination()
    assert bronze.count() == len(every)
    assert candles.agg(F.sum("trades")).first()[0] == len(every)
