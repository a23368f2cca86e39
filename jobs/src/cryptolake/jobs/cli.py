"""``python -m cryptolake.jobs <command>``: the lakehouse jobs (same code locally and in a
Spark-on-Kubernetes driver pod). Settings come from ``CRYPTOLAKE_*`` environment variables."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

from pydantic import ValidationError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from cryptolake.jobs.maintenance import run_maintenance
from cryptolake.jobs.metrics import JobMetrics, ProgressListener
from cryptolake.jobs.monitor import all_status, render_json, render_text
from cryptolake.jobs.session import SparkSetupError, build_session
from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.streams import (
    LegacyCheckpoint,
    LegacyTables,
    UpstreamTableMissing,
    start_bronze,
    start_gold,
    start_silver,
)

log = logging.getLogger("cryptolake.jobs")

STREAMS = ("bronze", "silver", "gold", "all")

EPILOG = """\
commands:
  bronze       Kafka crypto.trades.v1 → bronze/trades
  silver       bronze → silver/trades (typed, deduplicated) + silver/quarantine (with reasons)
  gold         silver → gold/candles_1m, sma_5m, stats_hourly, stats_daily (idempotent MERGE)
  all          the three in one Spark application (local mode: one JVM)
  maintenance  OPTIMIZE closed partitions + VACUUM every table
  monitor      rows, Delta version, latest event time and freshness per table

environment: CRYPTOLAKE_BOOTSTRAP_SERVERS, CRYPTOLAKE_TRADES_TOPIC, CRYPTOLAKE_TABLE_ROOT,
CRYPTOLAKE_CHECKPOINT_ROOT, CRYPTOLAKE_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY,
CRYPTOLAKE_{BRONZE,SILVER,GOLD}_TRIGGER, CRYPTOLAKE_{SILVER,GOLD}_WATERMARK,
CRYPTOLAKE_STARTING_OFFSETS, CRYPTOLAKE_SPARK_MASTER, CRYPTOLAKE_METRICS_PORT,
CRYPTOLAKE_UPSTREAM_WAIT_S (see README).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cryptolake.jobs",
        description="CryptoLake's Spark Structured Streaming jobs on Delta Lake.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=[*STREAMS, "maintenance", "monitor"])
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="process what is there, then stop (backfill; streams only)",
    )
    parser.add_argument("--json", action="store_true", help="monitor: JSON instead of a table")
    return parser  # fmt: skip


def start_streams(
    spark: SparkSession, settings: JobSettings, command: str, *, available_now: bool,
    on_gold_batch: Callable[[dict[str, int]], None] | None = None,
    on_silver_batch: Callable[[dict[str, int]], None] | None = None,
) -> list[StreamingQuery]:  # fmt: skip
    queries: list[StreamingQuery] = []
    if command in ("bronze", "all"):
        queries.append(start_bronze(spark, settings, available_now=available_now))
    if command in ("silver", "all"):
        queries.append(
            start_silver(spark, settings, available_now=available_now, on_batch=on_silver_batch)
        )
    if command in ("gold", "all"):
        queries.append(
            start_gold(spark, settings, available_now=available_now, on_batch=on_gold_batch)
        )
    return queries


def stop_between_batches(queries: list[StreamingQuery], timeout_s: float = 15.0) -> None:
    """Stop each query between two batches where possible, within one overall budget: stopping
    interrupts a running batch, which is safe (it reruns on restart) but fills the log."""
    deadline = time.monotonic() + timeout_s
    for query in queries:
        while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
            time.sleep(0.1)
        query.stop()


def run_streams(settings: JobSettings, command: str, *, available_now: bool) -> int:
    """Run until SIGTERM/SIGINT (streams stop cleanly, checkpoints kept) or a query fails."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    metrics = JobMetrics()
    metrics.serve(settings.metrics_port)
    spark = build_session(settings, f"cryptolake-{command}")
    spark.streams.addListener(ProgressListener(metrics))

    def count_late(info: dict[str, int]) -> None:
        metrics.late_rows.inc(info["late"])

    try:
        if available_now:
            # One layer after the other, each to the end of its input: a deterministic backfill.
            for layer in ("bronze", "silver", "gold") if command == "all" else (command,):
                for query in start_streams(spark, settings, layer, available_now=True,
                                           on_gold_batch=count_late,
                                           on_silver_batch=metrics.count_rules):  # fmt: skip
                    query.awaitTermination()
            return 0
        queries = start_streams(spark, settings, command, available_now=False,
                                on_gold_batch=count_late,
                                on_silver_batch=metrics.count_rules)  # fmt: skip
        log.info("%s running: %s; Ctrl-C or SIGTERM stops it", command,
                 ", ".join(q.name for q in queries))  # fmt: skip
        while not stop.is_set():
            for query in queries:
                if not query.isActive:
                    log.error("query %s ended: %s", query.name, query.exception())
                    return 1
            stop.wait(1.0)
        log.info("stopping %d queries (checkpoints keep their progress)", len(queries))
        stop_between_batches(queries)
        return 0
    finally:
        spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = JobSettings()
    except ValidationError as exc:
        parser.error(
            "; ".join(
                f"CRYPTOLAKE_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                for e in exc.errors()
            )
        )
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")  # fmt: skip
    # py4j logs every gateway call at INFO.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        if args.command in STREAMS:
            return run_streams(settings, args.command, available_now=args.available_now)
        spark = build_session(settings, f"cryptolake-{args.command}")
        try:
            if args.command == "maintenance":
                run_maintenance(spark, settings)
            else:
                statuses = all_status(spark, settings)
                print(render_json(statuses) if args.json else render_text(statuses))
        finally:
            spark.stop()
        return 0
    except (SparkSetupError, LegacyCheckpoint, LegacyTables) as exc:
        log.error("%s", exc)
        return 2
    except UpstreamTableMissing as exc:
        log.error("%s", exc)
        return 3
    except PySparkException as exc:
        log.error("spark: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
