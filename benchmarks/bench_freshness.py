"""Freshness under a live load: simulator (paced, 2,000 trades/s) → producer → Kafka → the
streaming jobs (``python -m cryptolake.jobs all``: bronze and refine in one Spark
application). For every trade whose event time falls in the measurement window, Silver latency
= (time of the Silver commit that made it visible) - (its event time), goal p95 ≤ 3 s; Gold
latency = (time of the first candles_1m commit whose bar for its (exchange, symbol, minute) has
last_trade_time ≥ its event time) - (its event time), goal p95 ≤ 5 s. Last line:
``silver_p95_s=<s> gold_p95_s=<s>``.

    make bench-freshness                                # 40 s warm-up, 60 s window
    .venv/bin/python benchmarks/bench_freshness.py --warmup 20 --window 20 --rate 35

Exact, from the Delta logs: a commit's ``commitInfo.timestamp`` (ms) is when its rows became
visible; the rows are read from the commit's added Parquet files with pyarrow. The trades
expected in the window are read back from the topic, so a trade that never became visible
counts as an infinite latency (and is reported), not as a missing sample.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from benchlib import (
    build_parser,
    cpu_seconds,
    create_topic,
    java_children,
    kafka_broker,
    peak_rss_mib,
    scratch_dir,
)
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cryptolake.common.timeutil import now_us
from cryptolake.jobs.settings import JobSettings
from cryptolake.stack.kafka import free_port

DEFAULTS = {name: info.default for name, info in JobSettings.model_fields.items()}
RUNNING = re.compile(r"all running: ")
PROGRESS = re.compile(r"cryptolake\.jobs\.metrics: (\w+): \d+ batches, .*")
MINUTE_US = 60_000_000
INF = math.inf


@dataclass
class Commit:
    """One Delta commit: when it became visible and the data files it added."""

    version: int
    timestamp_ms: int
    mtime_s: float
    operation: str
    files: list[Path]
    metrics: dict[str, str] = field(default_factory=dict)


def read_commits(table: Path) -> list[Commit]:
    """Every JSON commit of a Delta table, in version order (a parquet checkpoint of the log
    does not delete the JSON files)."""
    commits = []
    for path in sorted((table / "_delta_log").glob("*.json")):
        info: dict[str, Any] = {}
        files = []
        for line in path.read_bytes().splitlines():
            action = orjson.loads(line)
            if "commitInfo" in action:
                info = action["commitInfo"]
            add = action.get("add")
            # A file re-added with a deletion vector only hides rows that an earlier commit
            # wrote, so its rows are never the first sight of a trade.
            if add and add.get("dataChange", True) and not add.get("deletionVector"):
                files.append(table / unquote(add["path"]))
        commits.append(
            Commit(
                version=int(path.stem),
                timestamp_ms=int(info["timestamp"]),
                mtime_s=path.stat().st_mtime,
                operation=info.get("operation", "?"),
                files=files,
                metrics=info.get("operationMetrics", {}),
            )
        )
    return commits


def micros(column: pa.ChunkedArray) -> list[int]:
    """A Parquet timestamp column (Spark writes INT96 or micros) as epoch microseconds."""
    values: list[int] = pc.cast(
        pc.cast(column, pa.timestamp("us"), safe=False), pa.int64()
    ).to_pylist()
    return values


def read_files(files: Iterable[Path], columns: list[str]) -> dict[str, list[Any]]:
    tables = [pq.read_table(path, columns=columns) for path in files]
    if not tables:
        return {name: [] for name in columns}
    table = pa.concat_tables(tables)
    return {
        name: micros(table[name])
        if pa.types.is_timestamp(table[name].type)
        else table[name].to_pylist()
        for name in columns
    }


@dataclass(frozen=True)
class Seen:
    """A trade as Silver holds it, and when it became visible there."""

    exchange: str
    symbol: str
    trade_id: str
    event_us: int
    visible_ms: int


def silver_trades(table: Path) -> list[Seen]:
    seen: list[Seen] = []
    for commit in read_commits(table):
        rows = read_files(commit.files, ["exchange", "symbol", "trade_id", "event_time"])
        seen.extend(
            Seen(exchange, symbol, trade_id, event_us, commit.timestamp_ms)
            for exchange, symbol, trade_id, event_us in zip(
                rows["exchange"],
                rows["symbol"],
                rows["trade_id"],
                rows["event_time"],
                strict=True,
            )
        )
    return seen


def gold_bar_history(table: Path) -> dict[tuple[str, str, int], tuple[list[int], list[int]]]:
    """Per (exchange, symbol, minute): the bar's last_trade_time each time it grew, and the
    commit time (ms) it grew at; both ascending, for a bisect."""
    history: dict[tuple[str, str, int], tuple[list[int], list[int]]] = {}
    for commit in read_commits(table):
        rows = read_files(commit.files, ["exchange", "symbol", "minute", "last_trade_time"])
        for exchange, symbol, minute, last_us in zip(
            rows["exchange"], rows["symbol"], rows["minute"], rows["last_trade_time"], strict=True
        ):
            lasts, times = history.setdefault((exchange, symbol, minute), ([], []))
            if not lasts or last_us > lasts[-1]:
                lasts.append(last_us)
                times.append(commit.timestamp_ms)
    return history


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation, so an infinite sample stays infinite)."""
    if not sorted_values:
        return math.nan
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def describe(name: str, latencies: list[float], goal_s: float) -> float:
    values = sorted(latencies)
    p50, p95, p99 = (percentile(values, p) for p in (50, 95, 99))
    missing = sum(1 for v in values if v == INF)
    print(
        f"{name}: {len(values):,} trades, p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s, "
        f"max {values[-1] if values else math.nan:.2f} s, never visible {missing} "
        f"(goal p95 ≤ {goal_s:g} s: {'met' if p95 <= goal_s else 'MISSED'})",
        flush=True,
    )
    return p95


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "none"
    return (
        f"p50 {percentile(ordered, 50):.2f} s, p95 {percentile(ordered, 95):.2f} s, "
        f"max {ordered[-1]:.2f} s"
    )


