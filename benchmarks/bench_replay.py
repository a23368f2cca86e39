"""Backlog replay: N trades already in Kafka → every table caught up: bronze and refine (silver,
quarantine, gold and the derived tables) side by side, each to the end of the topic
(``--available-now``, as ``python -m cryptolake.jobs all --available-now`` runs them). Prints
the fill rate, each query's seconds and batches, refine's writer's seconds per step (read:
Kafka, parse and dedup; summed over its batches), peak RSS, and as its last line
``replay_trades_per_s=<N / seconds until both finished>`` (JVM start not counted).

    make bench-replay                                  # 2,000,000 trades, 3 symbols
    .venv/bin/python benchmarks/bench_replay.py --trades 200000 --max-offsets-per-trigger 50000

The topic (3 partitions) is filled with valid trade v1 JSON keyed ``simulator:SYMBOL``: prices
from the simulator's market model, sequential trade ids per symbol, event times spread over
``--span-hours`` ending now. The Spark session runs in this process (local mode, tables and
checkpoints on local disk). Checks: Silver holds N rows and Gold's 1-minute bars count N trades.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import orjson
from benchlib import (
    build_parser,
    create_topic,
    java_children,
    kafka_broker,
    peak_rss_mib,
    scratch_dir,
    topic_message_count,
)
from confluent_kafka import KafkaError, Producer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cryptolake.common.timeutil import now_us
from cryptolake.jobs.cli import start_streams
from cryptolake.jobs.refine import BatchOutcome
from cryptolake.jobs.session import build_session
from cryptolake.jobs.settings import JobSettings
from cryptolake.producer.simulator.market import Market

FILL_BATCH = 10_000


def fill_topic(args: argparse.Namespace, bootstrap: str, topic: str) -> float:
    """Produce ``args.trades`` trade v1 messages as fast as librdkafka takes them; trades/s."""
    symbols = [symbol.strip() for symbol in args.symbols.split(",") if symbol.strip()]
    end_us = now_us()
    span_us = int(args.span_hours * 3600 * 1_000_000)
    start_us = end_us - span_us
    market = Market(
        symbols, seed=args.seed, rate_per_s=args.trades / (span_us / 1e6), start_us=start_us
    )
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": "lz4",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "enable.idempotence": True,
        }
    )
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    started = time.monotonic()
    batches = -(-args.trades // FILL_BATCH)
    sent = 0
    for index in range(batches):
        count = min(FILL_BATCH, args.trades - sent)
        ingest_us = now_us()
        for trade in market.next_trades(count, start_us + span_us * (index + 1) // batches):
            value = orjson.dumps(
                {
                    "schema_version": 1,
                    "exchange": "simulator",
                    "symbol": trade.symbol,
                    "trade_id": str(trade.trade_id),
                    "price": trade.price,
                    "qty": trade.qty,
                    "side": trade.side,
                    "event_time": trade.event_time_us,
                    "ingest_time": ingest_us,
                }
            )
            key = f"simulator:{trade.symbol}".encode()
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka send, then retry
                    producer.poll(0.05)
        sent += count
        producer.poll(0)
    if producer.flush(120) != 0:
        raise SystemExit("fill: messages still unacknowledged after 120 s")
    elapsed = time.monotonic() - started
    if errors:
        raise SystemExit(f"fill: {len(errors)} delivery errors, first: {errors[0]}")
    in_topic = topic_message_count(bootstrap, topic)
    if in_topic != args.trades:
        raise SystemExit(f"fill: {in_topic} messages in the topic, expected {args.trades}")
    rate: float = args.trades / elapsed
    print(
        f"fill: {args.trades:,} trades ({', '.join(symbols)}; {args.span_hours:g} h of event "
        f"time) in {elapsed:.1f} s = {rate:,.0f} trades/s",
        flush=True,
    )
    return rate


def run_jobs(
    args: argparse.Namespace, bootstrap: str, topic: str, root: Path, broker_pid: int | None
) -> float:
    """Bronze and refine with available-now triggers; checks the tables; total seconds."""
    settings = JobSettings(
        bootstrap_servers=bootstrap,
        trades_topic=topic,
        table_root=str(root / "lakehouse"),
        starting_offsets="earliest",
        driver_memory=args.driver_memory,
        shuffle_partitions=args.shuffle_partitions,
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        metrics_port=0,
    )
    started = time.monotonic()
    spark = build_session(settings, "cryptolake-bench-replay")
    # Keep every batch's progress, not only the last 100 (for the per-layer batch counts).
    spark.conf.set("spark.sql.streaming.numRecentProgressUpdates", "100000")
    print(
        f"spark {spark.version} session up in {time.monotonic() - started:.1f} s "
        f"({settings.spark_master}, driver memory {settings.driver_memory}, "
        f"{settings.shuffle_partitions} shuffle partitions, max offsets per trigger "
        f"{settings.max_offsets_per_trigger or 'unlimited'})",
        flush=True,
    )
    late = 0
    steps: dict[str, float] = {}

    def count_late(outcome: BatchOutcome) -> None:
        nonlocal late
        late += outcome.late
        for step, seconds in outcome.seconds.items():
            steps[step] = steps.get(step, 0.0) + seconds

    try:
        started = time.monotonic()
        queries = start_streams(spark, settings, "all", available_now=True,
                                on_refine_batch=count_late)  # fmt: skip
        for query in queries:
            query.awaitTermination()
            finished = time.monotonic() - started
            progress = query.recentProgress
            rows = sum(p.numInputRows for p in progress)
            slowest = max((p.durationMs.get("triggerExecution", 0) for p in progress), default=0)
            print(
                f"{query.name}: done after {finished:.1f} s, {rows:,} rows in, batches with "
                f"data: {len([p for p in progress if p.numInputRows])}, slowest batch "
                f"{slowest / 1000:.1f} s",
                flush=True,
            )
        total = time.monotonic() - started
        # Our java children: Spark's driver JVM, and the broker's unless it is excluded.
        jvm = java_children(os.getpid(), frozenset({broker_pid} if broker_pid else ()))
        jvm_rss = [peak_rss_mib(pid) or 0.0 for pid in jvm]
        print(
            f"peak RSS: JVM {' + '.join(f'{rss:,.0f}' for rss in jvm_rss) or '?'} MiB "
            f"(pid {', '.join(map(str, jvm)) or 'not found'}), python "
            f"{peak_rss_mib('self'):,.0f} MiB",
            flush=True,
        )

        def table(name: str) -> DataFrame:
            return spark.read.format("delta").load(settings.table_path(name))

        silver_rows = table("silver/trades").count()
        quarantined = table("silver/quarantine").count()
        print("refine's writer, summed over its batches: " + ", ".join(
            f"{step} {seconds:.1f} s" for step, seconds in steps.items()), flush=True)  # fmt: skip
        total_row = table("gold/candles_1m").agg(F.sum("trades").alias("trades")).first()
        gold_trades = (total_row["trades"] if total_row else None) or 0
        print(
            f"check: silver {silver_rows:,} rows, gold candles {gold_trades:,} trades, "
            f"quarantine {quarantined:,} rows ({late:,} late at gold)",
            flush=True,
        )
    finally:
        spark.stop()
    if silver_rows != args.trades or gold_trades != args.trades:
        raise SystemExit(
            f"check failed: expected {args.trades:,} in silver and in gold, got "
            f"{silver_rows:,} and {gold_trades:,}"
        )
    return total


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--trades", type=int, default=2_000_000, help="backlog size")
    parser.add_argument("--symbols", default="BTC-USDT,ETH-USDT,SOL-USDT", help="comma list")
    parser.add_argument(
        "--span-hours", type=float, default=3.0, help="event times cover this much, ending now"
    )
    parser.add_argument("--seed", type=int, default=42, help="market simulator seed")
    parser.add_argument("--partitions", type=int, default=3, help="topic partitions")
    parser.add_argument(
        "--max-offsets-per-trigger",
        type=int,
        help="Kafka records per micro-batch (None: one batch per query)",
    )
    parser.add_argument("--shuffle-partitions", type=int, default=4, help="Spark SQL shuffles")
    parser.add_argument("--driver-memory", default="4g", help="Spark driver heap")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"{args.trades:,} trades, {args.partitions} partitions",
        flush=True,
    )
    with (
        scratch_dir("bench-replay-", args.work_dir, args.keep) as root,
        kafka_broker(root, args.bootstrap_servers) as broker,
    ):
        topic = f"bench.{uuid.uuid4().hex[:8]}.trades"
        create_topic(broker.bootstrap_servers, topic, args.partitions)
        fill_topic(args, broker.bootstrap_servers, topic)
        total = run_jobs(args, broker.bootstrap_servers, topic, root, broker.pid)
    print(f"total: {total:.1f} s until bronze and refine had both finished")
    print(f"replay_trades_per_s={args.trades / total:.0f}")


if __name__ == "__main__":
    main()
