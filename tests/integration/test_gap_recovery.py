"""Gap-free trades through the whole lakehouse path: the simulated exchange drops the
connection every 1.5 s, silently skips every 7th frame and fails every 3rd REST answer; the
producer recovers what it missed from the REST history, and the Spark jobs read the topic.
Silver holds every trade the market made between the first and the last id seen, exactly
once, every Gold candle equals the Decimal recomputation of those trades and says it is
complete (but each market's first, which the producer joined mid-minute), and the check
against the exchange's own klines finds exactly the minutes whose trades Gold lacks (the
market traded before the producer connected and after it stopped)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from cryptolake.common.candles import reference_bars
from cryptolake.common.tables import GOLD_KLINE_CHECKS
from cryptolake.jobs import tables
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.settings import JobSettings
from cryptolake.producer.app import run_until
from cryptolake.producer.kafka_sink import ensure_topics
from cryptolake.producer.klines import MINUTE_US, CheckStatus
from cryptolake.producer.reconcile import KlineSource, Reconciler
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator import wire
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer

pytestmark = pytest.mark.integration

SYMBOLS = ["BTC-USDT", "ETH-USDT"]
FIELDS = (
    "open", "high", "low", "close", "volume", "quote_volume", "vwap", "trades", "buy_volume",
    "sell_volume", "first_trade_id", "last_trade_id",
)  # fmt: skip


def test_silver_and_gold_are_complete_after_drops_silent_loss_and_rest_failures(
    spark, kafka_broker, tmp_path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = ProducerSettings(
        source="simulator", simulator_protocol="binance", symbols=",".join(SYMBOLS),
        bootstrap_servers=kafka_broker.bootstrap_servers, trades_topic=f"gaps.{suffix}.trades",
        dlq_topic=f"gaps.{suffix}.dlq", metrics_port=0, reconnect_min_s=0.05,
        reconnect_max_s=0.5, gap_grace_s=0.5,
    )  # fmt: skip
    config = SimulatorConfig(seed=23, rate_per_s=400, symbols=SYMBOLS, disconnect_every_s=1.5,
                             skip_frame_every=7, rest_fail_every=3, max_trades=3000)  # fmt: skip

    jobs = JobSettings(bootstrap_servers=kafka_broker.bootstrap_servers,
                       trades_topic=settings.trades_topic, table_root=str(tmp_path / "lake"),
                       starting_offsets="earliest", metrics_port=0)  # fmt: skip

    def refine() -> None:
        for query in start_streams(spark, jobs, "refine", available_now=True):
            query.awaitTermination()

    async def produce() -> tuple[dict[str, list], int, int, Reconciler, list[dict], list]:
        async with SimulatorServer(config) as sim:
            ensure_topics(settings)
            local = settings.model_copy(update={"simulator_url": sim.url("binance"),
                                                "table_root": jobs.table_root})  # fmt: skip
            producer, _ = await run_until(
                local, lambda p: sim.budget_exhausted and p.feeds[0].recovery.idle,
                timeout_s=120,
            )  # fmt: skip
            sim.feeds["binance"].market.trades_until = lambda _now: []  # the market closes
            await asyncio.sleep(0.2)
            history = {symbol: list(trades) for symbol, trades in
                       sim.feeds["binance"].history.items()}  # fmt: skip
            await asyncio.to_thread(refine)
            # The exchange's klines of every minute the market traded, against Gold.
            feed = producer.feeds[0]
            reconciler = Reconciler(
                [KlineSource(feed.adapter, feed.recovery.rest, feed.gaps)], local, producer.metrics
            )
            times = [t.event_time_us for trades in history.values() for t in trades]
            start, end = min(times) - min(times) % MINUTE_US, max(times) + MINUTE_US
            for market in reconciler.markets:
                market.checked_until_us = start
            async with httpx.AsyncClient() as client:
                now = end + int(reconciler.settings.delay_s * 1_000_000)
                rows = await reconciler.round(client, now)
            asked = [gap for gaps in feed.gaps.open.values() for gap in gaps]
            return history, sim.disconnects, feed.recovery.recovered, reconciler, rows, asked

    history, disconnects, recovered, reconciler, checks, asked = asyncio.run(produce())
    assert disconnects >= 3 and recovered > 0

    silver = spark.read.format("delta").load(jobs.table_path(tables.SILVER_TRADES))
    rows = silver.select("symbol", "trade_id").collect()
    assert len(rows) == len({(r.symbol, r.trade_id) for r in rows})  # exactly once
    seen: dict[str, list[int]] = {}
    for row in rows:
        seen.setdefault(row.symbol, []).append(int(row.trade_id))
    for symbol, ids in seen.items():
        assert sorted(ids) == list(range(min(ids), max(ids) + 1)), symbol  # no hole in silver
    market = market_trades(history, seen)

    candles = (
        spark.read.format("delta")
        .load(jobs.table_path(tables.GOLD_CANDLES_1M))
        .withColumn("minute_us", F.unix_micros("minute"))
        .collect()
    )
    actual = {(row.symbol, row.minute_us // 60_000_000): {f: row[f] for f in FIELDS}
              for row in candles}  # fmt: skip
    expected = {key: {f: bar[f] for f in FIELDS} for key, bar in reference_bars(market).items()}
    assert len(expected) >= 2
    assert actual == expected

    # Complete: every bar but each market's first (no trade is missing in silver).
    first = {symbol: min(minute for s, minute in actual if s == symbol) for symbol in seen}
    assert {(row.symbol, row.minute_us // 60_000_000): row.complete for row in candles} == {
        (symbol, minute): minute != first[symbol] for symbol, minute in actual
    }  # fmt: skip

    written = DeltaTable(str(tmp_path / "lake" / GOLD_KLINE_CHECKS)).to_pyarrow_table()
    assert sorted(written.to_pylist(), key=repr) == sorted(checks, key=repr)
    got_status = {(row["symbol"], int(row["minute"].timestamp()) * 1_000_000): row["status"]
                  for row in checks}  # fmt: skip
    assert got_status == expected_kline_status(history, seen)
    # The run lasts seconds: its first minute began before the producer connected, its last
    # went on after it stopped (a whole matching minute is shown by the simulator's tests).
    assert "mismatch" in set(got_status.values())
    mismatches = [set(row["mismatched"]) for row in checks if row["status"] == "mismatch"]
    assert all({"volume", "trades"} <= fields for fields in mismatches)
    assert reconciler.counts[CheckStatus.MATCH] == list(got_status.values()).count("match")

    assert_short_minutes_asked_again(history, seen, got_status, asked, reconciler)


def expected_kline_status(history: dict[str, list], seen: dict[str, list[int]]) -> dict:
    """Per (symbol, minute) of the market: a match when silver holds all its trades, a mismatch
    when it holds some, missing in Gold when it holds none."""
    expected = {}
    for symbol, trades in history.items():
        span = range(min(seen[symbol]), max(seen[symbol]) + 1)
        by_minute: dict[int, list[bool]] = {}
        for trade in trades:
            minute = trade.event_time_us - trade.event_time_us % MINUTE_US
            by_minute.setdefault(minute, []).append(trade.trade_id in span)
        for minute, held in by_minute.items():
            status = "match" if all(held) else "mismatch" if any(held) else "missing_in_gold"
            expected[(symbol, minute)] = status
    return expected


def market_trades(history: dict[str, list], seen: dict[str, list[int]]) -> list[dict]:
    """The market's trades between each symbol's first and last id seen, as on the wire."""
    market = []
    for symbol, ids in seen.items():
        span = range(min(ids), max(ids) + 1)
        for trade in history[symbol]:
            if trade.trade_id in span:
                truth = wire.wire_truth("binance", trade)
                market.append({"symbol": symbol, "trade_id": str(trade.trade_id),
                               "price": truth.price, "qty": truth.qty, "side": trade.side,
                               "event_time": truth.event_time_us})  # fmt: skip
    return market


def assert_short_minutes_asked_again(
    history: dict[str, list], seen: dict[str, list[int]], got_status: dict, asked: list,
    reconciler: Reconciler,
) -> None:  # fmt: skip
    """Each short minute asked the history again for every id of its trades Silver lacks, and
    for no id Silver holds. Without a bar on either side the exchange's count of the missing
    trades is asked for on both sides (at most twice what is missing); a minute without a bar
    and without neighbours cannot be bounded: nothing is asked for it."""
    asked_ids = {(gap.symbol, i) for gap in asked for i in range(gap.first_id, gap.last_id + 1)}
    short = {key for key, status in got_status.items() if status == "mismatch"}
    held = {(symbol, i) for symbol, ids in seen.items() for i in ids}
    lacking = {(symbol, t.trade_id) for symbol, trades in history.items() for t in trades
               if (symbol, t.event_time_us - t.event_time_us % MINUTE_US) in short
               and (symbol, t.trade_id) not in held}  # fmt: skip
    assert lacking and lacking <= asked_ids and not asked_ids & held
    assert len(asked_ids) <= 2 * len(lacking) and reconciler.refetched == len(asked_ids)