def commit_cadence(name: str, table: Path, t0_us: int, t1_us: int) -> None:
    """How often a table committed during the window, and how long its MERGEs ran."""
    commits = [c for c in read_commits(table) if t0_us <= c.timestamp_ms * 1000 < t1_us]
    gaps = [(b.timestamp_ms - a.timestamp_ms) / 1000 for a, b in itertools.pairwise(commits)]
    lag = [c.mtime_s - c.timestamp_ms / 1000 for c in commits]
    line = f"{name} commits in the window: {len(commits)}, interval {spread(gaps)}"
    merges = [
        int(c.metrics["executionTimeMs"]) / 1000 for c in commits if "executionTimeMs" in c.metrics
    ]
    if merges:
        line += f"; MERGE execution {spread(merges)}"
    print(line + f"; log file written {spread(lag)} after commitInfo.timestamp", flush=True)


TradeKey = tuple[str, str, str]  # (exchange, symbol, trade_id)


def window_trades(bootstrap: str, topic: str, t0_us: int, t1_us: int) -> tuple[set[TradeKey], int]:
    """(exchange, symbol, trade_id) of every trade in the topic with t0 ≤ event time < t1,
    and how many messages the topic holds."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    keys: set[TradeKey] = set()
    total = 0
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        assignment = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high > low:
                ends[partition] = high
                assignment.append(TopicPartition(topic, partition, low))
        consumer.assign(assignment)
        done: set[int] = set()
        deadline = time.monotonic() + 120
        while len(done) < len(ends) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                total += 1
                trade = orjson.loads(message.value() or b"{}")
                if t0_us <= trade["event_time"] < t1_us:
                    keys.add((trade["exchange"], trade["symbol"], trade["trade_id"]))
                partition, offset = message.partition(), message.offset()
                if partition is not None and offset is not None and offset + 1 >= ends[partition]:
                    done.add(partition)
    finally:
        consumer.close()
    return keys, total


class Processes:
    """The benchmark's child processes: started here, watched, stopped with SIGTERM (then
    SIGKILL), and the jobs' peak memory read while they live."""

    def __init__(self, workdir: Path) -> None:
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.jobs_log = workdir / "jobs.log"
        self.jvm_pid: int | None = None
        self.rss = {"jvm": 0.0, "python": 0.0}

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        output = self.jobs_log.open("ab") if name == "jobs" else None
        self.running[name] = subprocess.Popen(
            cmd, env=env, stdout=output, stderr=subprocess.STDOUT if output else None
        )
        if output is not None:
            output.close()

    def check(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                tail = self.log_tail() if name == "jobs" else ""
                raise SystemExit(f"{name} exited with code {process.returncode}\n{tail}")
        self.sample_rss()

    def sample_rss(self) -> None:
        jobs = self.running.get("jobs")
        if jobs is None:
            return
        if self.jvm_pid is None:
            found = java_children(jobs.pid)
            self.jvm_pid = found[0] if found else None
        for key, pid in (("python", jobs.pid), ("jvm", self.jvm_pid)):
            rss = peak_rss_mib(pid) if pid else None
            if rss is not None:
                self.rss[key] = max(self.rss[key], rss)

    def pids(self) -> dict[str, int]:
        """The processes whose CPU use is reported: ours, the jobs' JVM, the broker's."""
        pids = {name: process.pid for name, process in self.running.items()}
        if self.jvm_pid is not None:
            pids["jobs JVM"] = self.jvm_pid
        return pids

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.check()
            time.sleep(min(1.0, left))

    def log_tail(self, lines: int = 40) -> str:
        if not self.jobs_log.exists():
            return ""
        return "\n".join(self.jobs_log.read_text(errors="replace").splitlines()[-lines:])

    def wait_for_jobs(self, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            self.check()
            if self.jobs_log.exists() and RUNNING.search(self.jobs_log.read_text(errors="replace")):
                return time.monotonic() - started
            time.sleep(0.5)
        raise SystemExit(f"jobs not running after {timeout_s:.0f} s\n{self.log_tail()}")

    def stop(self, name: str, timeout_s: float) -> None:
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print(f"{name}: no exit {timeout_s:.0f} s after SIGTERM, killing it", flush=True)
            process.kill()
            process.wait()
        if name == "jobs" and self.jvm_pid is not None and peak_rss_mib(self.jvm_pid) is not None:
            # The driver JVM outlived its Python parent (it exits when its stdin closes).
            time.sleep(5)
            if peak_rss_mib(self.jvm_pid) is not None:
                os.kill(self.jvm_pid, signal.SIGKILL)

    def stop_all(self) -> None:
        # Load first, then the jobs (each query stops between batches, up to 30 s each).
        for name, timeout_s in (("producer", 60), ("simulator", 30), ("jobs", 180)):
            self.stop(name, timeout_s)


def job_env(args: argparse.Namespace, bootstrap: str, topic: str, root: Path) -> dict[str, str]:
    settings = {
        "BOOTSTRAP_SERVERS": bootstrap,
        "TRADES_TOPIC": topic,
        "TABLE_ROOT": str(root / "lakehouse"),
        "STARTING_OFFSETS": args.starting_offsets,
        "METRICS_PORT": "0",
        "LOG_LEVEL": args.jobs_log_level,
        "BRONZE_TRIGGER": args.bronze_trigger,
        "REFINE_TRIGGER": args.refine_trigger,
        "SHUFFLE_PARTITIONS": str(args.shuffle_partitions),
        "DRIVER_MEMORY": args.driver_memory,
        "SPARK_MASTER": args.spark_master,
    }
    if args.max_offsets_per_trigger:
        settings["MAX_OFFSETS_PER_TRIGGER"] = str(args.max_offsets_per_trigger)
    return {**os.environ, **{f"CRYPTOLAKE_{key}": value for key, value in settings.items()}}


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu for name, pid in pids.items() if (cpu := cpu_seconds(pid)) is not None}


@dataclass
class LoadRun:
    """What happened while the pipeline ran: the window, and what the processes used."""

    topic: str
    t0_us: int
    t1_us: int
    cpu_cores: dict[str, float]  # CPU seconds per second of the window, per process
    rss_mib: dict[str, float]
    jvm_pid: int | None
    progress: list[str]  # the jobs' last progress line per query


def run_load(
    args: argparse.Namespace, bootstrap: str, broker_pid: int | None, root: Path
) -> LoadRun:
    """Jobs first (until their queries run), then simulator and producer; warm-up, window and
    drain under load; everything stopped at the end."""
    topic = f"bench.{uuid.uuid4().hex[:8]}.trades"
    create_topic(bootstrap, topic, args.partitions)
    procs = Processes(root)
    cli = [sys.executable, "-m", "cryptolake.producer.cli", "--log-level", "WARNING"]
    sim_port = free_port()
    try:
        procs.start("jobs", [sys.executable, "-m", "cryptolake.jobs", "all"],
                    env=job_env(args, bootstrap, topic, root))  # fmt: skip
        print(f"jobs running after {procs.wait_for_jobs(args.startup_timeout):.1f} s", flush=True)
        procs.start("simulator", [*cli, "simulate", "--port", str(sim_port), "--rate",
                                  str(args.rate), "--seed", str(args.seed), "--symbols",
                                  args.symbols])  # fmt: skip
        time.sleep(1.0)
        procs.start("producer", [
            *cli, "--source", "simulator", "--simulator-url",
            f"ws://127.0.0.1:{sim_port}/{args.protocol}", "--simulator-protocol", args.protocol,
            "--symbols", args.symbols, "--bootstrap-servers", bootstrap, "--topic", topic,
            "--dlq-topic", topic.replace(".trades", ".dlq"), "--metrics-port", "0",
        ])  # fmt: skip
        print(f"load: {args.rate:g} trades/s; warming up {args.warmup:g} s", flush=True)
        procs.wait(args.warmup)
        pids = procs.pids() | ({"broker": broker_pid} if broker_pid else {})
        cpu_before, t0_us = cpu_snapshot(pids), now_us()
        print(f"measuring: trades with event times in the next {args.window:g} s", flush=True)
        procs.wait(args.window)
        cpu_after, t1_us = cpu_snapshot(pids), now_us()
        print(f"draining {args.drain:g} s (load still on)", flush=True)
        procs.wait(args.drain)
        procs.check()
        progress = {}
        for line in procs.jobs_log.read_text(errors="replace").splitlines():
            if match := PROGRESS.search(line):
                progress[match[1]] = match[0].partition(": ")[2]
    finally:
        procs.stop_all()
    window_s = (t1_us - t0_us) / 1e6
    cpu = {name: (cpu_after[name] - cpu_before[name]) / window_s for name in cpu_after}
    return LoadRun(topic, t0_us, t1_us, cpu, dict(procs.rss), procs.jvm_pid,
                   list(progress.values()))  # fmt: skip


def latencies(
    lake: Path, expected: set[TradeKey], t0_us: int, t1_us: int
) -> tuple[list[float], list[float]]:
    """Seconds from event time to visibility in Silver and in Gold, per trade of the window;
    infinite for a trade that never became visible."""
    seen = {(s.exchange, s.symbol, s.trade_id): s for s in silver_trades(lake / "silver/trades")}
    in_window = [s for s in seen.values() if t0_us <= s.event_us < t1_us]
    never = len(expected - {(s.exchange, s.symbol, s.trade_id) for s in in_window})
    silver = [(s.visible_ms * 1000 - s.event_us) / 1e6 for s in in_window] + [INF] * never
    history = gold_bar_history(lake / "gold/candles_1m")
    gold = [INF] * never  # never in Silver, so never in Gold
    for s in in_window:
        minute = s.event_us // MINUTE_US * MINUTE_US
        lasts, times = history.get((s.exchange, s.symbol, minute), ([], []))
        index = bisect.bisect_left(lasts, s.event_us)
        gold.append((times[index] * 1000 - s.event_us) / 1e6 if index < len(lasts) else INF)
    return silver, gold


def measure(
    args: argparse.Namespace, bootstrap: str, broker_pid: int | None, root: Path
) -> tuple[float, float]:
    print(
        f"jobs: triggers bronze {args.bronze_trigger!r}, refine {args.refine_trigger!r}; "
        f"{args.spark_master}, driver memory {args.driver_memory}, "
        f"{args.shuffle_partitions} shuffle partitions, max offsets per trigger "
        f"{args.max_offsets_per_trigger or 'unlimited'}",
        flush=True,
    )
    run = run_load(args, bootstrap, broker_pid, root)
    expected, in_topic = window_trades(bootstrap, run.topic, run.t0_us, run.t1_us)
    window_s = (run.t1_us - run.t0_us) / 1e6
    print(
        f"topic: {in_topic:,} trades; {len(expected):,} with event times in the "
        f"{window_s:.0f} s window ({len(expected) / window_s:,.0f}/s)",
        flush=True,
    )
    for line in run.progress:
        print(f"jobs' last progress line: {line}")
    print(
        f"CPU in the window (1.00 = one core of {os.cpu_count()}): "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in run.cpu_cores.items()),
        flush=True,
    )
    lake = root / "lakehouse"
    silver, gold = latencies(lake, expected, run.t0_us, run.t1_us)
    silver_p95 = describe("silver (visible - event time)", silver, 3)
    gold_p95 = describe("gold   (bar updated - event time)", gold, 5)
    commit_cadence("silver/trades", lake / "silver/trades", run.t0_us, run.t1_us)
    commit_cadence("gold/candles_1m", lake / "gold/candles_1m", run.t0_us, run.t1_us)
    print(
        f"jobs peak RSS: JVM {run.rss_mib['jvm']:,.0f} MiB (pid {run.jvm_pid}), python driver "
        f"{run.rss_mib['python']:,.0f} MiB",
        flush=True,
    )
    return silver_p95, gold_p95


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--rate", type=float, default=2000, help="simulated trades/s (mean)")
    parser.add_argument("--warmup", type=float, default=40, help="seconds of load first")
    parser.add_argument("--window", type=float, default=60, help="measured event-time span (s)")
    parser.add_argument(
        "--drain",
        type=float,
        default=30,
        help="seconds of load after the window, so its last trades can become visible",
    )
    parser.add_argument("--symbols", default="BTC-USDT,ETH-USDT,SOL-USDT", help="comma list")
    parser.add_argument("--seed", type=int, default=42, help="simulator seed (same load each run)")
    parser.add_argument(
        "--protocol",
        choices=["coinbase", "kraken", "binance"],
        default="coinbase",
        help="simulator wire format",
    )
    parser.add_argument("--partitions", type=int, default=3, help="topic partitions")
    jobs = parser.add_argument_group("jobs (CRYPTOLAKE_* settings; defaults are JobSettings')")
    for query in ("bronze", "refine"):
        jobs.add_argument(
            f"--{query}-trigger",
            default=DEFAULTS[f"{query}_trigger"],
            help=f"{query} processing-time trigger",
        )
    jobs.add_argument(
        "--jobs-log-level", default="INFO", help="DEBUG: each refine batch's step times"
    )
    jobs.add_argument(
        "--max-offsets-per-trigger",
        type=int,
        default=DEFAULTS["max_offsets_per_trigger"],
        help="Kafka records per micro-batch (None: no cap)",
    )
    jobs.add_argument(
        "--shuffle-partitions",
        type=int,
        default=DEFAULTS["shuffle_partitions"],
        help="Spark SQL shuffles",
    )
    jobs.add_argument(
        "--driver-memory", default=DEFAULTS["driver_memory"], help="Spark driver heap"
    )
    jobs.add_argument(
        "--spark-master", default=DEFAULTS["spark_master"], help="Spark master (local mode: cores)"
    )
    jobs.add_argument(
        "--starting-offsets",
        choices=["earliest", "latest"],
        default="earliest",
        help="the topic is new, so earliest loses nothing",
    )
    jobs.add_argument(
        "--startup-timeout",
        type=float,
        default=300,
        help="seconds the jobs may take to start their queries",
    )
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"{args.rate:g} trades/s, {args.protocol} format, warm-up {args.warmup:g} s, "
        f"window {args.window:g} s",
        flush=True,
    )
    with (
        scratch_dir("bench-freshness-", args.work_dir, args.keep) as root,
        kafka_broker(root, args.bootstrap_servers) as broker,
    ):
        silver_p95, gold_p95 = measure(args, broker.bootstrap_servers, broker.pid, root)
    print(f"silver_p95_s={silver_p95:.2f} gold_p95_s={gold_p95:.2f}")


if __name__ == "__main__":
    main()
