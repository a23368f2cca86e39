"""The I/O shell of the lakehouse: Kafka and Delta sources, Delta sinks, Gold's MERGEs.

Exactly once: every query has its own checkpoint. Bronze and Silver append each micro-batch
once (``BatchAppender``: commits tagged with the batch, looked up after a restart). Gold folds
each micro-batch into its tables with MERGEs tagged ``txnAppId``/``txnVersion`` = (this
query's id, batch id), so a replayed batch is skipped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming.query import StreamingQuery

from cryptolake.jobs import tables
from cryptolake.jobs.settings import JobSettings, duration_us
from cryptolake.jobs.tables import PARTITION_COLUMNS
from cryptolake.jobs.transforms import (
    CANDLE_KEY,
    bronze_from_kafka,
    candles_1m,
    deduplicate,
    fold_candles,
    late_rows,
    market_id,
    market_key,
    market_summary,
    parse_trades,
    period_stats,
    reason_counts,
    rejected_rows,
    sma_5m,
    split_late,
    valid_trades,
)

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


# The one job that creates each table (and streams into it). Delta's log on S3 here has no
# atomic put-if-absent: two drivers creating one table at once may each write version 0 (one
# the .json, the other the .crc) and leave a table no reader can load
# (DELTA_STATE_RECOVER_ERROR). So a job creates only its own tables and waits for upstream ones.
DERIVED_TABLES = (tables.GOLD_SMA_5M, tables.GOLD_STATS_HOURLY, tables.GOLD_STATS_DAILY)
TABLE_CREATORS: dict[str, list[str]] = {
    "bronze": [tables.BRONZE_TRADES],
    "silver": [tables.SILVER_TRADES, tables.SILVER_QUARANTINE],
    "gold": [tables.GOLD_CANDLES_1M, *DERIVED_TABLES],
}  # fmt: skip


def creator_of(table: str) -> str:
    return next(job for job, owned in TABLE_CREATORS.items() if table in owned)


def ensure_tables(spark: SparkSession, settings: JobSettings, job: str) -> None:
    """Create the tables ``job`` owns if missing (idempotent), so readers and MERGEs find them;
    refuse tables written with other column types (an older contract)."""
    schemas = table_schemas(spark)
    for name in TABLE_CREATORS[job]:
        path = settings.table_path(name)
        if _delta_table_exists(spark, path):
            _refuse_other_types(name, DeltaTable.forPath(spark, path).toDF().schema, schemas[name])
            continue
        builder = DeltaTable.createIfNotExists(spark).location(path)
        builder.addColumns(schemas[name]).partitionedBy(*PARTITION_COLUMNS[name]).execute()


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
            "and gold from bronze: stop the jobs, delete the silver/ and gold/ tables and the "
            "silver and gold checkpoints under the table root, and start the jobs again "
            "(bronze is kept)"
        )


def wait_for_tables(
    spark: SparkSession, settings: JobSettings, names: list[str], *, poll_s: float = 2.0
) -> None:
    """Block until the upstream jobs have created ``names`` (at most
    ``settings.upstream_wait_s``, logging every 30 s what is missing and who creates it)."""
    deadline = time.monotonic() + settings.upstream_wait_s
    next_log = time.monotonic()
    missing = list(names)
    while True:
        missing = [n for n in missing if not _delta_table_exists(spark, settings.table_path(n))]
        if not missing:
            return
        waiting_for = ", ".join(f"{n} (created by the {creator_of(n)} job)" for n in missing)
        if time.monotonic() >= deadline:
            raise UpstreamTableMissing(
                f"{waiting_for} still missing under {settings.table_root} after "
                f"{settings.upstream_wait_s:.0f} s: start that job first "
                "(CRYPTOLAKE_UPSTREAM_WAIT_S sets how long to wait)"
            )
        if time.monotonic() >= next_log:
            log.info("waiting for %s", waiting_for)
            next_log = time.monotonic() + 30
        time.sleep(poll_s)


def _delta_table_exists(spark: SparkSession, path: str) -> bool:
    # Delta caches the log of a table it looked for too early (its _delta_log folder there, no
    # commit yet) and would call it missing forever: forget it before each look.
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(spark._jsparkSession, hadoop_path)
    return DeltaTable.isDeltaTable(spark, path)


class UpstreamTableMissing(RuntimeError):
    """A table this job reads was never created by the job that owns it."""


def kafka_stream(spark: SparkSession, settings: JobSettings) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", settings.trades_topic)
        .option("startingOffsets", settings.starting_offsets)
        # Retention may delete offsets not yet read; say so in the log but keep going.
        .option("failOnDataLoss", "false")
    )
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    return reader.load()


def _trigger(settings_value: str, available_now: bool) -> dict[str, Any]:
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
    _app_id: str | None = field(default=None, repr=False)
    _checked: set[str] = field(default_factory=set, repr=False)

    def append(self, frame: DataFrame, table: str, batch_id: int) -> None:
        spark = frame.sparkSession
        if self._app_id is None:
            self._app_id = checkpoint_app_id(spark, self.settings.checkpoint_path(self.query))
        tag = f"{self._app_id}:{batch_id}"
        path = self.settings.table_path(table)
        if table not in self._checked:
            self._checked.add(table)
            if _has_commit_tagged(spark, path, tag):
                log.info("%s: batch %d is already in %s (replayed after a restart)",
                         self.query, batch_id, table)  # fmt: skip
                return
        writer = frame.write.format("delta").mode("append").option("userMetadata", tag)
        _retry_on_conflict(lambda: writer.save(path), table)


# How far back a restarted query looks for its last batch's commit (other writers' commits,
# e.g. gold's late rows in silver/quarantine, may have landed after it).
RECENT_COMMITS = 100


def _has_commit_tagged(spark: SparkSession, path: str, tag: str) -> bool:
    history = DeltaTable.forPath(spark, path).history(RECENT_COMMITS)
    return history.where(F.col("userMetadata") == tag).limit(1).count() > 0


def start_bronze(
    spark: SparkSession, settings: JobSettings, *, available_now: bool = False
) -> StreamingQuery:
    """Kafka → bronze/trades: the record as it came, partitioned by ingest date."""
    ensure_tables(spark, settings, "bronze")
    appender = BatchAppender(settings, "bronze")

    def write(batch: DataFrame, batch_id: int) -> None:
        appender.append(batch, tables.BRONZE_TRADES, batch_id)

    return (
        bronze_from_kafka(kafka_stream(spark, settings))
        .writeStream.queryName("bronze")
        .foreachBatch(write)
        .option("checkpointLocation", settings.checkpoint_path("bronze"))
        .trigger(**_trigger(settings.bronze_trigger, available_now))
        .start()
    )


@dataclass
class SilverWriter:
    """``foreachBatch`` function of the silver query: one parsed, deduplicated batch → valid
    trades appended to silver/trades, rejected rows to silver/quarantine, each exactly once
    (``BatchAppender``). One query instead of two: every row is read and parsed once, and two
    cores run one query's batches instead of two."""

    settings: JobSettings
    on_batch: Callable[[dict[str, int]], None] | None = None
    appender: BatchAppender = field(init=False)

    def __post_init__(self) -> None:
        self.appender = BatchAppender(self.settings, "silver")

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        # Cached, so the dedup state is updated by one execution and both writes read it.
        batch = batch.persist()
        try:
            counts = batch.select(*reason_counts(batch)).first()
            rule_rows = {} if counts is None else counts.asDict()
            valid = rule_rows.get("valid", 0)
            outputs = [
                (tables.SILVER_TRADES, valid_trades(batch), valid),
                (tables.SILVER_QUARANTINE, rejected_rows(batch),
                 sum(rule_rows.values()) - valid),
            ]  # fmt: skip
            for table, frame, rows in outputs:
                if rows:  # no empty commits: gold would run a batch for each
                    self.appender.append(frame, table, batch_id)
        finally:
            batch.unpersist()
        if self.on_batch is not None:
            self.on_batch(rule_rows)


