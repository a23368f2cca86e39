"""Candle math, the MERGE fold, late trades and the derived tables on hand-built trades; the
refine query's foreachBatch function on local Delta tables (the candles MERGE, lateness, the
derived tables' cadence and restart)."""

import datetime as dt
import shutil
from decimal import Decimal as D  # noqa: N817 (short: used in every expected row)

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from cryptolake.common.candles import half_even_quotient
from cryptolake.jobs import tables
from cryptolake.jobs.refine import DerivedRefreshFailed, RefineWriter
from cryptolake.jobs.tables import SILVER_SCHEMA
from cryptolake.jobs.transforms import (
    candles_1m,
    fold_bar,
    late_rows,
    market_id,
    period_stats,
    sma_5m,
    split_late,
)

BASE = dt.datetime(2025, 3, 1, 12, 0)


def silver(spark, trades):
    """trades: (exchange, symbol, trade_id, price, qty, side, seconds after BASE)."""
    rows = []
    for exchange, symbol, trade_id, price, qty, side, seconds in trades:
        at = BASE + dt.timedelta(seconds=seconds)
        rows.append((exchange, symbol, trade_id, D(price), D(qty), side, at, at, at.date(),
                     at.year, at.month, at.day, at.hour, "t", 0, 0))  # fmt: skip
    return spark.createDataFrame(rows, SILVER_SCHEMA)


def batch(frame):
    """Silver rows as a refine batch: parsed, each valid (no reason), as the query passes it."""
    null = F.lit(None).cast("string")
    return (
        frame.withColumn("kafka_timestamp", F.col("ingest_time"))
        .withColumn("raw_value", null)
        .withColumn("ingest_date", F.to_date("ingest_time"))
        .withColumn("reason", null)
        .withColumn("detail", null)
    )


def bar_values(frame, *columns):
    return [tuple(row) for row in frame.orderBy("exchange", "symbol", "minute").select(*columns)
            .collect()]  # fmt: skip


def test_candle_follows_kline_semantics(spark):
    trades = silver(spark, [
        ("binance", "BTC-USDT", "10", "100", "1", "buy", 0.0),       # 12:00:00 first
        ("binance", "BTC-USDT", "12", "105", "2", "sell", 20.5),
        ("binance", "BTC-USDT", "11", "95", "1", "buy", 20.5),       # tie on time: id 11 < 12
        ("binance", "BTC-USDT", "13", "101", "0.5", "buy", 59.999),  # last of the minute
        ("binance", "BTC-USDT", "14", "102", "1", "sell", 60.0),     # next minute [12:01, 12:02)
    ])  # fmt: skip
    bars = candles_1m(trades)
    assert bar_values(bars, "minute", "open", "high", "low", "close", "volume", "trades") == [
        (BASE, D(100), D(105), D(95), D(101), D("4.5"), 4),
        (BASE + dt.timedelta(minutes=1), D(102), D(102), D(102), D(102), D(1), 1),
    ]
    first = bars.orderBy("minute").first()
    assert (first.buy_volume, first.sell_volume) == (D("2.5"), D(2))
    assert first.quote_volume == D("100") + D("210") + D("95") + D("50.5")
    assert first.vwap == half_even_quotient(D("455.5"), D("4.5"))  # 101.222…222 (18 decimals)
    assert (first.first_trade_id, first.last_trade_id) == ("10", "13")


def test_ties_on_time_order_numeric_ids_numerically(spark):
    trades = silver(spark, [
        ("kraken", "BTC-USD", "9", "1", "1", "buy", 1.0),
        ("kraken", "BTC-USD", "10", "2", "1", "buy", 1.0),  # "10" > "9" as a number
    ])  # fmt: skip
    assert bar_values(candles_1m(trades), "open", "close") == [(D(1), D(2))]


