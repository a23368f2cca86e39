"""The refine query's writer on local Delta tables: each batch reaches silver, quarantine and
the candles exactly once per table, also when the process dies between two of its commits."""

import json
import shutil
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cryptolake.jobs import refine, tables
from cryptolake.jobs.refine import RefineWriter
from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.streams import ensure_tables
from cryptolake.jobs.tables import BRONZE_SCHEMA
from cryptolake.jobs.transforms import deduplicate, parse_trades

BASE_US = 1_740_830_400_000_000  # 2025-03-01 12:00 UTC


def refine_batch(spark, records: list[dict | bytes], first_offset: int = 0):
    """Kafka records → what the refine query hands its writer (parsed, deduplicated)."""
    import datetime as dt  # noqa: PLC0415

    broker = dt.datetime(2025, 3, 1, 12, 5)
    values = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    rows = [(None, value, "t", 0, first_offset + i, broker, broker, broker.date())
            for i, value in enumerate(values)]  # fmt: skip
    return deduplicate(parse_trades(spark.createDataFrame(rows, BRONZE_SCHEMA)), "10 minutes")


def trade(trade_id: str, seconds: float, price: str = "100.5") -> dict:
    at = BASE_US + int(seconds * 1_000_000)
    return {"schema_version": 1, "exchange": "binance", "symbol": "BTC-USDT",
            "trade_id": trade_id, "price": price, "qty": "0.5", "side": "buy",
            "event_time": at, "ingest_time": at}  # fmt: skip


class Killed(BaseException):
    """The process dying at this point: nothing after it runs (not an Exception to handle)."""


def snapshot(spark, settings):
    def rows(table: str, *order: str) -> list[dict]:
        frame = spark.read.format("delta").load(settings.table_path(table))
        return [r.asDict() for r in frame.drop("updated_at", "quarantined_at").orderBy(*order)
                .collect()]  # fmt: skip

    return {
        "silver": rows(tables.SILVER_TRADES, "trade_id", "kafka_offset"),
        "quarantine": rows(tables.SILVER_QUARANTINE, "kafka_offset"),
        "candles": rows(tables.GOLD_CANDLES_1M, "minute"),
    }


@pytest.mark.parametrize("dies_in", ["merge_candles", "refresh_derived"])
def test_a_batch_replayed_after_a_kill_between_its_commits_lands_once(
    spark, job_lake, monkeypatch, tmp_path, dies_in
):
    """Killed after the silver and quarantine commits, before (or after) the candles MERGE; the
    restarted query runs the batch again. Silver and quarantine hold it once, and every table
    equals a run that was never killed."""
    settings = job_lake("refine")
    first = refine_batch(spark, [trade("1", 1), trade("2", 2), b"{broken"])
    second = refine_batch(spark, [trade("3", 61), trade("4", -400)], 3)
    RefineWriter(settings)(first, 0)

    real = getattr(refine, dies_in)

    def die(*args, **kwargs):
        if dies_in == "refresh_derived":
            real(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(refine, dies_in, die)
    with pytest.raises(Killed):
        RefineWriter(settings)(second, 1)
    monkeypatch.setattr(refine, dies_in, real)
    RefineWriter(settings)(second, 1)  # the restart: the checkpoint never recorded batch 1
    killed = snapshot(spark, settings)

    clean = JobSettings(table_root=str(tmp_path / "clean"), metrics_port=0)
    ensure_tables(spark, clean, "refine")
    for batch_id, batch in enumerate((first, second)):
        RefineWriter(clean, app_id=f"clean-{batch_id}")(batch, batch_id)
    assert killed == snapshot(spark, clean)
    # "4" is valid but 400 s behind its market's newest trade: in silver, and quarantined late.
    assert [row["trade_id"] for row in killed["silver"]] == ["1", "2", "3", "4"]
    assert [row["reason"] for row in killed["quarantine"]] == ["malformed_json", "late"]
    assert [row["last_trade_id"] for row in killed["candles"]] == ["2", "3"]


def test_rejects_and_late_trades_share_one_quarantine_commit(spark, job_lake):
    settings = job_lake("refine")
    writer = RefineWriter(settings)
    writer(refine_batch(spark, [trade("1", 300)]), 0)
    writer(refine_batch(spark, [trade("2", 0), trade("3", 301, price="abc")], 1), 1)
    history = spark.sql(
        f"DESCRIBE HISTORY delta.`{settings.table_path(tables.SILVER_QUARANTINE)}`"
    ).where(F.col("operation") == "WRITE")
    (commit,) = history.collect()
    assert commit.operationMetrics["numOutputRows"] == "2"
    assert commit.userMetadata.endswith(":1")


def test_refine_maintains_its_own_tables_between_two_batches(spark, job_lake):
    """OPTIMIZE and VACUUM run inside the writing query, one table per batch once a round is
    due: never a second writer beside its appends and MERGEs. The next batch lands as usual."""
    settings = job_lake("refine").model_copy(update={"maintenance_interval": "1 second"})
    writer = RefineWriter(settings, derived_interval_s=3600)
    writer(refine_batch(spark, [trade("1", 1)]), 0)  # the first batch only notes the time
    time.sleep(1.5)
    writer(refine_batch(spark, [trade("2", 2)], 1), 1)  # due: silver/trades maintained after it
    writer(refine_batch(spark, [trade("3", 3)], 2), 2)

    history = spark.sql(f"DESCRIBE HISTORY delta.`{settings.table_path(tables.SILVER_TRADES)}`")
    operations = [row.operation for row in history.orderBy("version").collect()]
    # Between batches 1 and 2 (VACUUM logs its start and end as commits: a writer too).
    assert operations[-4:] == ["OPTIMIZE", "VACUUM START", "VACUUM END", "WRITE"], operations
    rows = spark.read.format("delta").load(settings.table_path(tables.SILVER_TRADES))
    assert sorted(r.trade_id for r in rows.collect()) == ["1", "2", "3"]


def test_refine_refuses_to_start_without_its_checkpoint_once_gold_holds_its_batches(
    spark, job_lake
):
    """A lost checkpoint would start a new query at the topic's start: every trade still in
    Kafka would be counted into Gold again. Refine refuses and says how to recover."""
    import shutil  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    settings = job_lake("refine", "lost-query")
    RefineWriter(settings)(refine_batch(spark, [trade("1", 1)]), 0)
    before = snapshot(spark, settings)
    shutil.rmtree(Path(settings.checkpoint_path(refine.QUERY)))
    with pytest.raises(refine.LostCheckpoint, match=r"lost-query.*run `python -m cryptolake"):
        refine.start_refine(spark, settings)
    assert snapshot(spark, settings) == before


def test_a_table_creation_killed_before_its_first_commit_is_created_on_the_next_start(
    spark, tmp_path
) -> None:
    """SIGKILL between a table's _delta_log folder and its first commit (the SIGKILL test hit
    it: S3A makes the folder's marker first) left a path Delta calls a table and cannot open:
    the next start failed with DELTA_TABLE_NOT_FOUND, forever."""
    settings = JobSettings(table_root=str(tmp_path / "lake"), metrics_port=0)
    ensure_tables(spark, settings, "refine")
    candles = Path(settings.table_path(tables.GOLD_CANDLES_1M))
    shutil.rmtree(candles)
    (candles / "_delta_log").mkdir(parents=True)  # the creation's folder, no commit
    ensure_tables(spark, settings, "refine")
    assert spark.read.format("delta").load(str(candles)).count() == 0
