"""``backfill``: Binance dump files into every table without a broker. Gold equals a Decimal
recomputation from the CSV after a run killed between its commits, and a second run changes
nothing. (``tests/integration/test_backfill.py``: hostile lines, parity with streaming, and
trades silver already holds.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cryptolake.common.candles import reference_bars
from cryptolake.jobs import refine, tables
from cryptolake.jobs.backfill import backfill
from cryptolake.producer.replay import read_dump

FIXTURES = Path(__file__).parent / "fixtures" / "binance"


def table(spark, settings, name: str):
    return spark.read.format("delta").load(settings.table_path(name))


class Killed(BaseException):
    """The process dying at this point: nothing after it runs (not an Exception to handle)."""


@pytest.mark.timeout(600)  # three runs of the whole batch
def test_gold_equals_the_csv_after_a_kill_and_a_second_run_changes_nothing(
    spark, job_lake, monkeypatch
):
    """Killed after the bronze, silver and quarantine commits, before the candles MERGE; run
    again, then once more after it succeeded."""
    settings = job_lake("refine")
    dumps = sorted(FIXTURES.glob("*.csv"))

    def die(*args, **kwargs):
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(refine, "merge_candles", die)
        with pytest.raises(Killed):
            backfill(spark, settings, dumps)
    assert backfill(spark, settings, dumps) is not None  # writes only what is missing
    versions = {
        name: spark.sql(f"DESCRIBE HISTORY delta.`{settings.table_path(name)}`").count()
        for name in (tables.BRONZE_TRADES, tables.SILVER_TRADES, tables.SILVER_QUARANTINE,
                     tables.GOLD_CANDLES_1M)
    }  # fmt: skip
    # The same files again: found done by the candles' txnAppId, nothing is written.
    assert backfill(spark, settings, dumps) is None
    for name, count in versions.items():
        assert spark.sql(f"DESCRIBE HISTORY delta.`{settings.table_path(name)}`").count() == count

    trades = [item.trade.to_dict() for dump in dumps for item in read_dump(dump) if item.trade]
    for name in (tables.BRONZE_TRADES, tables.SILVER_TRADES):
        assert table(spark, settings, name).count() == len(trades), name
    expected = reference_bars(trades)
    candles = (
        table(spark, settings, tables.GOLD_CANDLES_1M)
        .withColumn("minute_us", F.unix_micros("minute"))
        .withColumn("first_trade_time_us", F.unix_micros("first_trade_time"))
        .withColumn("last_trade_time_us", F.unix_micros("last_trade_time"))
        .collect()
    )
    fields = next(iter(expected.values())).keys()
    got = {(row.symbol, row.minute_us // 60_000_000): {name: row[name] for name in fields}
           for row in candles}  # fmt: skip
    assert got == expected