def start_silver(
    spark: SparkSession,
    settings: JobSettings,
    *,
    available_now: bool = False,
    on_batch: Callable[[dict[str, int]], None] | None = None,
) -> StreamingQuery:
    """bronze → silver/trades (valid, deduplicated) and silver/quarantine (with a reason), in
    one query; ``on_batch`` gets each batch's per-rule counts (DLT-style expectations)."""
    refuse_legacy_silver_checkpoints(spark, settings)
    wait_for_tables(spark, settings, [tables.BRONZE_TRADES])
    ensure_tables(spark, settings, "silver")
    bronze = spark.readStream.format("delta").load(settings.table_path(tables.BRONZE_TRADES))
    parsed = parse_trades(bronze, max_future_skew_s=settings.max_future_skew_s)
    return (
        deduplicate(parsed, settings.silver_watermark)
        .writeStream.queryName("silver")
        .foreachBatch(SilverWriter(settings, on_batch=on_batch))
        .option("checkpointLocation", settings.checkpoint_path("silver"))
        .trigger(**_trigger(settings.silver_trigger, available_now))
        .start()
    )


# Before one query wrote both silver tables, two did, each with its own checkpoint.
LEGACY_SILVER_CHECKPOINTS = ("silver_trades", "silver_quarantine")


class LegacyCheckpoint(RuntimeError):
    """Checkpoints of an older layout: starting over would write every row a second time."""


