"""Bronze parsing, validation rules and dedup on hand-built Kafka records."""

import datetime as dt
import json
from decimal import Decimal

import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from cryptolake.jobs.tables import BRONZE_SCHEMA
from cryptolake.jobs.transforms import (
    batch_summary,
    deduplicate,
    parse_trades,
    rejected_rows,
    valid_trades,
)

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z in µs
GOOD = {
    "schema_version": 1, "exchange": "binance", "symbol": "BTC-USDT", "trade_id": "1001",
    "price": "94000.12000000", "qty": "0.00150000", "side": "buy", "event_time": T0 + 1_500,
    "ingest_time": T0 + 90_000,
}  # fmt: skip
HOUR_LATER = T0 + 3_600_000_000


def bronze_rows(spark, values, first_offset=0, broker_time=dt.datetime(2025, 1, 1, 0, 0, 1)):
    """Bronze rows as the broker stamped them: ``broker_time`` is their Kafka append time."""
    rows = [
        (
            None,
            value if isinstance(value, bytes) else value.encode(),
            "crypto.trades.v1",
            0,
            offset,
            broker_time,
            broker_time,
            dt.date(2025, 1, 1),
        )
        for offset, value in enumerate(values, start=first_offset)
    ]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def trade(**changes):
    return json.dumps({**GOOD, **changes})


def test_a_valid_trade_becomes_a_typed_silver_row(spark):
    silver = valid_trades(parse_trades(bronze_rows(spark, [trade()])))
    expected = Row(
        exchange="binance", symbol="BTC-USDT", trade_id="1001",
        price=Decimal("94000.120000000000000000"), qty=Decimal("0.001500000000000000"),
        side="buy", event_time=dt.datetime(2025, 1, 1, 0, 0, 0, 1500),
        ingest_time=dt.datetime(2025, 1, 1, 0, 0, 0, 90000), trade_date=dt.date(2025, 1, 1),
        year=2025, month=1, day=1, hour=0, kafka_topic="crypto.trades.v1", kafka_partition=0,
        kafka_offset=0,
    )  # fmt: skip
    assertDataFrameEqual(silver, [expected])


def without(field):
    return json.dumps({k: v for k, v in GOOD.items() if k != field})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{not json", "malformed_json"),
        ("[1, 2]", "malformed_json"),
        ("", "malformed_json"),
        (trade(schema_version=2), "unknown_schema_version"),
        (without("schema_version"), "missing_field"),
        (without("price"), "missing_field"),
        (trade(exchange="bitstamp"), "bad_exchange"),
        (trade(event_time="yesterday"), "bad_type"),
        (trade(price=94000.12), "bad_type"),  # a JSON number would not be exact
        (trade(symbol="btcusdt"), "bad_symbol"),
        (trade(price="-1"), "bad_price"),
        (trade(price="0.000"), "bad_price"),
        (trade(price="1.0000000000000000001"), "bad_price"),  # 19 decimals do not fit
        (trade(qty="0"), "bad_qty"),
        (trade(side="BUY"), "bad_side"),
        (trade(event_time=1_000_000), "bad_timestamp"),  # 1970
        (trade(event_time=T0 + 3_600_000_000), "bad_timestamp"),  # 1 h ahead of the broker
    ],
)
def test_each_rule_sends_a_row_to_quarantine_with_its_reason(spark, value, reason):
    parsed = parse_trades(bronze_rows(spark, [value]))
    assert valid_trades(parsed).count() == 0
    rows = rejected_rows(parsed).collect()
    assert [(r.reason, r.raw_value, r.kafka_offset, r.layer) for r in rows] == [
        (reason, value, 0, "silver")
    ]
    assert rows[0].detail


def test_rule_counters_add_up_to_the_input(spark):
    values = [trade(), trade(trade_id="2"), "{bad", trade(qty="0"), trade(side="x")]
    parsed = parse_trades(bronze_rows(spark, values))
    counts: dict[str, int] = {}
    for row in batch_summary(parsed, {}).collect():
        counts[row.reason or "valid"] = counts.get(row.reason or "valid", 0) + row.rows
    assert counts["valid"] == 2
    assert (counts["malformed_json"], counts["bad_qty"], counts["bad_side"]) == (1, 1, 1)
    assert sum(counts.values()) == len(values)


def test_duplicates_are_dropped_on_exchange_symbol_and_trade_id(spark):
    values = [
        trade(),
        trade(),  # the same trade delivered twice
        trade(exchange="kraken"),  # same id on another exchange is another trade
        trade(trade_id="1002"),
    ]
    silver = valid_trades(deduplicate(parse_trades(bronze_rows(spark, values)), "10 minutes"))
    keys = sorted((r.exchange, r.trade_id) for r in silver.collect())
    assert keys == [("binance", "1001"), ("binance", "1002"), ("kraken", "1001")]


