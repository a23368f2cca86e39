"""Streaming and backfill give the same lakehouse for the same trades. The same Binance dump
files go once through the live path (the producer's ``replay`` → Kafka → bronze and refine)
and once through ``backfill`` (no broker): silver and every Gold table are equal field for
field, and each hostile line the producer dead-letters is quarantined by the backfill with
the same reason. Backfilling the files into the streamed lakehouse then adds no trade twice."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from cryptolake.jobs import tables
from cryptolake.jobs.backfill import backfill
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.settings import JobSettings
from cryptolake.producer.replay import run_replay
from cryptolake.producer.settings import ProducerSettings
from cryptolake.stack.kafka import read_topic

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[2] / "jobs" / "tests" / "fixtures" / "binance"
# Lines a broken export or an attacker could put in a dump, after a header and a good line.
BAD_LINES = (
    b"id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"
    b"1,100.5,0.5,50.25,1735689600000,True,True\n"
    b"2,abc,0.5,1,1735689600001,False,True\n"  # the poison pill of silver's past
    b"3,100.5,0.5,50.25,17356896000x1,False,True\n"
    b"4,100.5\n"
    b"5,100.5,0.5,50.25,1735689600002,maybe,True\n"
    b"6,100.5,0.5,50.25,1735689600003,\xff\xfe,True\n"
    b"1,100.5,0.5,50.25,1735689600000,True,True\n"  # a duplicate of line 2
    b'7,"100.5",0.5,1,1735689600004,true,true\n'
    b"8,100.5,-0.5,1,1735689600005,true,true\n"
    b"9,1" + b"0" * 30 + b",0.5,1,1735689600006,true,true\n"
    b"10,100.5,0.5,1,1735689600007,true,true," + b"x" * 70_000 + b"\n"
    b"\n"
    b" 11 ,100.6,0.25,1,1735689660000,false,true\n"
    b"12,100.7,0.25,1,99999999999999999,false,true\n"  # year 5138: from the future
)
# Every table but bronze, without the columns that say when or how a row arrived.
COMPARED = {
    tables.SILVER_TRADES: ("ingest_time", "kafka_topic", "kafka_partition", "kafka_offset"),
    tables.GOLD_CANDLES_1M: ("updated_at",),
    tables.GOLD_SMA_5M: ("updated_at",),
    tables.GOLD_STATS_HOURLY: ("updated_at",),
    tables.GOLD_STATS_DAILY: ("updated_at",),
}


def rows(spark, settings: JobSettings, name: str) -> list[tuple]:
    frame = spark.read.format("delta").load(settings.table_path(name)).drop(*COMPARED[name])
    return sorted(tuple(row) for row in frame.collect())


def test_streaming_and_backfill_write_the_same_tables(spark, kafka_broker, tmp_path):
    hostile = tmp_path / "ETHUSDT-trades-2025-01-01.csv"
    hostile.write_bytes(BAD_LINES)
    files = [*sorted(FIXTURES.glob("*.csv")), hostile]
    suffix = uuid.uuid4().hex[:8]
    producer = ProducerSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers, trades_topic=f"parity.{suffix}.trades",
        dlq_topic=f"parity.{suffix}.dlq", metrics_port=0,
    )  # fmt: skip
    replayed = run_replay(producer, files)
    streamed = JobSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers, trades_topic=producer.trades_topic,
        table_root=str(tmp_path / "streamed"), starting_offsets="earliest", metrics_port=0,
    )  # fmt: skip
    for query in start_streams(spark, streamed, "all", available_now=True):
        query.awaitTermination()
    backfilled = JobSettings(table_root=str(tmp_path / "backfilled"), metrics_port=0)
    outcome = backfill(spark, backfilled, files)
    assert outcome is not None

    for name in COMPARED:
        assert rows(spark, streamed, name) == rows(spark, backfilled, name), name
    assert outcome.rule_rows["valid"] == replayed.trades - 1  # the duplicate line
    letters = read_topic(kafka_broker.bootstrap_servers, producer.dlq_topic,
                         expected=replayed.dlq)  # fmt: skip
    dead = {}
    for record in letters:
        letter = json.loads(record.value)
        dead[int(letter["detail"].split(" line ")[1].split(":")[0])] = letter["reason"]
    quarantine = spark.read.format("delta").load(backfilled.table_path(tables.SILVER_QUARANTINE))
    assert {row.kafka_offset: row.reason for row in quarantine.collect()} == dead
    assert dead == {3: "bad_price", 4: "bad_timestamp", 5: "missing_field", 6: "bad_side",
                    7: "bad_encoding", 9: "bad_price", 10: "bad_qty", 11: "bad_price",
                    12: "too_large", 15: "bad_timestamp"}  # fmt: skip
    # Each line once: rendered into bronze unless the producer would not render it.
    bronze = spark.read.format("delta").load(backfilled.table_path(tables.BRONZE_TRADES))
    assert bronze.count() == replayed.rows - 5

    # The same files into the streamed lakehouse: every trade is there already.
    assert backfill(spark, streamed, files) is not None

    for name in COMPARED:
        assert rows(spark, streamed, name) == rows(spark, backfilled, name), name
