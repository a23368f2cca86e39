"""Kline checks: what checking a day of Gold candles against the exchange's klines costs. A
simulator (its own process, Binance format) serves the klines of a synthetic day of trades
per market; Gold holds the same day's candles (the Decimal oracle's bars, written with
delta-rs); one round of the producer's ``Reconciler`` checks every minute of the day. Prints
where the time goes and, as its last line,
``kline_check_s_per_market_day=<wall> cpu_s_per_market_day=<cpu> minutes=<n> mismatches=<n>``.

    make bench-klines                                       # 3 markets, 20 trades a minute
    .venv/bin/python benchmarks/bench_klines.py --markets 10 --trades-per-minute 100

Wall time is mostly the exchange's pace (Binance: 1,000 klines a request, one request per
0.5 s, the budget the checks share with the recovery); CPU is the producer's process only
(the simulator runs in another). The run fails unless every minute matches.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import resource
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from benchlib import build_parser, scratch_dir

from cryptolake.api.sample import append_bars
from cryptolake.common.candles import MINUTE_US
from cryptolake.common.settings import LakeSettings
from cryptolake.common.tables import GOLD_CANDLES_1M
from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.klines import CheckStatus
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.reconcile import (
    KlineSource,
    Reconciler,
    ReconcileSettings,
    append_checks,
    open_candles,
    read_gold_bars,
)
from cryptolake.producer.recovery import PacedRest, RecoverySettings
from cryptolake.producer.simulator import wire
from cryptolake.producer.simulator.market import SimTrade
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer
from cryptolake.stack.kafka import free_port

DAY_MINUTES = 1440
LABEL = "simulator"


def day_of_trades(symbol: str, day_start_us: int, per_minute: int, seed: int) -> list[SimTrade]:
    """``per_minute`` trades in each minute of the day, ids consecutive, ms timestamps."""
    rng = random.Random(seed)
    price, trades, trade_id = Decimal(60_000), [], 1_000_000
    for minute in range(DAY_MINUTES):
        for n in range(per_minute):
            price = max(price + Decimal(rng.randint(-50, 50)) / 100, Decimal(1))
            qty = Decimal(rng.randint(1, 100_000)) / 100_000
            at = day_start_us + minute * MINUTE_US + (n * 60_000 // per_minute) * 1000
            trades.append(SimTrade(symbol, trade_id, str(price), str(qty),
                                   rng.choice(("buy", "sell")), at))  # fmt: skip
            trade_id += 1
    return trades


def gold_rows(trades: list[SimTrade]) -> list[dict]:
    """Gold's candles of these trades as a correct pipeline makes them (complete bars)."""
    rows = []
    for (symbol, minute), bar in wire.gold_candles("binance", trades).items():
        moment = datetime.fromtimestamp(minute * 60, UTC)
        rows.append({**bar, "exchange": LABEL, "symbol": symbol, "minute": moment,
                     "trade_date": moment.date(), "complete": True})  # fmt: skip
    return rows


def serve_klines(port: int, history: dict[str, list[SimTrade]], ready: Any) -> None:
    """The simulator in this (child) process, its Binance history replaced by ``history``."""

    async def serve() -> None:
        config = SimulatorConfig(symbols=list(history), rate_per_s=0.001)
        async with SimulatorServer(config, port=port) as sim:
            feed = sim.feeds["binance"]
            feed.market.trades_until = lambda _now: []
            feed.history.clear()
            feed.history.update(history)
            ready.set()
            await asyncio.Event().wait()

    asyncio.run(serve())


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def check_day(lake: LakeSettings, port: int, symbols: list[str], day_start: int) -> tuple:
    adapter = adapter_class("binance")(symbols, label=LABEL,
                                       rest_url=f"http://127.0.0.1:{port}/binance")  # fmt: skip
    rest = PacedRest(adapter, RecoverySettings(), "bench")
    settings = ReconcileSettings(delay_s=180, lookback_minutes=DAY_MINUTES)
    reconciler = Reconciler([KlineSource(adapter, rest)], lake, ProducerMetrics(), settings)
    for market in reconciler.markets:
        market.checked_until_us = day_start
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        now = day_start + DAY_MINUTES * MINUTE_US + 180 * 1_000_000
        cpu, started = cpu_now(), time.monotonic()
        rows = await reconciler.round(client, now)
        return rows, time.monotonic() - started, cpu_now() - cpu, reconciler


