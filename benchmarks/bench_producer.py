"""Producer throughput: simulator flood over a real WebSocket → parse → real Kafka, one producer
process, zero loss. Prints per-run figures, the CPU profile's top entries, and as its last line
``producer_trades_per_s=<median>``.

    make bench-producer                       # 3 runs of 1,000,000 trades, coinbase format
    .venv/bin/python benchmarks/bench_producer.py --runs 5 --trades 2000000 --protocol binance

Every run uses fresh topics; loss is checked from the topic's offsets (idempotent producer:
offsets count messages exactly) against the simulator's count.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from benchlib import topic_message_count

from cryptolake.stack.kafka import KafkaBroker, KafkaBrokerConfig, free_port

PRODUCED = "cryptolake_producer_trades_produced_total"


def scrape_produced(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(PRODUCED)
    )


def one_run(args: argparse.Namespace, bootstrap: str, index: int, profile: Path | None) -> float:
    sim_port, metrics_port = free_port(), free_port()
    topic = f"bench.{uuid.uuid4().hex[:8]}.trades"
    cli = [sys.executable, "-m", "cryptolake.producer.cli"]
    simulator = subprocess.Popen(
        [
            *cli,
            "--log-level",
            "WARNING",
            "simulate",
            "--port",
            str(sim_port),
            "--flood",
            "--max-trades",
            str(args.trades),
            "--trades-per-frame",
            str(args.trades_per_frame),
            "--symbols",
            "BTC-USDT,ETH-USDT,SOL-USDT",
        ],
    )
    time.sleep(1.0)
    runner = (
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "cryptolake.producer.cli"]
        if profile
        else cli
    )
    producer = subprocess.Popen(
        [
            *runner,
            "--log-level",
            "WARNING",
            "--source",
            "simulator",
            "--simulator-url",
            f"ws://127.0.0.1:{sim_port}/{args.protocol}",
            "--simulator-protocol",
            args.protocol,
            "--symbols",
            "BTC-USDT,ETH-USDT,SOL-USDT",
            "--bootstrap-servers",
            bootstrap,
            "--topic",
            topic,
            "--dlq-topic",
            topic.replace(".trades", ".dlq"),
            "--metrics-port",
            str(metrics_port),
        ],
    )
    try:
        first_at = None
        deadline = time.monotonic() + args.timeout
        produced = 0.0
        while time.monotonic() < deadline:
            produced = scrape_produced(metrics_port)
            now = time.monotonic()
            if produced and first_at is None:
                first_at, first_count = now, produced
            if produced >= args.trades:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"run {index}: only {produced:.0f}/{args.trades} in {args.timeout}s")
        elapsed = now - first_at
        rate = (produced - first_count) / elapsed
    finally:
        producer.send_signal(signal.SIGTERM)
        producer.wait(60)
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(30)
    in_topic = topic_message_count(bootstrap, topic)
    lost = args.trades - in_topic
    print(
        f"run {index}: {args.trades} trades, {rate:,.0f} trades/s, in topic {in_topic} "
        f"(lost {lost}){' [profiled]' if profile else ''}",
        flush=True,
    )
    if lost:
        raise SystemExit(f"run {index}: {lost} trades lost")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--trades-per-frame", type=int, default=50)
    parser.add_argument("--protocol", choices=["coinbase", "kraken", "binance"], default="coinbase")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled run")
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"protocol {args.protocol}, {args.trades_per_frame} trades/frame",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        broker = None
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            broker = KafkaBroker(
                KafkaBrokerConfig(
                    data_dir=Path(tmp), port=free_port(), controller_port=free_port(), heap="1g"
                )
            )
            broker.start()
            bootstrap = broker.bootstrap_servers
        try:
            rates = [one_run(args, bootstrap, index + 1, None) for index in range(args.runs)]
            if not args.no_profile:
                profile = Path(tmp) / "producer.prof"
                one_run(args, bootstrap, args.runs + 1, profile)
                print("profile of the producer process (top 15 by own time):")
                stats = pstats.Stats(str(profile))
                stats.sort_stats(pstats.SortKey.TIME).print_stats(15)
        finally:
            if broker is not None:
                broker.stop()
    print(f"runs: {', '.join(f'{rate:,.0f}' for rate in rates)} trades/s")
    print(f"producer_trades_per_s={statistics.median(rates):.0f}")


if __name__ == "__main__":
    main()