def test_a_stream_keeps_each_trade_once_and_every_rejected_row(spark, tmp_path):
    """The silver query's dedup, streamed over three batches: a repeated trade is dropped, a
    repeated bad value (a new Kafka record) is not, and a trade an hour older than the newest
    is kept for gold to judge (the watermark runs on Kafka time): nothing vanishes unseen."""
    bronze, checkpoint = str(tmp_path / "bronze"), str(tmp_path / "checkpoint")
    batches = [  # (values, their Kafka append time)
        ([trade(), "{bad", trade(side="x")], dt.datetime(2025, 1, 1)),
        ([trade(), "{bad", trade(trade_id="1002"), trade(event_time=HOUR_LATER + 3_600_000_000),
          trade(trade_id="1004", event_time=HOUR_LATER, ingest_time=HOUR_LATER + 90_000)],
         dt.datetime(2025, 1, 1, 1, 0, 1)),
        ([trade(trade_id="1003", event_time=T0 + 2_000),
          trade(trade_id="1004", event_time=HOUR_LATER, ingest_time=HOUR_LATER + 90_000)],
         dt.datetime(2025, 1, 1, 1, 1)),
    ]  # fmt: skip
    seen: list[list[tuple]] = []

    def collect(batch, _batch_id):
        seen.append(
            sorted((r.trade_id or "", r.reason or "", r.kafka_offset) for r in batch.collect())
        )

    offset = 0
    for values, broker_time in batches:
        bronze_rows(spark, values, offset, broker_time).write.format("delta").mode("append").save(
            bronze
        )
        offset += len(values)
        stream = parse_trades(spark.readStream.format("delta").load(bronze))
        query = (
            deduplicate(stream, "10 minutes")
            .writeStream.foreachBatch(collect)
            .option("checkpointLocation", checkpoint)
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
    with_data = [rows for rows in seen if rows]
    assert with_data == [
        [("", "malformed_json", 1), ("1001", "", 0), ("1001", "bad_side", 2)],
        [("", "malformed_json", 4), ("1001", "bad_timestamp", 6), ("1002", "", 5), ("1004", "", 7)],
        [("1003", "", 8)],
    ]


def test_kafka_offsets_behind_takes_the_largest_kafka_source_figure() -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from cryptolake.jobs.metrics import kafka_offsets_behind  # noqa: PLC0415

    kafka = SimpleNamespace(
        metrics={"maxOffsetsBehindLatest": "42", "avgOffsetsBehindLatest": "7.5"}
    )
    other = SimpleNamespace(metrics={"maxOffsetsBehindLatest": "3"})
    delta = SimpleNamespace(metrics={})
    assert kafka_offsets_behind([kafka, other, delta]) == 42
    assert kafka_offsets_behind([delta]) is None
    assert kafka_offsets_behind([]) is None


def test_each_table_has_exactly_one_writing_query() -> None:
    from cryptolake.jobs import streams, tables  # noqa: PLC0415

    owned = [name for names in streams.TABLE_WRITERS.values() for name in names]
    assert sorted(owned) == sorted(tables.ALL_TABLES)
    assert len(owned) == len(set(owned))


def test_a_table_another_process_creates_after_a_first_look_is_seen(spark, tmp_path) -> None:
    """The look happened between another writer's first object and its first commit: Delta
    cached the table as missing, and kept calling it missing (a job then waited 600 s for a
    table that was there)."""
    import deltalake  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    from cryptolake.jobs import streams  # noqa: PLC0415

    path = tmp_path / "upstream"
    (path / "_delta_log").mkdir(parents=True)
    assert not streams._delta_table_exists(spark, str(path))
    deltalake.write_deltalake(str(path), pa.table({"a": [1]}))  # another writer, not this JVM
    assert streams._delta_table_exists(spark, str(path))


def test_a_batch_replayed_after_a_restart_is_appended_once(spark, job_lake):
    from cryptolake.jobs.streams import BatchAppender  # noqa: PLC0415

    settings = job_lake("bronze", "query-1")
    rows = bronze_rows(spark, [trade(), trade(trade_id="1002")])

    def count() -> int:
        return spark.read.format("delta").load(settings.table_path("bronze/trades")).count()

    first_run = BatchAppender(settings, "bronze")
    first_run.append(rows, "bronze/trades", 0)
    first_run.append(rows, "bronze/trades", 1)
    assert count() == 4
    # Killed after batch 1's commit, before the checkpoint recorded it: batch 1 runs again.
    restarted = BatchAppender(settings, "bronze")
    restarted.append(rows, "bronze/trades", 1)
    assert count() == 4
    restarted.append(rows, "bronze/trades", 2)
    assert count() == 6
    # A new checkpoint is a new query: its batch 1 is new data.
    job_lake("bronze", "query-2")
    BatchAppender(settings, "bronze").append(rows, "bronze/trades", 1)
    assert count() == 8


@pytest.mark.parametrize("old", ["silver", "gold", "silver_trades"])
def test_refine_refuses_a_lakehouse_of_the_old_chained_layout(spark, tmp_path, old) -> None:
    from cryptolake.jobs.refine import LegacyLayout, start_refine  # noqa: PLC0415
    from cryptolake.jobs.settings import JobSettings  # noqa: PLC0415

    settings = JobSettings(table_root=str(tmp_path / "lake"), metrics_port=0)
    (tmp_path / "lake" / "_checkpoints" / old / "offsets").mkdir(parents=True)
    with pytest.raises(LegacyLayout, match=r"run `python -m cryptolake.jobs rebuild`"):
        start_refine(spark, settings)
