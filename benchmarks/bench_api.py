"""API latency and throughput: wrk (Debian) on loopback against ``cryptolake-api`` serving one
day of 1-minute bars (1,440) for ``/v1/candles``, at 100 connections, with 1 uvicorn worker and
with the recommended count (one per core). Goal: p99 ≤ 10 ms and ≥ 2,000 requests/s. Then the
time from a new Delta commit on gold/candles_1m to its bar in the API's answer, goal ≤ 1 s.
Last line: ``candles_p99_ms=<ms> rps=<n>`` for the recommended worker count, with wrk sending
``Accept-Encoding: gzip`` as browsers, httpx and requests do (the body: 77 KB instead of
340 KB); the lines above also give identity encoding and a traced run.

    make bench-api
    .venv/bin/python benchmarks/bench_api.py --duration 30 --workers 1 2 4

The tables are written with ``deltalake`` (cryptolake.api.sample) in the jobs' schemas to a
local folder; the API is a separate process started as users start it (``cryptolake-api``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
from benchlib import build_parser, scratch_dir

from cryptolake.api.sample import (
    SampleTrade,
    append_bars,
    bars_from_trades,
    generate_trades,
    write_lake,
)
from cryptolake.api.settings import ApiSettings
from cryptolake.common.tables import GOLD_CANDLES_1M
from cryptolake.stack.kafka import free_port

DAY = datetime(2026, 11, 23, tzinfo=UTC)
MARKETS = [
    ("simulator", "BTC-USDT", Decimal("42000")),
    ("simulator", "ETH-USDT", Decimal("2500")),
    ("simulator", "SOL-USDT", Decimal("150")),
]
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> tuple[float, float]:
    """(p99 latency in ms, requests per second) from ``wrk --latency`` output."""
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if p99 is None or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return float(p99[1]) * _UNIT_MS[p99[2]], float(rps[1])


def start_api(
    table_root: Path, workers: int, log: Path, extra_env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        **extra_env,
        "CRYPTOLAKE_TABLE_ROOT": str(table_root),
        "CRYPTOLAKE_LOG_LEVEL": "WARNING",
        "CRYPTOLAKE_REFRESH_INTERVAL_S": "0.25",
        # One load generator is one client: the per-client limit would measure 429s.
        "CRYPTOLAKE_RATE_LIMIT": "",
    }
    argv = [sys.executable, "-m", "cryptolake.api", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cryptolake-api exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"cryptolake-api not ready in 60 s; see {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def run_wrk(
    url: str, connections: int, duration_s: int, threads: int, gzip: bool = False
) -> tuple[float, float]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", url]
    if gzip:
        argv[1:1] = ["-H", "Accept-Encoding: gzip"]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def commit_to_api_latency(base: str, table_uri: str, commits: int) -> list[float]:
    """Seconds from each new commit (a bar for a new minute) to the API returning it."""
    latencies = []
    url = f"{base}/v1/candles?symbol=SOL-USDT&exchange=simulator&limit=1"
    with httpx.Client(timeout=5) as client:
        for step in range(1, commits + 1):
            at = DAY + timedelta(days=1, minutes=step)
            price = Decimal(200 + step)
            trade = SampleTrade("simulator", "SOL-USDT", f"b{step}", price, Decimal(1), "buy", at)
            append_bars(table_uri, bars_from_trades([trade]))
            committed = time.perf_counter()
            while client.get(url).json()["bars"][-1]["close"] != float(price):
                if time.perf_counter() - committed > 10:
                    raise RuntimeError(f"commit {step} not served after 10 s")
                time.sleep(0.005)
            latencies.append(time.perf_counter() - committed)
            time.sleep(0.3)
    return latencies


class StreamFlood:
    """``clients`` SSE streams opened at once and held open (a thread with its own event
    loop): how many the API took, how many it refused with 429."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.statuses: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _hold(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        async with client.stream("GET", self.url) as response:
            self.statuses.append(response.status_code)
            if response.status_code == 200:
                await stop.wait()

    async def _run(self) -> None:
        self.stop = asyncio.Event()
        limits = httpx.Limits(max_connections=self.clients + 10)
        async with httpx.AsyncClient(timeout=None, limits=limits) as client:
            await asyncio.gather(*(self._hold(client, self.stop) for _ in range(self.clients)),
                                 return_exceptions=True)  # fmt: skip

    def __enter__(self) -> StreamFlood:
        self.thread.start()
        deadline = time.monotonic() + 60
        while len(self.statuses) < self.clients and time.monotonic() < deadline:
            time.sleep(0.1)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=30)


