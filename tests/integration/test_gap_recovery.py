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
from datetime import UTC, datetime

import httpx
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from cryptolake.api.sample import append_bars
from cryptolake.common.candles import reference_bars
from cryptolake.common.settings import LakeSettings
from cryptolake.common.tables import GOLD_CANDLES_1M, GOLD_KLINE_CHECKS
from cryptolake.common.timeutil import now_us
from cryptolake.jobs import tables
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.settings import JobSettings
from cryptolake.producer.app import run_until
from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.gaps import GapTracker
from cryptolake.producer.kafka_sink import ensure_topics
from cryptolake.producer.klines import KLINE_FIELDS, MINUTE_US, CheckStatus
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.reconcile import KlineSource, Reconciler
from cryptolake.producer.recovery import PacedRest, RecoverySettings
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator import wire
from cryptolake.producer.simulator.market import Market
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


def test_the_checks_match_a_true_gold_and_name_exactly_the_bars_spoiled_on_purpose(
    tmp_path,
) -> None:
    """Gold equal to the market (the oracle's candles of the simulator's trades): every
    minute matches. Then one bar's trade count is changed and another bar deleted: that
    minute alone is a mismatch naming `trades` (its ids are all there: nothing is asked
    again), the other is missing in Gold, and exactly its trades are asked of the history."""
    started = now_us()
    minute0 = started - started % MINUTE_US - 8 * MINUTE_US
    market = Market(SYMBOLS, 5, 15.0, start_us=minute0)
    trades = market.trades_until(minute0 + 6 * MINUTE_US - 1)
    lake = LakeSettings(table_root=str(tmp_path / "lake"))
    uri = lake.table_uri(GOLD_CANDLES_1M)
    rows = []
    for (symbol, minute), bar in wire.gold_candles("binance", trades).items():
        moment = datetime.fromtimestamp(minute * 60, UTC)
        rows.append({**bar, "exchange": "simulator", "symbol": symbol, "minute": moment,
                     "trade_date": moment.date(), "complete": True})  # fmt: skip
    append_bars(uri, rows)
    bars = {(r["symbol"], int(r["minute"].timestamp()) * 1_000_000): r for r in rows}

    async def check_all() -> tuple[list[dict], list]:
        async with SimulatorServer(SimulatorConfig(symbols=SYMBOLS)) as sim:
            feed = sim.feeds["binance"]
            feed.market.trades_until = lambda _now: []
            feed.history.clear()
            for trade in trades:
                feed.history.setdefault(trade.symbol, []).append(trade)
            adapter = adapter_class("binance")(
                SYMBOLS, label="simulator", rest_url=sim.url("binance").replace("ws", "http")
            )
            gaps = GapTracker()
            rest = PacedRest(adapter, RecoverySettings(max_attempts=1), "test")
            reconciler = Reconciler([KlineSource(adapter, rest, gaps)], lake, ProducerMetrics())
            for each in reconciler.markets:
                each.checked_until_us = minute0
            async with httpx.AsyncClient() as client:
                now = minute0 + 6 * MINUTE_US + int(reconciler.settings.delay_s * 1_000_000)
                checked = await reconciler.round(client, now)
            return checked, [gap for open_gaps in gaps.open.values() for gap in open_gaps]

    def statuses(checked: list[dict]) -> dict[tuple[str, int], tuple[str, list[str]]]:
        return {(r["symbol"], int(r["minute"].timestamp()) * 1_000_000):
                (r["status"], r["mismatched"]) for r in checked}  # fmt: skip

    checked, asked = asyncio.run(check_all())
    assert statuses(checked) == {key: ("match", []) for key in bars}
    assert len(bars) >= 10 and asked == []

    (eth, spoiled), (btc, deleted) = ("ETH-USDT", minute0 + 2 * MINUTE_US), (
        "BTC-USDT", minute0 + 3 * MINUTE_US)  # fmt: skip

    def bar_of(symbol: str, minute: int) -> str:
        return f"symbol = '{symbol}' AND min_trade_id = {bars[(symbol, minute)]['min_trade_id']}"

    table = DeltaTable(uri)
    table.update(updates={"trades": "trades + 1"}, predicate=bar_of(eth, spoiled))
    table.delete(bar_of(btc, deleted))
    checked, asked = asyncio.run(check_all())
    expected = {key: ("match", []) for key in bars}
    expected[(eth, spoiled)] = ("mismatch", ["trades"])
    expected[(btc, deleted)] = ("missing_in_gold", list(KLINE_FIELDS))
    assert statuses(checked) == expected
    lost = bars[(btc, deleted)]
    assert [(g.symbol, g.first_id, g.last_id) for g in asked] == [
        (btc, lost["min_trade_id"], lost["max_trade_id"])]  # fmt: skip
