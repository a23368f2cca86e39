"""The I/O shell the lakehouse's queries share: table creation, the Kafka source, exactly-once
appends, Delta retries; and the ``bronze`` archive query. ``refine.py`` holds the other.

Exactly once: every query has its own checkpoint, and appends each micro-batch once
(``BatchAppender``: commits tagged with the batch, looked up after a restart).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from delta.exceptions import (
    ConcurrentAppendException,
    ConcurrentDeleteDeleteException,
    ConcurrentDeleteReadException,
    ConcurrentTransactionException,
    ConcurrentWriteException,
    DeltaConcurrentModificationException,
    MetadataChangedException,
)
from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming.query import StreamingQuery

from cryptolake.common.kafka_client import java_kafka_config
from cryptolake.jobs import tables
from cryptolake.jobs.files import delete_path, list_names
from cryptolake.jobs.maintenance import MaintenanceSchedule
from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.tables import PARTITION_COLUMNS
from cryptolake.jobs.topic import TopicGuard
from cryptolake.jobs.transforms import bronze_from_kafka, candles_1m, period_stats, sma_5m

log = logging.getLogger(__name__)

TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
_Result = TypeVar("_Result")
# What a Delta commit raises when another writer (OPTIMIZE, a second job) committed first.
CONCURRENT_COMMIT = (
    ConcurrentAppendException, ConcurrentDeleteDeleteException, ConcurrentDeleteReadException,
    ConcurrentTransactionException, ConcurrentWriteException,
    DeltaConcurrentModificationException, MetadataChangedException,
)  # fmt: skip


def empty_frame(spark: SparkSession, schema: T.StructType) -> DataFrame:
    return spark.createDataFrame([], schema)


def table_schemas(spark: SparkSession) -> dict[str, T.StructType]:
    """Every table's schema; Gold's are derived from the transforms that fill them."""
    silver = empty_frame(spark, tables.SILVER_SCHEMA)
    candles = candles_1m(silver)
    return {
        tables.BRONZE_TRADES: tables.BRONZE_SCHEMA,
        tables.SILVER_TRADES: tables.SILVER_SCHEMA,
        tables.SILVER_QUARANTINE: tables.QUARANTINE_SCHEMA,
        tables.GOLD_CANDLES_1M: candles.schema,
        tables.GOLD_SMA_5M: sma_5m(candles).schema,
        tables.GOLD_STATS_HOURLY: period_stats(candles, "hour").schema,
        tables.GOLD_STATS_DAILY: period_stats(candles, "day").schema,
    }


# The one query that creates and writes each table. Delta's log on S3 here has no atomic
# put-if-absent: two drivers committing one version of a table at once may each write it (one
# the .json, the other the .crc) and leave a table no reader can load
# (DELTA_STATE_RECOVER_ERROR). So each table has one writer, and no query reads another's.
DERIVED_TABLES = (tables.GOLD_SMA_5M, tables.GOLD_STATS_HOURLY, tables.GOLD_STATS_DAILY)
TABLE_WRITERS: dict[str, list[str]] = {
    "bronze": [tables.BRONZE_TRADES],
    "refine": [tables.SILVER_TRADES, tables.SILVER_QUARANTINE, tables.GOLD_CANDLES_1M,
               *DERIVED_TABLES],
}  # fmt: skip


def ensure_tables(spark: SparkSession, settings: JobSettings, job: str) -> None:
    """Create the tables ``job`` owns if missing (idempotent), so readers and MERGEs find them;
    add the columns a newer contract added (null in the rows before); refuse tables written
    with other column types (an older contract)."""
    schemas = table_schemas(spark)
    for name in TABLE_WRITERS[job]:
        path = settings.table_path(name)
        if _delta_table_exists(spark, path):
            found = DeltaTable.forPath(spark, path).toDF().schema
            _refuse_other_types(name, found, schemas[name])
            _add_new_columns(spark, path, found, schemas[name])
            continue
        builder = DeltaTable.createIfNotExists(spark).location(path)
        builder = builder.addColumns(schemas[name]).partitionedBy(*PARTITION_COLUMNS[name])
        try:
            builder.execute()
        except AnalysisException as exc:
            if exc.getCondition() != "DELTA_TABLE_NOT_FOUND":
                raise
            _clear_uncommitted_log(spark, path)
            builder.execute()


class LegacyTables(RuntimeError):
    """Tables written under an older contract (other column types): rebuild them."""


def _refuse_other_types(name: str, found: T.StructType, wanted: T.StructType) -> None:
    """Before exact decimals, prices, quantities and Gold's sums were DECIMAL(38,18); appending
    or merging the new types into them would cut scales again, so say how to rebuild."""
    found_types = {field.name: field.dataType for field in found.fields}
    changed = [
        f"{field.name} {found_types[field.name].simpleString()} (now "
        f"{field.dataType.simpleString()})"
        for field in wanted.fields
        if field.name in found_types and found_types[field.name] != field.dataType
    ]
    if changed:
        raise LegacyTables(
            f"{name} was written with other column types: {', '.join(changed)}. Rebuild silver "
            "and gold from bronze: stop the jobs and run `python -m cryptolake.jobs rebuild` "
            "(`make rebuild` locally; bronze is kept)"
        )


def _add_new_columns(
    spark: SparkSession, path: str, found: T.StructType, wanted: T.StructType
) -> None:
    """Columns added to a table's contract (e.g. candles' trade id bounds and ``complete``),
    nullable, appended to an existing table: its earlier rows read them as null."""
    new = [f"`{f.name}` {f.dataType.simpleString()}" for f in wanted.fields
           if f.name not in found.fieldNames()]  # fmt: skip
    if new:
        log.info("adding columns to %s: %s", path, ", ".join(new))
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({', '.join(new)})")


def _delta_table_exists(spark: SparkSession, path: str) -> bool:
    # Delta caches the log of a table it looked for too early (its _delta_log folder there, no
    # commit yet) and would call it missing forever: forget it before each look.
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(spark._jsparkSession, hadoop_path)
    if not DeltaTable.isDeltaTable(spark, path):
        return False
    try:
        DeltaTable.forPath(spark, path)
    except AnalysisException as exc:
        if exc.getCondition() != "DELTA_TABLE_NOT_FOUND":
            raise
        _clear_uncommitted_log(spark, path)
        return False
    return True


def _clear_uncommitted_log(spark: SparkSession, path: str) -> None:
    """A creation killed between its _delta_log folder and its first commit leaves a folder
    Delta will neither open nor create over: with no commit in it there is nothing to keep."""
    log_path = f"{path}/_delta_log"
    commits = [name for name in list_names(spark, log_path) if name.endswith((".json", ".parquet"))]
    if commits:  # never: Delta opens a log with commits; but nothing committed is deleted
        raise RuntimeError(f"{path}: Delta finds no table, yet its log holds {commits[:3]}")
    log.warning("%s: a creation was killed before its first commit; creating it again", path)
    delete_path(spark, log_path)
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(spark._jsparkSession, hadoop_path)


def kafka_stream(
    spark: SparkSession, settings: JobSettings, *, starting_offsets: str | None = None
) -> DataFrame:
    """The trades topic; ``starting_offsets`` (a Kafka source JSON) overrides the setting."""
    reader = (
        spark.readStream.format("kafka")
        .options(**{f"kafka.{k}": v for k, v in java_kafka_config(settings).items()})
        .option("subscribe", settings.trades_topic)
        .option("startingOffsets", starting_offsets or settings.starting_offsets)
        # Retention may delete offsets not yet read; say so in the log but keep going. A
        # recreated topic is caught by topic.TopicGuard instead (no silent skip).
        .option("failOnDataLoss", "false")
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    return reader.load()


def trigger(settings_value: str, available_now: bool) -> dict[str, Any]:
    return {"availableNow": True} if available_now else {"processingTime": settings_value}


@dataclass
class BatchAppender:
    """Appends a micro-batch's rows to Delta tables exactly once. Each commit carries
    ``userMetadata`` = "<query id>:<batch id>"; only a run's first batch can replay a batch
    that committed before a crash, so only then are the table's recent commits searched for
    that tag. Not Delta's ``txnAppId``: its check rebuilds the table's whole state (every file
    of it) on each commit, which made every append of a growing table slower."""

    settings: JobSettings
    query: str
    # The tag's first part; None: the query's id from its checkpoint.
    app_id: str | None = None
    _checked: set[str] = field(default_factory=set, repr=False)

    def append(self, frame: DataFrame, table: str, batch_id: int) -> None:
        spark = frame.sparkSession
        if self.app_id is None:
            self.app_id = checkpoint_app_id(spark, self.settings.checkpoint_path(self.query))
        tag = f"{self.app_id}:{batch_id}"
        path = self.settings.table_path(table)
        if table not in self._checked:
            self._checked.add(table)
            if _has_commit_tagged(spark, path, tag):
                log.info("%s: batch %d is already in %s (replayed after a restart)",
                         self.query, batch_id, table)  # fmt: skip
                return
        writer = frame.write.format("delta").mode("append").option("userMetadata", tag)
        retry_on_conflict(lambda: writer.save(path), table)


# How far back a restarted query looks for its last batch's commit.
RECENT_COMMITS = 100


def _has_commit_tagged(spark: SparkSession, path: str, tag: str) -> bool:
    history = DeltaTable.forPath(spark, path).history(RECENT_COMMITS)
    return history.where(F.col("userMetadata") == tag).limit(1).count() > 0


def _transactions(spark: SparkSession, path: str) -> Any:
    """The table's ``txnAppId`` → ``txnVersion`` map (a Scala Map): Delta keeps these in the
    table's state, not only in recent commits."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    none = jvm.scala.Option.empty()
    return delta_log.update(False, none, none).transactions()