def refuse_legacy_silver_checkpoints(spark: SparkSession, settings: JobSettings) -> None:
    """A lakehouse whose silver ran as two queries has no ``silver`` checkpoint: the new query
    would read bronze from its start and append every trade again (and gold would count them
    twice), so say how to rebuild instead."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()

    def exists(path: str) -> bool:
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        return bool(hadoop_path.getFileSystem(hadoop_conf).exists(hadoop_path))

    legacy = [name for name in LEGACY_SILVER_CHECKPOINTS if exists(settings.checkpoint_path(name))]
    if legacy and not exists(settings.checkpoint_path("silver")):
        raise LegacyCheckpoint(
            f"{settings.checkpoints} holds the checkpoints of the old two-query silver job "
            f"({', '.join(legacy)}); the one `silver` query would append every bronze row "
            "again. Rebuild silver and gold from bronze: stop the jobs, delete the silver/ and "
            "gold/ tables and the silver*, gold checkpoints under the table root, and start "
            "the jobs again (bronze is kept)"
        )


def checkpoint_app_id(spark: SparkSession, checkpoint: str) -> str:
    """The query's id from its checkpoint (gold's ``txnAppId``, bronze's and silver's commit
    tag): stable across restarts, new with a new checkpoint (so a reset stream's batch 0 is
    never mistaken for an old batch 0)."""
    text = spark.read.text(checkpoint + "/metadata").first()
    query_id = json.loads(text[0])["id"] if text else "unknown"
    return f"cryptolake-{checkpoint.rstrip('/').rsplit('/', 1)[-1]}-{query_id}"


def _retry_on_conflict(action: Callable[[], _Result], what: str, attempts: int = 4) -> _Result:
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


def _ranges_condition(
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


@dataclass
class GoldWriter:
    """``foreachBatch`` function of the gold query: late split, candle MERGE, derived tables.

    The derived tables (SMA, hour and day statistics) are refreshed at most every
    ``derived_interval_s``, on a thread of their own with its own Spark session, so their
    three MERGEs never hold up a candles commit; with 0 (a run to the end of the input) after
    every batch, in line. A failed refresh fails the query at its next batch."""

    settings: JobSettings
    on_batch: Callable[[dict[str, int]], None] | None = None
    # Market key → its newest event time merged (µs): each market's lateness is judged by its
    # own trades, so one market's clock never makes another's trades late.
    newest_us: dict[str, int] | None = None
    # Seconds between refreshes of the SMA and hour/day tables (0: after every batch, in line).
    derived_interval_s: float = 0.0
    _app_id: str | None = field(default=None, repr=False)
    # (exchange, symbol) → the minutes whose bars changed since the last derived refresh.
    _pending: dict[tuple[str, str], tuple[Any, Any]] | None = field(default=None, repr=False)
    _next_derived: float = field(default=0.0, repr=False)
    _refresher: threading.Thread | None = field(default=None, repr=False)
    _refresh_error: BaseException | None = field(default=None, repr=False)
    _refresh_session: SparkSession | None = field(default=None, repr=False)

    def _unrefreshed_ranges(self, spark: SparkSession) -> list[tuple[str, str, Any, Any]]:
        """Bars merged after the last derived refresh (its ``updated_at`` in the three derived
        tables; all bars if one was never refreshed): a stop between a candles MERGE and the
        next refresh loses no update of the derived tables."""
        settings = self.settings
        candles = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
        refreshed = []
        for name in DERIVED_TABLES:
            derived = spark.read.format("delta").load(settings.table_path(name))
            row = derived.agg(F.max("updated_at").alias("last")).first()
            if row is not None and row["last"] is not None:
                refreshed.append(row["last"])
        if len(refreshed) == len(DERIVED_TABLES):
            candles = candles.where(F.col("updated_at") > F.lit(min(refreshed)))
        return _minute_ranges(candles)

    def _initial_newest_us(self, spark: SparkSession) -> dict[str, int]:
        path = self.settings.table_path(tables.GOLD_CANDLES_1M)
        rows = (
            spark.read.format("delta")
            .load(path)
            .groupBy(market_key(F.col("exchange"), F.col("symbol")).alias("market"))
            .agg(F.unix_micros(F.max("last_trade_time")).alias("newest"))
            .collect()
        )
        return {row["market"]: row["newest"] for row in rows}

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self._refresh_error is not None:
            error, self._refresh_error = self._refresh_error, None
            raise DerivedRefreshFailed("refreshing gold's derived tables failed") from error
        spark = batch.sparkSession
        if self._app_id is None:
            self._app_id = checkpoint_app_id(spark, self.settings.checkpoint_path("gold"))
        if self.newest_us is None:
            self.newest_us = self._initial_newest_us(spark)
        if self._pending is None:
            self._pending = {}
            self._note_changed(self._unrefreshed_ranges(spark))
        spark.conf.set(TXN_APP_ID, self._app_id)
        spark.conf.set(TXN_VERSION, str(batch_id))
        batch = batch.persist()
        try:
            self._process(spark, batch, batch_id)
        finally:
            spark.conf.unset(TXN_APP_ID)
            spark.conf.unset(TXN_VERSION)
            batch.unpersist()
        self._maybe_refresh_derived(spark)

    def _process(self, spark: SparkSession, batch: DataFrame, batch_id: int) -> None:
        settings = self.settings
        assert self.newest_us is not None
        delay = duration_us(settings.gold_watermark)
        watermarks = {market: newest - delay for market, newest in self.newest_us.items()}
        # One pass over the batch: its size, newest trade, late count and minutes per market.
        markets = market_summary(batch, watermarks).collect()
        if not markets:
            return  # nothing new: no commits (silver's no-data batches land here)
        late_count = sum(row["late"] for row in markets)
        on_time, late = split_late(batch, watermarks)
        if late_count:
            # Same txnAppId/txnVersion as the MERGEs: a replayed batch appends nothing.
            late_rows(late, watermarks).write.format("delta").mode("append").save(
                settings.table_path(tables.SILVER_QUARANTINE)
            )
        ranges = [
            (row["exchange"], row["symbol"], row["lo"], row["hi"])
            for row in markets
            if row["lo"] is not None
        ]
        if ranges:
            increment = candles_1m(on_time)
            _retry_on_conflict(lambda: self._merge_candles(spark, increment, ranges), "candles")
            self._note_changed(ranges)
        for row in markets:
            market = market_id(row["exchange"], row["symbol"])
            self.newest_us[market] = max(self.newest_us.get(market, row["newest"]), row["newest"])
        if self.on_batch is not None:
            self.on_batch({"batch_id": batch_id, "late": late_count, "bars": len(ranges)})

    def _maybe_refresh_derived(self, spark: SparkSession) -> None:
        """Refresh the derived tables for the bars merged since the last refresh, when due and
        no refresh is running (the bars merged meanwhile wait for the next one)."""
        if not self._pending or time.monotonic() < self._next_derived:
            return
        if self._refresher is not None and self._refresher.is_alive():
            return
        pending = [(ex, sym, lo, hi) for (ex, sym), (lo, hi) in self._pending.items()]
        self._pending.clear()
        # Pinned here, between two candles MERGEs: every bar with updated_at ≤ as_of is in
        # this version, so a restart's catch-up (bars newer than the derived updated_at)
        # cannot miss one merged while the refresh ran.
        as_of = datetime.now(UTC)
        version = _latest_version(spark, self.settings.table_path(tables.GOLD_CANDLES_1M))
        self._next_derived = time.monotonic() + self.derived_interval_s
        if self.derived_interval_s == 0:
            self._refresh_derived(spark, pending, version, as_of)
            return
        if self._refresh_session is None:
            # Its own SQL conf: the gold query's txnAppId/txnVersion must not tag these
            # MERGEs (they are idempotent upserts recomputed from the candles).
            self._refresh_session = spark.newSession()
        self._refresher = threading.Thread(
            target=self._refresh_in_background,
            args=(self._refresh_session, pending, version, as_of),
            name="gold-derived-refresh",
            daemon=True,
        )
        self._refresher.start()

    def _refresh_in_background(
        self, spark: SparkSession, ranges: list[tuple[str, str, Any, Any]], version: int,
        as_of: datetime,
    ) -> None:  # fmt: skip
        started = time.monotonic()
        try:
            self._refresh_derived(spark, ranges, version, as_of)
        except Exception as exc:  # noqa: BLE001 - handed to the query thread, raised there
            log.error("gold: refreshing the derived tables failed: %s", exc)
            self._refresh_error = exc
            return
        log.debug("gold: derived tables refreshed in %.1f s", time.monotonic() - started)

    def wait_for_refresh(self, timeout_s: float | None = None) -> None:
        """Block until a background refresh has finished (tests)."""
        if self._refresher is not None:
            self._refresher.join(timeout_s)

    def _note_changed(self, ranges: list[tuple[str, str, Any, Any]]) -> None:
        assert self._pending is not None
        for exchange, symbol, lo, hi in ranges:
            known = self._pending.get((exchange, symbol))
            self._pending[(exchange, symbol)] = (
                (lo, hi) if known is None else (min(known[0], lo), max(known[1], hi))
            )

    def _merge_candles(
        self, spark: SparkSession, increment: DataFrame, ranges: list[tuple[str, str, Any, Any]]
    ) -> None:
        """Fold the batch's bars into the stored bars of the same minutes and write the result
        (gold is the table's only writer, so what it read is what the MERGE replaces). The fold
        is ``combine_bars``, the same rule as a whole minute at once; the vwap it needs (exact,
        half-even) is a Python function, which a MERGE's SET clause cannot call."""
        path = self.settings.table_path(tables.GOLD_CANDLES_1M)

        # Only the target files that can hold the batch's minutes are read and rewritten:
        # without it every MERGE scans the whole table, and gets slower as the table grows.
        def touched(alias: str | None) -> Column:
            return _ranges_condition(
                ranges, "minute", timedelta(0), timedelta(minutes=1), alias=alias,
                date_column="trade_date",
            )  # fmt: skip

        stored = spark.read.format("delta").load(path).where(touched(None))
        # Cached: the MERGE reads its source twice (matching, then writing).
        merged = fold_candles(stored, increment).persist()
        keys = " AND ".join(f"t.{key} = s.{key}" for key in [*CANDLE_KEY, "trade_date"])
        try:
            (
                DeltaTable.forPath(spark, path)
                .alias("t")
                .merge(merged.alias("s"), F.expr(keys) & touched("t"))
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
            )
        finally:
            merged.unpersist()

    def _refresh_derived(
        self,
        spark: SparkSession,
        ranges: list[tuple[str, str, Any, Any]],
        version: int,
        as_of: datetime,
    ) -> None:
        """Recompute the SMA windows and hour/day statistics the new bars touch, from the
        candles table at ``version`` (so a late bar corrects them), and upsert them with
        ``updated_at`` = ``as_of``, the moment that version was taken."""
        settings = self.settings
        candles = (
            spark.read.format("delta")
            .option("versionAsOf", version)
            .load(settings.table_path(tables.GOLD_CANDLES_1M))
        )
        minute, hour, day = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
        sma_source = candles.where(_ranges_condition(ranges, "minute", 4 * minute, 5 * minute))
        sma = sma_5m(sma_source).where(
            _ranges_condition(ranges, "window_start", 4 * minute, minute)
        )
        hourly_source = candles.where(
            _ranges_condition(_truncated(ranges, "hour"), "minute", timedelta(0), hour)
        )
        daily_source = candles.where(
            _ranges_condition(_truncated(ranges, "day"), "minute", timedelta(0), day)
        )
        # Each upsert's target side limited to the rows it can touch (file skipping, as for
        # the candles MERGE).
        targets = [
            (tables.GOLD_SMA_5M, sma, "window_start",
             _ranges_condition(ranges, "window_start", 4 * minute, minute, alias="t")),
            (tables.GOLD_STATS_HOURLY, period_stats(hourly_source, "hour"), "period_start",
             _ranges_condition(_truncated(ranges, "hour"), "period_start", timedelta(0), hour,
                               alias="t")),
            (tables.GOLD_STATS_DAILY, period_stats(daily_source, "day"), "period_start",
             _ranges_condition(_truncated(ranges, "day"), "period_start", timedelta(0), day,
                               alias="t")),
        ]  # fmt: skip
        for name, rows, start, touched in targets:
            frame = rows.withColumn("updated_at", F.lit(as_of))
            keys = " AND ".join(
                f"t.{key} = s.{key}" for key in ("exchange", "symbol", start, "trade_date")
            )
            condition = F.expr(keys) & touched
            path = settings.table_path(name)

            def upsert(
                frame: DataFrame = frame, condition: Column = condition, path: str = path
            ) -> None:
                (
                    DeltaTable.forPath(spark, path)
                    .alias("t")
                    .merge(frame.alias("s"), condition)
                    .whenMatchedUpdateAll()
                    .whenNotMatchedInsertAll()
                    .execute()
                )

            _retry_on_conflict(upsert, name)


class DerivedRefreshFailed(RuntimeError):
    """Gold's background refresh of the SMA and hour/day tables raised (its cause says why)."""


def _latest_version(spark: SparkSession, path: str) -> int:
    last = DeltaTable.forPath(spark, path).history(1).first()
    assert last is not None, f"{path} has no commit (ensure_tables creates it)"
    return int(last["version"])


def _minute_ranges(bars: DataFrame) -> list[tuple[str, str, Any, Any]]:
    """(exchange, symbol, first minute, last minute) of each market that ``bars`` hold."""
    return [
        (row["exchange"], row["symbol"], row["lo"], row["hi"])
        for row in bars.groupBy("exchange", "symbol")
        .agg(F.min("minute").alias("lo"), F.max("minute").alias("hi"))
        .collect()
    ]


def _truncated(
    ranges: list[tuple[str, str, Any, Any]], unit: str
) -> list[tuple[str, str, Any, Any]]:
    """Ranges widened to whole hours or days (stats cover whole periods)."""

    def floor(moment: Any) -> Any:
        if unit == "hour":
            return moment.replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    return [(exchange, symbol, floor(lo), floor(hi)) for exchange, symbol, lo, hi in ranges]


def start_gold(
    spark: SparkSession,
    settings: JobSettings,
    *,
    available_now: bool = False,
    on_batch: Callable[[dict[str, int]], None] | None = None,
) -> StreamingQuery:
    """silver → gold tables through ``GoldWriter``."""
    # Late trades go to silver/quarantine, which the silver job creates.
    wait_for_tables(spark, settings, [tables.SILVER_TRADES, tables.SILVER_QUARANTINE])
    ensure_tables(spark, settings, "gold")
    silver = spark.readStream.format("delta").load(settings.table_path(tables.SILVER_TRADES))
    # A run to the end of the input refreshes them after each batch: its last batch is unknown.
    derived_s = 0.0 if available_now else duration_us(settings.gold_derived_interval) / 1e6
    return (
        silver.writeStream.queryName("gold")
        .foreachBatch(GoldWriter(settings, on_batch=on_batch, derived_interval_s=derived_s))
        .option("checkpointLocation", settings.checkpoint_path("gold"))
        .trigger(**_trigger(settings.gold_trigger, available_now))
        .start()
    )
