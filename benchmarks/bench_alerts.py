"""Alerts: how long a firing takes from the Gold commit that crosses a threshold to the webhook,
and what an evaluation costs. Gold (a local Delta folder, delta-rs) holds a day of 1-minute
bars per market, one commit an hour as the jobs' MERGEs leave many files; the alerts worker
follows it with the given rules; each round appends one minute for every market, one of them a
spike, and waits for the spike's post at a local HTTP receiver. Prints where the time goes and,
as its last line,
``alert_latency_p50_s=<s> alert_latency_p95_s=<s> evaluation_ms_mean=<ms>``.

    .venv/bin/python benchmarks/bench_alerts.py                 # 20 markets, 10 rules, 30 rounds
    .venv/bin/python benchmarks/bench_alerts.py --markets 50 --rounds 60

The latency holds the worker's poll of the Delta log (CRYPTOLAKE_POLL_INTERVAL_S, 1 s by
default: half of it on average), the read of the recent bars, the evaluation, the commit to
gold/alerts and the POST. The run fails unless every spike is posted exactly once.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from benchlib import build_parser, scratch_dir

from cryptolake.alerts.rules import parse_rules
from cryptolake.alerts.settings import AlertsSettings
from cryptolake.alerts.worker import AlertsWorker
from cryptolake.api.sample import SampleTrade, append_bars, bars_from_trades
from cryptolake.common.tables import GOLD_CANDLES_1M

MINUTE = timedelta(minutes=1)


def rules_text(count: int, url: str) -> str:
    """``count`` rules over every market; the first one fires on each spike (6 %), the others
    (price moves over 5 … 60 minutes, higher volatility bars) watch without firing."""
    rules = [
        {
            "name": "spike",
            "kind": "volatility",
            "threshold": "5",
            "cooldown": "0m",
            "webhook": {"format": "json", "url": url},
        },
    ]
    for index in range(1, count):
        window = 5 + (index * 7) % 56
        kind = "price_change" if index % 2 else "volatility"
        rules.append(
            {
                "name": f"watch-{index}",
                "kind": kind,
                "window": f"{window}m",
                "threshold": "50",
                "webhook": {"format": "json", "url": url},
            }
        )
    return orjson.dumps({"rules": rules}).decode()


def market_bars(symbols: list[str], minute: datetime, spike: str | None, seq: int) -> list[dict]:
    trades = []
    for index, symbol in enumerate(symbols):
        prices = ["100", "106", "101"] if symbol == spike else ["100", "100.5", "100.2"]
        trades += [
            SampleTrade(
                "simulator",
                symbol,
                f"{seq}-{index}-{n}",
                Decimal(p),
                Decimal("0.5"),
                "buy",
                minute + timedelta(seconds=1 + n),
            )
            for n, p in enumerate(prices)
        ]
    return bars_from_trades(trades)


def write_day(uri: str, symbols: list[str], now: datetime) -> None:
    """The day before ``now``: one commit an hour."""
    written = time.perf_counter()
    start = now - timedelta(days=1)
    for hour in range(24):
        first = start + hour * 60 * MINUTE
        bars = [
            bar
            for m in range(60)
            for bar in market_bars(symbols, first + m * MINUTE, None, hour * 60 + m)
        ]
        append_bars(uri, bars)
    print(
        f"gold: {len(symbols)} markets x 1,440 bars in 24 commits "
        f"({time.perf_counter() - written:.1f} s)",
        flush=True,
    )


class Receiver:
    def __init__(self) -> None:
        self.posts: dict[str, float] = {}
        self.count = 0
        receiver = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.posts.setdefault(body["alert_id"], time.monotonic())
                receiver.count += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> int:
    parser = build_parser(__doc__)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--poll-interval-s", type=float, default=1.0)
    args = parser.parse_args()
    symbols = [f"C{index:03d}-USDT" for index in range(args.markets)]
    receiver = Receiver()
    with scratch_dir("bench-alerts-", args.work_dir, args.keep) as root:
        settings = AlertsSettings(
            table_root=str(root / "lake"),
            metrics_port=0,
            poll_interval_s=args.poll_interval_s,
            journal_flush_s=1.0,
        )
        uri = settings.table_uri(GOLD_CANDLES_1M)
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        write_day(uri, symbols, now)

        worker = AlertsWorker(settings, parse_rules(rules_text(args.rules, receiver.url)))
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(stop),))
        thread.start()
        while worker.evaluated_version is None:
            time.sleep(0.05)
        latencies = []
        jitter = random.Random(7)
        for round_ in range(args.rounds):
            # Commits land at any point of the worker's poll, as the jobs' do.
            time.sleep(jitter.uniform(0, args.poll_interval_s))
            minute = now + round_ * MINUTE
            spike = symbols[round_ % len(symbols)]
            append_bars(uri, market_bars(symbols, minute, spike, 10_000 + round_))
            committed = time.monotonic()
            alert_id = f"spike/simulator/{spike}/{(minute + MINUTE).isoformat()}"
            deadline = committed + 30
            while alert_id not in receiver.posts:
                if time.monotonic() > deadline:
                    raise SystemExit(f"no post for {alert_id} within 30 s")
                time.sleep(0.01)
            latencies.append(receiver.posts[alert_id] - committed)
        time.sleep(2 * args.poll_interval_s)
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        evaluations = next(iter(worker.metrics.evaluations.collect())).samples
        count = next(s.value for s in evaluations if s.name.endswith("_count"))
        total = next(s.value for s in evaluations if s.name.endswith("_sum"))
    if receiver.count != args.rounds:
        raise SystemExit(f"{receiver.count} posts for {args.rounds} spikes")
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    print(
        f"{args.rounds} spikes, each posted once; {int(count)} evaluations, "
        f"{1000 * total / count:.1f} ms on average (read of the recent bars + rules)"
    )
    print(
        f"latency commit → webhook: p50 {p50:.2f} s, p95 {p95:.2f} s, max {ordered[-1]:.2f} s "
        f"(poll interval {args.poll_interval_s} s)"
    )
    print(
        f"alert_latency_p50_s={p50:.2f} alert_latency_p95_s={p95:.2f} "
        f"evaluation_ms_mean={1000 * total / count:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