def test_folding_on_the_driver_equals_the_whole_minute_at_once(spark):
    """``fold_bar`` (refine folds a batch's bars into the bars it keeps) against Spark's
    ``candles_1m`` of every trade at once, field for field with ==."""
    early = [
        ("binance", "BTC-USDT", "10", "50.01", "1.00000001", "buy", 30.0),
        ("binance", "BTC-USDT", "9", "70", "0.5", "sell", 30.0),
    ]  # same time: id 9 first
    late = [("binance", "BTC-USDT", "2", "40.12345678", "3.12345678", "sell", 10.0),
            ("binance", "BTC-USDT", "11", "60", "0.00000001", "buy", 59.0),
            ("binance", "ETH-USDT", "4", "3000.5", "2", "buy", 45.0)]  # fmt: skip

    def bars(trades):
        return {(r.symbol, r.minute): r.asDict() for r in
                candles_1m(silver(spark, trades)).drop("vwap").collect()}  # fmt: skip

    stored = {key: fold_bar(None, bar) for key, bar in bars(early).items()}
    folded = {key: fold_bar(stored.get(key), bar) for key, bar in bars(late).items()}
    whole = {(r.symbol, r.minute): r.asDict() for r in candles_1m(silver(spark, early + late))
             .collect()}  # fmt: skip
    assert folded.keys() == whole.keys()
    for key, bar in folded.items():
        assert {k: v for k, v in bar.items() if k != "updated_at"} == {
            k: v for k, v in whole[key].items() if k != "updated_at"
        }, key
    btc = folded[("BTC-USDT", BASE)]
    assert (btc["open"], btc["close"], btc["first_trade_id"]) == (D("40.12345678"), D(60), "2")


def test_gold_merge_of_a_later_batch_equals_the_whole_minute_at_once(spark, job_lake):
    early = [("binance", "BTC-USDT", "1", "50.01", "1.00000001", "buy", 30.0)]
    later = [("binance", "BTC-USDT", "2", "40.12345678", "3.12345678", "sell", 10.0),
             ("binance", "BTC-USDT", "3", "60", "0.00000001", "buy", 45.0),
             ("binance", "ETH-USDT", "4", "3000.5", "2", "buy", 45.0)]  # fmt: skip
    settings = job_lake("refine")
    writer = RefineWriter(settings)
    writer(batch(silver(spark, early)), 0)
    writer(batch(silver(spark, later)), 1)
    merged = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
    whole = candles_1m(silver(spark, early + later))
    # ``complete`` is judged by the writer among neighbours (tests/test_completeness.py).
    assertDataFrameEqual(
        merged.drop("updated_at", "complete"), whole.drop("updated_at", "complete")
    )
    btc = merged.where(F.col("symbol") == "BTC-USDT").first()
    assert (btc.open, btc.close, btc.trades) == (D("40.12345678"), D(60), 3)
    quote = D("50.01") * D("1.00000001") + D("40.12345678") * D("3.12345678") + D("60e-8")
    assert btc.quote_volume == quote  # 16 decimals: a 6-decimal cut would differ
    assert btc.vwap == half_even_quotient(quote, D("4.12345680"))


def minute_us(minutes: float) -> int:
    return int((BASE + dt.timedelta(minutes=minutes)).replace(tzinfo=dt.UTC).timestamp() * 1e6)


def test_late_trades_split_off_at_their_markets_watermark_and_carry_reason_late(spark):
    trades = silver(spark, [
        ("binance", "BTC-USDT", "1", "10", "1", "buy", 0.0),
        ("binance", "BTC-USDT", "2", "11", "1", "buy", 200.0),
        ("binance", "ETH-USDT", "3", "12", "1", "buy", 0.0),   # its own watermark is earlier
        ("kraken", "BTC-USDT", "4", "13", "1", "buy", 0.0),    # a market with no watermark yet
    ])  # fmt: skip
    watermarks = {market_id("binance", "BTC-USDT"): minute_us(100 / 60),
                  market_id("binance", "ETH-USDT"): minute_us(-1)}  # fmt: skip
    on_time, late = split_late(trades, watermarks)
    assert sorted(r.trade_id for r in on_time.collect()) == ["2", "3", "4"]
    rows = late_rows(late, watermarks).collect()
    assert [(r.reason, r.layer, r.kafka_topic) for r in rows] == [("late", "gold", "t")]
    assert '"trade_id":"1"' in rows[0].raw_value
    assert "2025-03-01 12:01:40" in rows[0].detail
    everything, nothing = split_late(trades, {})
    assert (everything.count(), nothing.count()) == (4, 0)