def parts(lake: LakeSettings, symbols: list[str], day_start: int, rows: list[dict],
          root: Path) -> dict[str, float]:  # fmt: skip
    """The round's lake work timed alone: reading a market-day of Gold, one commit of checks."""
    table = open_candles(lake)
    started = time.monotonic()
    for symbol in symbols:
        read_gold_bars(table, LABEL, symbol, day_start, day_start + DAY_MINUTES * MINUTE_US)
    read_s = (time.monotonic() - started) / len(symbols)
    started = time.monotonic()
    append_checks(LakeSettings(table_root=str(root / "scratch-lake")), rows)
    return {"gold_read_s_per_market": read_s, "checks_commit_s": time.monotonic() - started}


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--markets", type=int, default=3, help="symbols checked")
    parser.add_argument("--trades-per-minute", type=int, default=20, help="per market")
    args = parser.parse_args()
    symbols = [f"C{n}-USDT" for n in range(args.markets)]
    now = time.time_ns() // 1000
    day_start = now - now % (DAY_MINUTES * MINUTE_US) - DAY_MINUTES * MINUTE_US  # yesterday
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; {args.markets} "
          f"markets x {DAY_MINUTES} minutes, {args.trades_per_minute} trades a minute, "
          "Binance format", flush=True)  # fmt: skip
    with scratch_dir("bench-klines-", args.work_dir, args.keep) as root:
        history = {s: day_of_trades(s, day_start, args.trades_per_minute, seed=n)
                   for n, s in enumerate(symbols)}  # fmt: skip
        lake = LakeSettings(table_root=str(root / "lake"))
        gold = [row for trades in history.values() for row in gold_rows(trades)]
        append_bars(lake.table_uri(GOLD_CANDLES_1M), gold)
        port, ready = free_port(), multiprocessing.Event()
        server = multiprocessing.Process(target=serve_klines, args=(port, history, ready),
                                         daemon=True)  # fmt: skip
        server.start()
        try:
            if not ready.wait(60):
                raise SystemExit("the simulator did not start")
            rows, wall, cpu, reconciler = asyncio.run(check_day(lake, port, symbols, day_start))
        finally:
            server.terminate()
        counts = {str(status): n for status, n in reconciler.counts.items() if n}
        print(f"round: {len(rows)} minutes checked in {wall:.2f} s wall, {cpu:.2f} s CPU; "
              f"{counts}", flush=True)  # fmt: skip
        if reconciler.counts[CheckStatus.MATCH] != args.markets * DAY_MINUTES:
            raise SystemExit(f"expected {args.markets * DAY_MINUTES} matching minutes: {counts}")
        timed = parts(lake, symbols, day_start, rows, root)
        print(
            f"alone: Gold read {timed['gold_read_s_per_market']:.3f} s per market-day, "
            f"one commit of {len(rows)} checks {timed['checks_commit_s']:.3f} s; "
            f"REST pages: {-(-DAY_MINUTES // 1000)} per market-day, 0.5 s apart",
            flush=True,
        )
    mismatches = len(rows) - reconciler.counts[CheckStatus.MATCH]
    print(f"kline_check_s_per_market_day={wall / args.markets:.2f} "
          f"cpu_s_per_market_day={cpu / args.markets:.3f} minutes={len(rows)} "
          f"mismatches={mismatches}")  # fmt: skip


if __name__ == "__main__":
    main()
