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
from pathlib import Path

from pydantic import ValidationError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession
from pyspark.sql.streaming.query import StreamingQuery

from cryptolake.common.dumps import DumpError
from cryptolake.jobs.backfill import backfill
from cryptolake.jobs.maintenance import run_maintenance
from cryptolake.jobs.metrics import JobMetrics, ProgressListener
from cryptolake.jobs.monitor import all_status, render_json, render_text
from cryptolake.jobs.refine import (
    BatchOutcome,
    LegacyLayout,
    LostCheckpoint,
    rebuild,
    start_refine,
)
from cryptolake.jobs.session import SparkSetupError, build_session
from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.streams import LegacyTables, start_bronze
from cryptolake.jobs.topic import TopicReplaced, replaced_in

log = logging.getLogger("cryptolake.jobs")

STREAMS = ("bronze", "refine", "all")

EPILOG = """\
commands:
  bronze       Kafka crypto.trades.v1 → bronze/trades (the archive, off the live path)
  refine       Kafka crypto.trades.v1 → silver/trades (typed, deduplicated), silver/quarantine
               (with reasons) and gold/candles_1m in one query; sma_5m, stats_hourly and
               stats_daily follow the candles
  all          bronze and refine in one Spark application (local mode: one JVM)
  rebuild      recompute silver and gold from bronze (streams stopped); refine then resumes
               where bronze ends
  backfill     Binance trade dumps (FILE.zip|csv …) → bronze, silver, quarantine and gold in
               one batch, no broker (streams stopped); running the same files again is a no-op
  maintenance  OPTIMIZE closed partitions + VACUUM every table
  monitor      rows, Delta version, latest event time and freshness per table

environment: CRYPTOLAKE_BOOTSTRAP_SERVERS, CRYPTOLAKE_TRADES_TOPIC, CRYPTOLAKE_TABLE_ROOT,
CRYPTOLAKE_CHECKPOINT_ROOT, CRYPTOLAKE_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY, CRYPTOLAKE_S3_TRUSTSTORE
(a PKCS#12 trust store for an S3 endpoint of a private CA, password "changeit"),
CRYPTOLAKE_{BRONZE,REFINE}_TRIGGER, CRYPTOLAKE_{SILVER,GOLD}_WATERMARK,
CRYPTOLAKE_GOLD_DERIVED_INTERVAL, CRYPTOLAKE_STARTING_OFFSETS, CRYPTOLAKE_SPARK_MASTER,
CRYPTOLAKE_METRICS_PORT, CRYPTOLAKE_ADOPT_TOPIC_ID (a recreated topic's id: read it from its
first offset; the streams refuse a recreated topic until told so) (docs/lakehouse.md).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cryptolake.jobs",
        description="CryptoLake's Spark Structured Streaming jobs on Delta Lake.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", choices=[*STREAMS, "rebuild", "backfill", "maintenance", "monitor"]
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="backfill: Binance trade dumps (SYMBOL-trades-YYYY-MM-DD.zip|csv)",
    )
    parser.add_argument(
        "--symbol",
        help="backfill: the pair of every file (BASE-QUOTE; default: from each file's name)",
    )
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="process what is there, then stop (backfill; streams only)",
    )
    parser.add_argument("--json", action="store_true", help="monitor: JSON instead of a table")
    return parser  # fmt: skip


def start_streams(
    spark: SparkSession, settings: JobSettings, command: str, *, available_now: bool,
    on_refine_batch: Callable[[BatchOutcome], None] | None = None,
) -> list[StreamingQuery]:  # fmt: skip
    queries: list[StreamingQuery] = []
    if command in ("bronze", "all"):
        queries.append(start_bronze(spark, settings, available_now=available_now))
    if command in ("refine", "all"):
        query, _ = start_refine(
            spark, settings, available_now=available_now, on_batch=on_refine_batch
        )
        queries.append(query)
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

    def count(outcome: BatchOutcome) -> None:
        metrics.count_rules(outcome.rule_rows)
        metrics.late_rows.inc(outcome.late)

    try:
        queries = start_streams(spark, settings, command, available_now=available_now,
                                on_refine_batch=count)  # fmt: skip
        if available_now:
            # Each query runs to the end of its input and stops: a backlog or backfill run.
            for query in queries:
                query.awaitTermination()
            return 0
        log.info("%s running: %s; Ctrl-C or SIGTERM stops it", command,
                 ", ".join(q.name for q in queries))  # fmt: skip
        while not stop.is_set():
            for query in queries:
                if not query.isActive:
                    error = str(query.exception())
                    replaced = replaced_in(error)
                    if replaced is not None:
                        log.error("query %s stopped: %s", query.name, replaced)
                        return 2
                    log.error("query %s ended: %s", query.name, error)
                    return 1
            stop.wait(1.0)
        log.info("stopping %d queries (checkpoints keep their progress)", len(queries))
        stop_between_batches(queries)
        return 0
    finally:
        spark.stop()


def run_rebuild(spark: SparkSession, settings: JobSettings) -> None:
    started = time.monotonic()
    log.info("rebuild: silver and gold from %s (the streams must be stopped)",
             settings.table_path("bronze/trades"))  # fmt: skip
    outcome = rebuild(spark, settings)
    log.info("rebuild: %d trades to silver, %d rows to quarantine, %d bars merged in %.1f s",
             outcome.rule_rows["valid"], sum(outcome.rule_rows.values())
             - outcome.rule_rows["valid"] + outcome.late, outcome.bars,
             time.monotonic() - started)  # fmt: skip


def run_backfill(
    spark: SparkSession, settings: JobSettings, files: list[Path], symbol: str | None
) -> None:
    started = time.monotonic()
    log.info("backfill: %d file(s) into %s (the streams must be stopped)", len(files),
             settings.table_root)  # fmt: skip
    outcome = backfill(spark, settings, files, symbol)
    if outcome is None:
        return
    seconds = time.monotonic() - started
    rejected = sum(outcome.rule_rows.values()) - outcome.rule_rows["valid"]
    log.info("backfill: %d trades to silver (%.0f/s), %d rows to quarantine, %d bars merged, "
             "in %.1f s", outcome.rule_rows["valid"], outcome.rule_rows["valid"] / seconds,
             rejected, outcome.bars, seconds)  # fmt: skip


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
    if (args.command == "backfill") != bool(args.files):
        parser.error("backfill takes the dump files; no other command takes files")
    try:
        if args.command in STREAMS:
            return run_streams(settings, args.command, available_now=args.available_now)
        spark = build_session(settings, f"cryptolake-{args.command}")
        try:
            if args.command == "maintenance":
                run_maintenance(spark, settings)
            elif args.command == "rebuild":
                run_rebuild(spark, settings)
            elif args.command == "backfill":
                run_backfill(spark, settings, args.files, args.symbol)
            else:
                statuses = all_status(spark, settings)
                print(render_json(statuses) if args.json else render_text(statuses))
        finally:
            spark.stop()
        return 0
    except (SparkSetupError, LegacyLayout, LostCheckpoint, LegacyTables, DumpError,
            TopicReplaced) as exc:  # fmt: skip
        log.error("%s", exc)
        return 2
    except PySparkException as exc:
        replaced = replaced_in(str(exc))
        if replaced is not None:
            log.error("%s", replaced)
            return 2
        log.error("spark: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