def test_one_markets_clock_never_makes_another_markets_trades_late(spark, job_lake):
    """Lateness is per (exchange, symbol): a market whose newest trade is two hours ahead does
    not move the cut-off of the others (it did when gold kept one watermark for all)."""
    settings = job_lake("refine")
    quarantined = []
    writer = RefineWriter(settings, on_batch=lambda outcome: quarantined.append(outcome.late))
    writer(batch(silver(spark, [("binance", "BTC-USDT", "1", "100", "1", "buy", 0.0),
                                ("binance", "ETH-USDT", "2", "10", "1", "buy", 7200.0)])),
           0)  # fmt: skip
    writer(batch(silver(spark, [("binance", "BTC-USDT", "3", "101", "1", "buy", 60.0)])), 1)
    candles = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
    assert candles.agg(F.sum("trades")).first()[0] == 3
    assert quarantined == [0, 0]


def test_sma_5m_slides_by_one_minute_over_closes(spark):
    trades = silver(spark, [
        ("binance", "BTC-USDT", str(m), str(100 + 10 * m), "1", "buy", 60.0 * m) for m in range(6)
    ])  # closes 100, 110, …, 150 at 12:00 … 12:05  # fmt: skip
    sma = sma_5m(candles_1m(trades))
    full = sma.where(F.col("bars") == 5).orderBy("window_start")
    assert [(r.window_start, r.window_end, r.sma) for r in full.collect()] == [
        (BASE, BASE + dt.timedelta(minutes=5), D(120)),
        (BASE + dt.timedelta(minutes=1), BASE + dt.timedelta(minutes=6), D(130)),
    ]


def test_hourly_and_daily_stats_take_open_first_and_close_last(spark):
    trades = silver(spark, [
        ("binance", "BTC-USDT", "1", "100", "1", "buy", 0.0),
        ("binance", "BTC-USDT", "2", "120", "1", "buy", 1800.0),
        ("binance", "BTC-USDT", "3", "90", "2", "sell", 3599.0),
        ("binance", "BTC-USDT", "4", "95", "1", "buy", 3600.0),  # the next hour
    ])  # fmt: skip
    candles = candles_1m(trades)
    hourly = period_stats(candles, "hour").orderBy("period_start").collect()
    assert [(r.open, r.close, r.high, r.low, r.volume, r.trades) for r in hourly] == [
        (D(100), D(90), D(120), D(90), D(4), 3),
        (D(95), D(95), D(95), D(95), D(1), 1),
    ]
    assert hourly[0].change_pct == D(-10)
    assert hourly[0].period_end == BASE + dt.timedelta(hours=1)
    (daily,) = period_stats(candles, "day").collect()
    assert (daily.open, daily.close, daily.trades, daily.period_start) == (
        D(100),
        D(95),
        4,
        dt.datetime(2025, 3, 1),
    )
    assert daily.change_pct == D(-5)


def test_derived_tables_follow_their_cadence_and_catch_up_after_a_restart(spark, job_lake):
    settings = job_lake("refine")

    def trade_in_minute(minute: int):
        return batch(
            silver(spark, [("binance", "BTC-USDT", str(minute), "100", "1", "buy", minute * 60.0)])
        )

    def trades_in(table: str) -> int:
        frame = spark.read.format("delta").load(settings.table_path(table))
        return frame.agg(F.sum("trades")).first()[0] or 0

    hourly_interval = 3600.0
    first_run = RefineWriter(settings, derived_interval_s=hourly_interval)
    first_run(trade_in_minute(0), 0)  # nothing refreshed yet: refreshed at once, in background
    first_run.derived.wait()
    first_run(trade_in_minute(1), 1)  # inside the interval: the candles only
    assert (trades_in(tables.GOLD_CANDLES_1M), trades_in(tables.GOLD_STATS_HOURLY)) == (2, 1)

    # A stop here would lose minute 1's refresh; the restarted job finds it by updated_at. Its
    # own batch is an hour later, so only that catch-up can bring minute 1 into hour 12's stats.
    restarted = RefineWriter(settings, derived_interval_s=hourly_interval)
    restarted(trade_in_minute(61), 2)
    restarted.derived.wait()
    assert trades_in(tables.GOLD_CANDLES_1M) == 3
    hourly = spark.read.format("delta").load(settings.table_path(tables.GOLD_STATS_HOURLY))
    by_hour = {row.period_start.hour: row.trades for row in hourly.collect()}
    assert by_hour == {12: 2, 13: 1}
    assert trades_in(tables.GOLD_STATS_DAILY) == 3
    sma = spark.read.format("delta").load(settings.table_path(tables.GOLD_SMA_5M))
    windows = {row.window_start.strftime("%H:%M"): row.trades for row in sma.collect()}
    assert windows["12:01"] == 1 and windows["12:00"] == 2 and windows["13:01"] == 1