def flood_run(base: str, url_path: str, args: argparse.Namespace) -> None:
    """The candles' latency while ``--sse-clients`` streams try to open at once."""
    with StreamFlood(f"{base}/v1/stream/candles?symbol=BTC-USDT", args.sse_clients) as flood:
        p99, rps = run_wrk(base + url_path, args.connections, args.duration, args.wrk_threads,
                           gzip=True)  # fmt: skip
        accepted, refused = flood.statuses.count(200), flood.statuses.count(429)
    print(f"sse_flood clients={args.sse_clients} accepted={accepted} refused_429={refused} "
          f"other={len(flood.statuses) - accepted - refused} candles_p99_ms={p99:.2f} "
          f"rps={rps:.0f}", flush=True)  # fmt: skip


def main() -> int:
    parser = build_parser(__doc__ or "")
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1],
        help="uvicorn worker counts to measure; the last is reported as recommended",
    )  # fmt: skip
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (leave cores)")
    parser.add_argument("--commits", type=int, default=20, help="commits for the latency test")
    parser.add_argument("--sse-clients", type=int, default=500,
                        help="streams opened at once for the flood run (0: skip it)")  # fmt: skip
    parser.add_argument(
        "--no-traced", dest="traced", action="store_false",
        help="skip the run with OpenTelemetry instrumentation on (every span sampled)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench-api: wrk is missing; `make setup` installs it (Debian package wrk)")
        return 2

    with scratch_dir("bench-api-", args.work_dir, args.keep) as root:
        settings = ApiSettings(table_root=str(root / "lake"))
        started = time.monotonic()
        trades = generate_trades(MARKETS, DAY, 24 * 60, per_minute=3, empty_minutes=False)
        write_lake(settings.table_uri, trades)
        print(f"wrote {len(trades)} trades, 1 day x {len(MARKETS)} symbols, in "
              f"{time.monotonic() - started:.1f} s", flush=True)  # fmt: skip
        day_end = DAY + timedelta(days=1)
        url_path = (
            "/v1/candles?symbol=BTC-USDT&exchange=simulator&interval=1m"
            f"&start={DAY:%Y-%m-%dT%H:%M:%SZ}&end={day_end:%Y-%m-%dT%H:%M:%SZ}&limit=1440"
        )
        headline = (0.0, 0.0)
        runs = [(workers, {}) for workers in args.workers]
        if args.traced:
            # Instrumented and every span sampled (no exporter): the cost of tracing.
            runs.append((args.workers[0], {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}))
        for workers, extra_env in runs:
            log = root / "api.log"
            process, base = start_api(Path(settings.table_root), workers, log, extra_env)
            try:
                bars = httpx.get(base + url_path, timeout=10).json()["bars"]
                assert len(bars) == 1440, f"expected 1,440 bars, got {len(bars)}"
                run_wrk(base + url_path, args.connections, 3, args.wrk_threads)  # warm-up
                label = f"workers={workers}" + (" traced" if extra_env else "")
                for gzip in (False, True):
                    p99, rps = run_wrk(
                        base + url_path, args.connections, args.duration, args.wrk_threads, gzip
                    )
                    encoding = "gzip" if gzip else "identity"
                    print(f"{label} connections={args.connections} encoding={encoding} "
                          f"p99_ms={p99:.2f} rps={rps:.0f}", flush=True)  # fmt: skip
                    if workers == args.workers[-1] and not extra_env and gzip:
                        headline = (p99, rps)
                if workers == args.workers[0] and not extra_env and args.sse_clients:
                    flood_run(base, url_path, args)
                if workers == args.workers[0] and not extra_env:
                    table_uri = settings.table_uri(GOLD_CANDLES_1M)
                    latencies = commit_to_api_latency(base, table_uri, args.commits)
                    print(f"commit_to_api_s p50={statistics.median(latencies):.3f} "
                          f"max={max(latencies):.3f} (n={len(latencies)}, goal ≤ 1 s)",
                          flush=True)  # fmt: skip
            finally:
                stop(process)
        result = headline
        print(f"candles_p99_ms={result[0]:.2f} rps={result[1]:.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