def committed_txn(spark: SparkSession, path: str, app_id: str) -> int | None:
    """The last ``txnVersion`` the table committed for ``app_id`` (None: none)."""
    version = _transactions(spark, path).get(app_id)
    return int(version.get()) if version.isDefined() else None


def txn_app_ids(spark: SparkSession, path: str) -> list[str]:
    """Every ``txnAppId`` the table has committed under."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    converters = jvm.scala.jdk.javaapi.CollectionConverters
    return sorted(converters.asJava(_transactions(spark, path)).keySet())


def start_bronze(
    spark: SparkSession, settings: JobSettings, *, available_now: bool = False
) -> StreamingQuery:
    """Kafka → bronze/trades: the record as it came, partitioned by ingest date."""
    ensure_tables(spark, settings, "bronze")
    guard = TopicGuard(spark, settings, "bronze")
    # A recreated topic adopted: a new checkpoint, from the new topic's first offset.
    adopted = guard.on_start(reset=[(settings.checkpoint_path("bronze"), None)])
    appender = BatchAppender(settings, "bronze")
    maintenance = MaintenanceSchedule(settings, "bronze", TABLE_WRITERS["bronze"])

    def write(batch: DataFrame, batch_id: int) -> None:
        guard.before_batch()
        appender.append(batch, tables.BRONZE_TRADES, batch_id)
        maintenance.run_if_due(batch.sparkSession)

    return (
        bronze_from_kafka(
            kafka_stream(spark, settings, starting_offsets="earliest" if adopted else None)
        )
        .writeStream.queryName("bronze")
        .foreachBatch(write)
        .option("checkpointLocation", settings.checkpoint_path("bronze"))
        .trigger(**trigger(settings.bronze_trigger, available_now))
        .start()
    )


def checkpoint_app_id(spark: SparkSession, checkpoint: str) -> str:
    """The query's id from its checkpoint (its commit tag, refine's ``txnAppId``): stable
    across restarts, new with a new checkpoint (so a reset stream's batch 0 is never mistaken
    for an old batch 0)."""
    text = spark.read.text(checkpoint + "/metadata").first()
    query_id = json.loads(text[0])["id"] if text else "unknown"
    return f"cryptolake-{checkpoint.rstrip('/').rsplit('/', 1)[-1]}-{query_id}"


def retry_on_conflict(action: Callable[[], _Result], what: str, attempts: int = 4) -> _Result:
    """Delta's optimistic concurrency: a MERGE that raced OPTIMIZE is retried, not fatal."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except CONCURRENT_COMMIT as exc:
            if attempt == attempts:
                raise
            log.warning("%s: concurrent commit (%s), retry %d", what, type(exc).__name__, attempt)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def ranges_condition(
    ranges: list[tuple[str, str, Any, Any]],
    column: str,
    before: timedelta,
    after: timedelta,
    *,
    alias: str | None = None,
    date_column: str | None = None,
) -> Column:
    """Rows of the listed (exchange, symbol) whose ``column`` lies in [lo - before, hi + after).
    Literal bounds let Delta skip files by their min/max stats; ``date_column`` (the partition
    column, which Delta cannot derive from ``column``) adds partition pruning."""

    def col(name: str) -> Column:
        return F.col(f"{alias}.{name}" if alias else name)

    condition = F.lit(False)
    for exchange, symbol, lo, hi in ranges:
        start, end = F.lit(lo - before), F.lit(hi + after)
        term = (
            (col("exchange") == exchange)
            & (col("symbol") == symbol)
            & (col(column) >= start)
            & (col(column) < end)
        )
        if date_column is not None:
            term = term & col(date_column).between(F.to_date(start), F.to_date(end))
        condition = condition | term
    return condition