def test_a_failed_background_refresh_fails_the_next_batch(spark, job_lake):
    settings = job_lake("refine")
    writer = RefineWriter(settings, derived_interval_s=0.01)
    writer(batch(silver(spark, [("binance", "BTC-USDT", "1", "100", "1", "buy", 60.0)])), 0)
    writer.derived.wait()
    # The refresh of the next batch's bar finds no hourly table to upsert into.
    shutil.rmtree(settings.table_path(tables.GOLD_STATS_HOURLY))
    writer(batch(silver(spark, [("binance", "BTC-USDT", "2", "101", "1", "buy", 120.0)])), 1)
    writer.derived.wait()
    with pytest.raises(DerivedRefreshFailed):
        writer(batch(silver(spark, [("binance", "BTC-USDT", "3", "102", "1", "buy", 180.0)])), 2)


def test_a_forged_future_record_cannot_make_later_trades_late(spark, job_lake):
    """Two batches through the parse and refine's writer: a record whose event and ingest times are
    five hours ahead (a clock the producer set), then valid trades. The forged record is judged
    against the broker's append time and quarantined; every valid trade lands in Gold. (When
    silver compared event time with the record's own ingest_time and gold kept one watermark,
    the forged record passed and sent every later trade to quarantine as late.)"""
    import json  # noqa: PLC0415

    from cryptolake.jobs.tables import BRONZE_SCHEMA  # noqa: PLC0415
    from cryptolake.jobs.transforms import parse_trades  # noqa: PLC0415

    broker = BASE + dt.timedelta(seconds=30)
    base_us = int(BASE.replace(tzinfo=dt.UTC).timestamp() * 1e6)
    forged_us = base_us + 5 * 3600 * 1_000_000

    def bronze(batch: list[tuple[str, int, int]], first_offset: int):
        values = [json.dumps({"schema_version": 1, "exchange": "binance", "symbol": "BTC-USDT",
                              "trade_id": trade_id, "price": "100.5", "qty": "1", "side": "buy",
                              "event_time": event_us, "ingest_time": ingest_us}).encode()
                  for trade_id, event_us, ingest_us in batch]  # fmt: skip
        rows = [(None, value, "t", 0, first_offset + i, broker, broker, broker.date())
                for i, value in enumerate(values)]  # fmt: skip
        return parse_trades(spark.createDataFrame(rows, BRONZE_SCHEMA))

    settings = job_lake("refine")
    writer = RefineWriter(settings)
    first = bronze([("1", base_us, base_us), ("666", forged_us, forged_us)], 0)
    assert [r.reason for r in first.where("reason IS NOT NULL").collect()] == ["bad_timestamp"]
    writer(first, 0)
    second = bronze([("2", base_us + 10_000_000, base_us + 10_000_000),
                     ("3", base_us + 20_000_000, base_us + 20_000_000)], 2)  # fmt: skip
    writer(second, 1)
    candles = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
    assert candles.agg(F.sum("trades")).first()[0] == 3
    quarantine = spark.read.format("delta").load(settings.table_path(tables.SILVER_QUARANTINE))
    assert [row.reason for row in quarantine.collect()] == ["bad_timestamp"]
