"""Completeness of the 1-minute candles: the rule (``mark_complete``) on hand-built bars, the
trade id bounds Spark computes, and refine's writer on local Delta tables, where a recovered
trade makes its bar, and the neighbour it joins, complete (across a restart too); tables
created before the columns existed gain them."""

from decimal import Decimal as D  # noqa: N817

from delta.tables import DeltaTable
from pyspark.sql import functions as F

from cryptolake.common.completeness import mark_complete
from cryptolake.jobs import tables
from cryptolake.jobs.refine import RefineWriter
from cryptolake.jobs.streams import ensure_tables
from cryptolake.jobs.transforms import candles_1m

from .test_transforms_gold import BASE, batch, silver


def bar(low, high, trades=None):
    """A bar with ids low..high (``trades``: how many of them it holds; all by default)."""
    count = trades if trades is not None else (high - low + 1 if low is not None else 1)
    return {"min_trade_id": low, "max_trade_id": high, "trades": count}


def test_a_run_of_ids_is_complete_but_the_markets_first_bar():
    bars = [bar(1, 3), bar(4, 9), bar(10, 10)]
    assert mark_complete(bars, from_start=True, to_end=True) == {0: False, 1: True, 2: True}


def test_a_hole_inside_a_bar_marks_it_alone():
    bars = [bar(1, 3), bar(4, 9, trades=5), bar(10, 12)]
    assert mark_complete(bars, from_start=True, to_end=True) == {0: False, 1: False, 2: True}


def test_a_hole_between_two_bars_marks_both():
    """Trade 10 is missing: it belongs to one of the two minutes, no one knows which."""
    bars = [bar(1, 3), bar(4, 9), bar(11, 12), bar(13, 13)]
    flags = mark_complete(bars, from_start=True, to_end=True)
    assert flags == {0: False, 1: False, 2: False, 3: True}


def test_neighbours_at_the_edges_are_context_only():
    bars = [bar(1, 3), bar(4, 9), bar(11, 12)]
    assert mark_complete(bars, from_start=False, to_end=False) == {1: False}
    assert mark_complete(bars, from_start=False, to_end=True) == {1: False, 2: False}


def test_ids_that_are_not_numbers_leave_completeness_unknown():
    bars = [bar(1, 3), bar(None, None), bar(5, 6), bar(7, 8)]
    assert mark_complete(bars, from_start=True, to_end=True) == {
        0: None, 1: None, 2: None, 3: True,
    }  # fmt: skip


def test_spark_bounds_are_numeric_and_unknown_for_other_ids(spark):
    trades = silver(spark, [
        ("kraken", "BTC-USD", "9", "1", "1", "buy", 1.0),
        ("kraken", "BTC-USD", "10", "2", "1", "buy", 2.0),  # 10 > 9 as numbers, not as text
        ("kraken", "ETH-USD", "7", "1", "1", "buy", 1.0),
        ("kraken", "ETH-USD", "a-7", "1", "1", "buy", 2.0),
        ("kraken", "SOL-USD", "1234567890123456789", "1", "1", "buy", 1.0),  # past a BIGINT
    ])  # fmt: skip
    rows = candles_1m(trades).orderBy("symbol").collect()
    assert [(r.symbol, r.min_trade_id, r.max_trade_id, r.complete) for r in rows] == [
        ("BTC-USD", 9, 10, None), ("ETH-USD", None, None, None), ("SOL-USD", None, None, None),
    ]  # fmt: skip


def trades(*ids_at):
    """(trade id, seconds after BASE) → BTC-USDT trades at price 100 + id, qty 1."""
    return [("binance", "BTC-USDT", str(i), str(100 + i), "1", "buy", s) for i, s in ids_at]


def flags(spark, settings):
    candles = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
    rows = candles.orderBy("minute").collect()
    return {int((r.minute - BASE).total_seconds() // 60): (r.trades, r.complete) for r in rows}


def test_a_recovered_trade_completes_its_bar_and_its_neighbour_once(spark, job_lake):
    """Trades 1-9 over minutes 0-2 with 6 missing, then 12 missing between minutes 3 and 4:
    each recovered trade (on time) completes its bar and the neighbour it joins, though
    that neighbour's minute is not in its batch; the same after a restart, when the writer
    reads the neighbours from the table."""
    settings = job_lake("refine")
    writer = RefineWriter(settings)
    writer(batch(silver(spark, trades((1, 0), (2, 10), (3, 20), (4, 60), (5, 70), (7, 80),
                                      (8, 120), (9, 130)))), 0)  # fmt: skip
    assert flags(spark, settings) == {0: (3, False), 1: (3, False), 2: (2, True)}
    writer(batch(silver(spark, trades((6, 75)))), 1)
    assert flags(spark, settings)[1] == (4, True)

    writer(batch(silver(spark, trades((10, 180), (11, 190), (13, 240), (14, 250)))), 2)
    assert flags(spark, settings) == {
        0: (3, False), 1: (4, True), 2: (2, True), 3: (2, False), 4: (2, False),
    }  # fmt: skip
    writer(batch(silver(spark, trades((12, 245)))), 3)  # minute 4: minute 3 not in the batch
    assert {m: flags(spark, settings)[m] for m in (3, 4)} == {3: (2, True), 4: (3, True)}

    # A restart: a new writer reads the bars around its first batch from the table.
    restarted = RefineWriter(settings, app_id="after-restart")
    restarted(batch(silver(spark, trades((16, 300), (17, 310)))), 0)
    assert {m: flags(spark, settings)[m] for m in (4, 5)} == {4: (3, False), 5: (2, False)}
    again = RefineWriter(settings, app_id="after-second-restart")
    again(batch(silver(spark, trades((15, 305)))), 0)
    assert flags(spark, settings) == {
        0: (3, False), 1: (4, True), 2: (2, True), 3: (2, True), 4: (3, True), 5: (3, True),
    }  # fmt: skip
    history = DeltaTable.forPath(spark, settings.table_path(tables.GOLD_CANDLES_1M)).history()
    merges = history.where(F.col("operation") == "MERGE").count()
    assert merges == 6  # each batch once


def test_tables_from_before_completeness_gain_its_columns(spark, job_lake):
    """Candles written by a version without the id bounds and ``complete``: refine's start adds
    them (null in the older rows) and its MERGEs fill them."""
    settings = job_lake("refine")
    path = settings.table_path(tables.GOLD_CANDLES_1M)
    old = candles_1m(silver(spark, trades((1, 0)))).drop("min_trade_id", "max_trade_id", "complete")
    old.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)
    ensure_tables(spark, settings, "refine")
    ensure_tables(spark, settings, "refine")  # idempotent
    candles = spark.read.format("delta").load(path)
    assert candles.columns[-4:] == ["updated_at", "min_trade_id", "max_trade_id", "complete"]
    assert [tuple(r) for r in candles.select("min_trade_id", "complete").collect()] == [
        (None, None)
    ]
    RefineWriter(settings)(batch(silver(spark, trades((2, 10), (3, 70)))), 0)
    assert flags(spark, settings) == {0: (2, None), 1: (1, None)}
    assert D(spark.read.format("delta").load(path).orderBy("minute").first().close) == D(102)
