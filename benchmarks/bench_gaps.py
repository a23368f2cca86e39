"""Gap recovery: how fast the producer closes the gaps a dropped connection leaves, and what it
costs the live stream. Simulator (Binance format, one symbol) and producer run as their own
processes against a real Kafka broker, as in `make run`. Prints per-gap figures and, as its
last line, ``gap_close_s=<median> recovered_per_s=<n> added_cpu_pct=<n>``.

    make bench-gaps                                    # 500 trades/s: gaps of ~1,000 trades
    .venv/bin/python benchmarks/bench_gaps.py --rate 2000 --seconds 40

Two runs of the same length: a steady one, and one whose connection the simulator drops every
``--drop-every`` seconds while the producer waits 2-4 s to reconnect (so each gap is 2-4 s
of trades). Time to close is from a gap's detection (the first trade after the
reconnect) to its last trade published, the grace period for late frames included; recovered
trades per second is over the time spent in REST calls, which Binance's rate limit paces
(one page of 1,000 trades per 0.5 s). Added load: the producer's CPU seconds per second with
gaps minus without. Every run checks the topic holds every trade of the market exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchlib import build_parser, cpu_seconds, kafka_broker, scratch_dir, topic_message_count

from cryptolake.common.trade import Trade
from cryptolake.stack.kafka import free_port, read_topic

CLOSED = re.compile(r"(\d+) of (\d+) missing \S+ trades recovered, ([\d.]+) s after")


def check_gap_free(bootstrap: str, topic: str, count: int) -> None:
    """One symbol: its ids in the topic are one unbroken range, each once."""
    records = read_topic(bootstrap, topic, expected=count)
    ids = [int(Trade.from_json(r.value).trade_id) for r in records]
    if len(set(ids)) != len(ids) or max(ids) - min(ids) + 1 != len(ids):
        raise SystemExit(f"{topic}: {len(ids)} trades, ids {min(ids)}-{max(ids)}: not gap-free")


CLI = [sys.executable, "-m", "cryptolake.producer.cli"]


def start_pair(
    args, bootstrap: str, log_path: Path, drop_every: float | None, reconnect_s: float
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], str]:
    """(simulator, producer, trades topic): the simulator dropping every connection each
    ``drop_every`` seconds (None: never), the producer reconnecting after 0.5-1 x
    ``reconnect_s`` (full jitter), its log in ``log_path``."""
    sim_port = free_port()
    topic = f"bench.{uuid.uuid4().hex[:8]}.trades"
    simulate = [*CLI, "--log-level", "WARNING", "simulate", "--port", str(sim_port),
                "--rate", str(args.rate), "--symbols", "BTC-USDT"]  # fmt: skip
    if drop_every is not None:
        simulate += ["--disconnect-every", str(drop_every)]
    simulator = subprocess.Popen(simulate)
    time.sleep(1.0)
    env = {**os.environ, "CRYPTOLAKE_RECONNECT_MIN_S": str(reconnect_s),
           "CRYPTOLAKE_RECONNECT_MAX_S": str(reconnect_s)}  # fmt: skip
    with log_path.open("w") as log_file:
        producer = subprocess.Popen(
            [*CLI, "--source", "simulator", "--simulator-url",
             f"ws://127.0.0.1:{sim_port}/binance", "--simulator-protocol", "binance",
             "--symbols", "BTC-USDT", "--bootstrap-servers", bootstrap, "--topic", topic,
             "--dlq-topic", topic.replace(".trades", ".dlq"), "--metrics-port", "0"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return simulator, producer, topic


def one_run(args, bootstrap: str, root: Path, drops: bool) -> dict[str, float]:
    log_path = root / f"producer-{'gaps' if drops else 'steady'}.log"
    simulator, producer, topic = start_pair(
        args, bootstrap, log_path, args.drop_every if drops else None, reconnect_s=4
    )
    time.sleep(3.0)  # connected, topic made: measure from here
    cpu_start, started = cpu_seconds(producer.pid) or 0.0, time.monotonic()
    time.sleep(args.seconds)
    cpu = (cpu_seconds(producer.pid) or 0.0) - cpu_start
    elapsed = time.monotonic() - started
    simulator.send_signal(signal.SIGTERM)  # no more trades: the last gaps close
    simulator.wait(30)
    time.sleep(args.drop_every + 8)
    producer.send_signal(signal.SIGTERM)
    producer.wait(60)
    text = log_path.read_text()
    closes = [(int(m[1]), int(m[2]), float(m[3])) for m in CLOSED.finditer(text)]
    in_topic = topic_message_count(bootstrap, topic)
    check_gap_free(bootstrap, topic, in_topic)
    figures = {"cpu_per_s": cpu / elapsed, "in_topic": in_topic, "gaps": len(closes)}
    if "GAP UNRECOVERABLE" in text:
        raise SystemExit(f"a gap stayed open: see {log_path}")
    if drops:
        if not closes:
            raise SystemExit(f"no gap was closed: see {log_path}")
        for recovered, missing, seconds in closes:
            print(f"  gap of {missing} trades: {recovered} recovered, closed in {seconds:.2f} s")
        figures["close_s"] = statistics.median(s for _, _, s in closes)
        figures["size"] = statistics.median(m for _, m, _ in closes)
    print(f"{'gaps' if drops else 'steady'}: {figures}", flush=True)
    return figures


def bulk_recovery(args, bootstrap: str, root: Path) -> float:
    """One long outage (the producer away for --outage seconds): trades recovered per second."""
    log_path = root / "producer-outage.log"
    simulator, producer, _ = start_pair(args, bootstrap, log_path, 5, reconnect_s=2 * args.outage)
    deadline = time.monotonic() + 5 + 2 * args.outage + 60
    while time.monotonic() < deadline and not CLOSED.search(log_path.read_text()):
        time.sleep(0.5)
    producer.send_signal(signal.SIGTERM)
    producer.wait(60)
    simulator.send_signal(signal.SIGTERM)
    simulator.wait(30)
    text = log_path.read_text()
    match = CLOSED.search(text)
    if match is None:
        raise SystemExit(f"the outage's gap was not closed: see {log_path}")
    recovered, seconds = int(match[1]), float(match[3])
    grace = 2.0  # CRYPTOLAKE_GAP_GRACE_S's default: not REST time
    rate = recovered / max(seconds - grace, 1e-9)
    print(f"outage: {recovered} trades missing, recovered in {seconds:.1f} s "
          f"({rate:,.0f} trades/s after the {grace:.0f} s grace period)", flush=True)  # fmt: skip
    return rate


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--rate", type=float, default=500.0, help="simulated trades/s")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument("--drop-every", type=float, default=8.0, help="seconds between drops")
    parser.add_argument("--outage", type=float, default=10.0, help="the long outage, seconds")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
          f"{args.rate:.0f} trades/s, one symbol, Binance format", flush=True)  # fmt: skip
    with (
        scratch_dir("bench-gaps-", args.work_dir, args.keep) as root,
        kafka_broker(root, args.bootstrap_servers) as broker,
    ):
        steady = one_run(args, broker.bootstrap_servers, root, drops=False)
        gaps = one_run(args, broker.bootstrap_servers, root, drops=True)
        recovered_per_s = bulk_recovery(args, broker.bootstrap_servers, root)
    added = 100 * (gaps["cpu_per_s"] - steady["cpu_per_s"])
    print(f"producer CPU: {100 * steady['cpu_per_s']:.1f} % steady, "
          f"{100 * gaps['cpu_per_s']:.1f} % with a gap every {args.drop_every:.0f} s")  # fmt: skip
    print(f"gap_close_s={gaps['close_s']:.2f} recovered_per_s={recovered_per_s:.0f} "
          f"added_cpu_pct={added:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
