"""The refine application: one query reads Kafka, parses, validates and deduplicates each
micro-batch, and writes it to silver/trades, silver/quarantine and gold/candles_1m; the derived
Gold tables (SMA, hour and day statistics) follow the candles on their own cadence. Refine is
the only writer of these tables (Delta's log on S3 here has no put-if-absent, so one writer
per table); ``bronze`` archives the same topic in a query of its own, off the live path.

Exactly once, per table and batch: the two appends carry a commit tag (``BatchAppender``), the
candles MERGE Delta's ``txnAppId``/``txnVersion``. A batch replayed after a crash between two
of its commits writes only what is missing, and decides lateness as the first run did (each
market's newest trade is read back from the candles, which the replayed MERGE has not moved).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.window import Window

from cryptolake.common.completeness import mark_complete
from cryptolake.jobs import tables
from cryptolake.jobs.files import delete_path, path_exists, read_text, write_text
from cryptolake.jobs.maintenance import MaintenanceSchedule
from cryptolake.jobs.settings import JobSettings, duration_us
from cryptolake.jobs.streams import (
    DERIVED_TABLES,
    TABLE_WRITERS,
    TXN_APP_ID,
    TXN_VERSION,
    BatchAppender,
    checkpoint_app_id,
    ensure_tables,
    kafka_stream,
    ranges_condition,
    retry_on_conflict,
    trigger,
    txn_app_ids,
)
from cryptolake.jobs.topic import TopicGuard, java_admin
from cryptolake.jobs.transforms import (
    CANDLE_KEY,
    DEDUP_COLUMN,
    MARKET_SEPARATOR,
    SILVER_REASONS,
    batch_summary,
    bronze_from_kafka,
    candles_1m,
    deduplicate,
    fold_bar,
    late_rows,
    market_id,
    market_key,
    parse_trades,
    period_stats,
    rejected_rows,
    sma_5m,
    split_late,
    valid_trades,
    with_dedup_key,
)

log = logging.getLogger(__name__)

QUERY = "refine"
# Where ``rebuild`` leaves the Kafka offsets after the last bronze record it refined: a refine
# query without a checkpoint starts there, so no trade is refined twice.
START_OFFSETS_FILE = "refine-start-offsets.json"
MarketRange = tuple[str, str, Any, Any]


@dataclass(frozen=True)
class BatchOutcome:
    """What one refine batch did: rows per validation outcome (``valid`` or a reason code),
    valid trades sent to quarantine as ``late``, candle bars merged."""

    batch_id: int
    rule_rows: dict[str, int]
    late: int
    bars: int
    # Seconds per step (summary, silver, quarantine, candles, derived): where a batch's time went.
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class RefineWriter:
    """``foreachBatch`` function of the refine query (and the one batch of ``rebuild``): a
    parsed, deduplicated batch → silver/trades, silver/quarantine (rejects and late trades, one
    commit), the candles MERGE of the minutes it touches, then the derived tables when due."""

    settings: JobSettings
    on_batch: Callable[[BatchOutcome], None] | None = None
    # Seconds between refreshes of the SMA and hour/day tables (0: after every batch, in line).
    derived_interval_s: float = 0.0
    # False: the batch comes materialized already (``deduplicate_whole``), not computed twice.
    materialize: bool = True
    # The commit tag and txnAppId; None: the refine checkpoint's query id.
    app_id: str | None = None
    # Called first in each batch; raises to stop the query before anything is written.
    before_batch: Callable[[], None] | None = None
    # Market key → its newest event time merged (µs): each market's lateness is judged by its
    # own trades, so one market's clock never makes another's trades late.
    newest_us: dict[str, int] | None = None
    # (exchange, symbol, minute) → the stored candle of every minute an on-time trade can still
    # touch, and of the newest closed minutes before them (their completeness depends on their
    # neighbours): refine is the table's only writer, so the bars it wrote are the table's.
    # Loaded after a run's first batch (whose MERGE may have been skipped as a replay).
    _bars: dict[tuple[str, str, Any], dict[str, Any]] | None = field(default=None, repr=False)
    # Markets whose older bars are not among ``_bars`` (only the newest closed ones are kept).
    _truncated: set[str] = field(default_factory=set, repr=False)
    _candles_schema: T.StructType | None = field(default=None, repr=False)
    appender: BatchAppender = field(init=False)
    derived: DerivedRefresher = field(init=False)
    maintenance: MaintenanceSchedule = field(init=False)

    def __post_init__(self) -> None:
        self.appender = BatchAppender(self.settings, QUERY, app_id=self.app_id)
        self.derived = DerivedRefresher(self.settings, self.derived_interval_s)
        self.maintenance = MaintenanceSchedule(self.settings, QUERY, TABLE_WRITERS[QUERY])

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self.before_batch is not None:
            self.before_batch()
        self.derived.raise_if_failed()
        spark = batch.sparkSession
        if self.app_id is None:
            self.app_id = checkpoint_app_id(spark, self.settings.checkpoint_path(QUERY))
        if self.newest_us is None:
            self.newest_us = newest_per_market(spark, self.settings)
        self.derived.open(spark)
        # Computed once (the dedup state is updated by one execution) and cut from its plan:
        # every frame derived from a persisted batch would carry the parse's huge expression
        # tree through analysis and cache matching again (measured: seconds per step).
        started = time.monotonic()
        if self.materialize:
            batch = batch.localCheckpoint(eager=True)
        outcome = self._write(spark, batch, batch_id)
        outcome.seconds["read"] = time.monotonic() - started - sum(outcome.seconds.values())
        with timed(outcome.seconds, "derived"):
            self.derived.maybe_refresh(spark)
        # The derived tables too: never an OPTIMIZE beside their background MERGEs.
        self.maintenance.run_if_due(spark, before=self.derived.wait)
        steps = ", ".join(f"{step} {s:.2f} s" for step, s in outcome.seconds.items())
        log.debug("refine batch %d: %s", batch_id, steps)
        if self.on_batch is not None:
            self.on_batch(outcome)

    def _write(self, spark: SparkSession, batch: DataFrame, batch_id: int) -> BatchOutcome:
        assert self.newest_us is not None and self.app_id is not None
        delay = duration_us(self.settings.gold_watermark)
        watermarks = {market: newest - delay for market, newest in self.newest_us.items()}
        seconds: dict[str, float] = {}
        with timed(seconds, "summary"):
            summary = batch_summary(batch, watermarks).collect()
        rule_rows = dict.fromkeys([*map(str, SILVER_REASONS), "valid"], 0)
        for row in summary:
            outcome = row["reason"] or "valid"
            rule_rows[outcome] = rule_rows.get(outcome, 0) + row["rows"]
        markets = [row for row in summary if row["reason"] is None]
        late = sum(row["late"] for row in markets)
        rejected = sum(rule_rows.values()) - rule_rows["valid"]
        valid = batch.where(F.col("reason").isNull())
        on_time, late_trades = split_late(valid, watermarks)
        # No empty commits: each would be a Delta version readers and the API poll.
        if rule_rows["valid"]:
            with timed(seconds, "silver"):
                self.appender.append(valid_trades(batch), tables.SILVER_TRADES, batch_id)
        if rejected or late:
            quarantine = rejected_rows(batch)
            if late:
                quarantine = quarantine.unionByName(late_rows(late_trades, watermarks))
            with timed(seconds, "quarantine"):
                self.appender.append(quarantine, tables.SILVER_QUARANTINE, batch_id)
        ranges = [(row["exchange"], row["symbol"], row["lo"], row["hi"])
                  for row in markets if row["lo"] is not None]  # fmt: skip
        if ranges:
            with timed(seconds, "fold"):
                bars = self._fold(spark, candles_1m(on_time), ranges)
                assert self._candles_schema is not None
                fields = self._candles_schema.fieldNames()
                # Materialized once: the MERGE reads its source twice.
                frame = spark.createDataFrame(
                    [tuple(bar[name] for name in fields) for bar in bars], self._candles_schema
                ).localCheckpoint(eager=True)
            # Neighbours whose completeness the batch changed lie outside its minutes.
            merged = ranges + [(bar["exchange"], bar["symbol"], bar["minute"], bar["minute"])
                               for bar in bars if not _in_ranges(bar, ranges)]  # fmt: skip
            with delta_transaction(spark, self.app_id, batch_id), timed(seconds, "merge"):
                retry_on_conflict(
                    lambda: merge_candles(spark, self.settings, frame, merged), "candles"
                )
            self.derived.note_changed(ranges)
        for row in markets:
            market = market_id(row["exchange"], row["symbol"])
            self.newest_us[market] = max(self.newest_us.get(market, row["newest"]), row["newest"])
        if ranges:
            self._remember(spark, bars)
        return BatchOutcome(batch_id, rule_rows, late, len(bars) if ranges else 0, seconds)

    def _fold(
        self, spark: SparkSession, increment: DataFrame, ranges: list[MarketRange]
    ) -> list[dict[str, Any]]:
        """The batch's bars (one small aggregation, collected) folded on the driver into the
        stored bars of their minutes (``fold_bar``), each judged complete or not with its
        neighbours (``completed_bars``), and the stored neighbours whose completeness changed:
        from the bars this writer keeps, or in a run's first batch read from the table."""
        if self._candles_schema is None:
            path = self.settings.table_path(tables.GOLD_CANDLES_1M)
            self._candles_schema = spark.read.format("delta").load(path).schema
        new = [row.asDict() for row in increment.drop("vwap").collect()]
        if self._bars is None:
            windows = {(exchange, symbol): (lo, hi) for exchange, symbol, lo, hi in ranges}
            kept, truncated, continued = _bars_around(spark, self.settings, windows)
        else:
            kept, truncated, continued = self._bars, self._truncated, set()
        folded = {_bar_key(bar): fold_bar(kept.get(_bar_key(bar)), bar) for bar in new}
        # As PySpark gives timestamps (naive, local): the changed neighbours' update time.
        return completed_bars(kept, folded, truncated, continued, datetime.now())

    def _remember(self, spark: SparkSession, bars: list[dict[str, Any]]) -> None:
        """Keep the bars just written, and forget minutes no on-time trade can touch any more
        (before each market's newest trade minus the lateness) but the newest closed ones, the
        neighbours of the open ones. After a run's first batch, they are read from the table
        instead: that batch's MERGE may have been skipped as the replay of one committed before
        a restart."""
        assert self.newest_us is not None
        delay = duration_us(self.settings.gold_watermark)
        if self._bars is None:
            windows = {_market_of(market): (_open_from(newest, delay), None)
                       for market, newest in self.newest_us.items()}  # fmt: skip
            self._bars, self._truncated, _ = _bars_around(spark, self.settings, windows)
            return
        for bar in bars:
            self._bars[_bar_key(bar)] = bar
        oldest = {market: _open_from(newest, delay) for market, newest in self.newest_us.items()}
        closed: dict[str, list[tuple[str, str, Any]]] = {}
        for key in self._bars:
            market = market_id(key[0], key[1])
            start = oldest.get(market)
            if start is not None and key[2] < start:
                closed.setdefault(market, []).append(key)
        for market, keys in closed.items():
            forgotten = sorted(keys, key=lambda key: key[2])[:-CLOSED_BARS_KEPT]
            for key in forgotten:
                del self._bars[key]
            if forgotten:
                self._truncated.add(market)


# Closed bars kept per market before its open minutes: the newest one's completeness can still
# change (its next bar is open), and judging it needs the one before it.
CLOSED_BARS_KEPT = 2


def completed_bars(
    kept: dict[tuple[str, str, Any], dict[str, Any]],
    folded: dict[tuple[str, str, Any], dict[str, Any]],
    truncated: set[str],
    continued: set[str],
    now: datetime,
) -> list[dict[str, Any]]:
    """The ``folded`` bars with their ``complete`` flag (``mark_complete``) judged among the
    ``kept`` bars of their markets, and the kept bars whose flag that changed (updated
    ``now``, so the API streams them again). ``truncated``: markets with bars before the kept
    ones; ``continued``: markets with bars after them."""
    view = {**kept, **folded}
    markets = {market_id(key[0], key[1]) for key in folded}
    by_market: dict[str, list[dict[str, Any]]] = {market: [] for market in markets}
    for key, bar in view.items():
        market = market_id(key[0], key[1])
        if market in by_market:
            by_market[market].append(bar)
    written = []
    for market, bars in by_market.items():
        bars.sort(key=lambda bar: bar["minute"])
        flags = mark_complete(
            bars, from_start=market not in truncated, to_end=market not in continued
        )
        for index, bar in enumerate(bars):
            flag = flags.get(index, bar["complete"])
            if _bar_key(bar) in folded:
                written.append({**bar, "complete": flag})
            elif flag != bar["complete"]:
                written.append({**bar, "complete": flag, "updated_at": now})
    return written


@contextmanager
def timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Records the seconds the block took as ``seconds[step]``."""
    started = time.monotonic()
    try:
        yield
    finally:
        seconds[step] = time.monotonic() - started


@contextmanager
def delta_transaction(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Delta writes inside are skipped when (``app_id``, ``version``) already committed."""
    spark.conf.set(TXN_APP_ID, app_id)
    spark.conf.set(TXN_VERSION, str(version))
    try:
        yield
    finally:
        spark.conf.unset(TXN_APP_ID)
        spark.conf.unset(TXN_VERSION)


def newest_per_market(spark: SparkSession, settings: JobSettings) -> dict[str, int]:
    """Market key → the newest trade time (µs) the candles hold."""
    rows = (
        spark.read.format("delta")
        .load(settings.table_path(tables.GOLD_CANDLES_1M))
        .groupBy(market_key(F.col("exchange"), F.col("symbol")).alias("market"))
        .agg(F.unix_micros(F.max("last_trade_time")).alias("newest"))
        .collect()
    )
    return {row["market"]: row["newest"] for row in rows}


def _bar_key(bar: dict[str, Any]) -> tuple[str, str, Any]:
    return (bar["exchange"], bar["symbol"], bar["minute"])


def _open_from(newest_us: int, delay_us: int) -> datetime:
    """The first minute an on-time trade can still touch, as PySpark gives and takes
    timestamps (naive, in this process's time zone)."""
    start_us = newest_us - delay_us
    return datetime.fromtimestamp((start_us - start_us % 60_000_000) / 1e6)


def _market_of(market: str) -> tuple[str, str]:
    exchange, symbol = market.split(MARKET_SEPARATOR)
    return exchange, symbol


def _in_ranges(bar: dict[str, Any], ranges: list[MarketRange]) -> bool:
    return any(bar["exchange"] == exchange and bar["symbol"] == symbol and lo <= bar["minute"] <= hi
               for exchange, symbol, lo, hi in ranges)  # fmt: skip


def _bars_around(
    spark: SparkSession, settings: JobSettings, windows: dict[tuple[str, str], tuple[Any, Any]]
) -> tuple[dict[tuple[str, str, Any], dict[str, Any]], set[str], set[str]]:
    """The stored candles of each market's minutes [start, end] (end None: to its newest),
    with the ``CLOSED_BARS_KEPT`` bars before them and the first after them: the bars, the
    markets with more bars before those (truncated) and those with bars after (continued)."""
    if not windows:
        return {}, set(), set()
    inside, before, after = F.lit(False), F.lit(False), F.lit(False)
    for (exchange, symbol), (start, end) in windows.items():
        market = (F.col("exchange") == exchange) & (F.col("symbol") == symbol)
        since = market & (F.col("minute") >= start) & (F.col("trade_date") >= start.date())
        inside = inside | (since if end is None else since & (F.col("minute") <= end))
        before = before | (market & (F.col("minute") < start))
        if end is not None:
            after = after | (market & (F.col("minute") > end))
    table = spark.read.format("delta").load(settings.table_path(tables.GOLD_CANDLES_1M))
    by_market = Window.partitionBy("exchange", "symbol")

    def nearest(condition: Column, order: Column, rows: int, side: str) -> DataFrame:
        rank = F.row_number().over(by_market.orderBy(order))
        return (table.where(condition).withColumn("_rank", rank).where(F.col("_rank") <= rows)
                .drop("_rank").withColumn("_side", F.lit(side)))  # fmt: skip

    rows = (
        table.where(inside).withColumn("_side", F.lit("inside"))
        .unionByName(nearest(before, F.col("minute").desc(), CLOSED_BARS_KEPT, "before"))
        .unionByName(nearest(after, F.col("minute").asc(), 1, "after"))
        .collect()
    )  # fmt: skip
    bars, sides = {}, defaultdict(list)
    for row in rows:
        bar = row.asDict()
        sides[market_id(bar["exchange"], bar["symbol"])].append(bar.pop("_side"))
        bars[_bar_key(bar)] = bar
    truncated = {m for m, seen in sides.items() if seen.count("before") == CLOSED_BARS_KEPT}
    continued = {m for m, seen in sides.items() if "after" in seen}
    return bars, truncated, continued


def _touched_minutes(ranges: list[MarketRange], alias: str | None = None) -> Column:
    """The candles of the batch's minutes (and their dates, for partition pruning): only the
    files that can hold them are read and rewritten, however large the table grows."""
    return ranges_condition(ranges, "minute", timedelta(0), timedelta(minutes=1), alias=alias,
                            date_column="trade_date")  # fmt: skip


def merge_candles(
    spark: SparkSession, settings: JobSettings, bars: DataFrame, ranges: list[MarketRange]
) -> None:
    """Upsert ``bars`` (the batch's minutes, folded) into gold/candles_1m: the rows matched
    in the touched minutes are replaced, new minutes inserted."""
    keys = " AND ".join(f"t.{key} = s.{key}" for key in [*CANDLE_KEY, "trade_date"])
    (
        DeltaTable.forPath(spark, settings.table_path(tables.GOLD_CANDLES_1M))
        .alias("t")
        .merge(bars.alias("s"), F.expr(keys) & _touched_minutes(ranges, "t"))
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


class DerivedRefreshFailed(RuntimeError):
    """The background refresh of the SMA and hour/day tables raised (its cause says why)."""


@dataclass
class DerivedRefresher:
    """Keeps sma_5m, stats_hourly and stats_daily in step with the candles: the minutes merged
    since the last refresh are recomputed at most every ``interval_s``, on a thread of their
    own with its own Spark session, so their three MERGEs never hold up a batch; with 0 (a run
    to the end of the input) after every batch, in line. A failed refresh fails the query at
    its next batch (``raise_if_failed``)."""

    settings: JobSettings
    interval_s: float = 0.0
    # (exchange, symbol) → the minutes whose bars changed since the last refresh.
    _pending: dict[tuple[str, str], tuple[Any, Any]] | None = field(default=None, repr=False)
    _next: float = field(default=0.0, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _error: BaseException | None = field(default=None, repr=False)
    _session: SparkSession | None = field(default=None, repr=False)

    def open(self, spark: SparkSession) -> None:
        """On the first batch: note the bars merged after the last refresh before a stop."""
        if self._pending is None:
            self._pending = {}
            self.note_changed(self._unrefreshed_ranges(spark))

    def raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise DerivedRefreshFailed("refreshing gold's derived tables failed") from error

    def note_changed(self, ranges: list[MarketRange]) -> None:
        assert self._pending is not None
        for exchange, symbol, lo, hi in ranges:
            known = self._pending.get((exchange, symbol))
            self._pending[(exchange, symbol)] = (
                (lo, hi) if known is None else (min(known[0], lo), max(known[1], hi))
            )

    def _unrefreshed_ranges(self, spark: SparkSession) -> list[MarketRange]:
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

    def maybe_refresh(self, spark: SparkSession) -> None:
        """Refresh for the bars merged since the last refresh, when due and no refresh is
        running (the bars merged meanwhile wait for the next one)."""
        if not self._pending or time.monotonic() < self._next:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        pending = [(ex, sym, lo, hi) for (ex, sym), (lo, hi) in self._pending.items()]
        self._pending.clear()
        # Pinned here, between two candles MERGEs: every bar with updated_at ≤ as_of is in
        # this version, so a restart's catch-up (bars newer than the derived updated_at)
        # cannot miss one merged while the refresh ran.
        as_of = datetime.now(UTC)
        version = _latest_version(spark, self.settings.table_path(tables.GOLD_CANDLES_1M))
        self._next = time.monotonic() + self.interval_s
        if self.interval_s == 0:
            refresh_derived(spark, self.settings, pending, version, as_of)
            return
        if self._session is None:
            # Its own SQL conf: the batch's txnAppId/txnVersion must not tag these MERGEs
            # (idempotent upserts recomputed from the candles).
            self._session = spark.newSession()
        self._thread = threading.Thread(
            target=self._refresh_in_background,
            args=(self._session, pending, version, as_of),
            name="gold-derived-refresh",
            daemon=True,
        )
        self._thread.start()

    def _refresh_in_background(
        self, spark: SparkSession, ranges: list[MarketRange], version: int, as_of: datetime
    ) -> None:
        started = time.monotonic()
        try:
            refresh_derived(spark, self.settings, ranges, version, as_of)
        except Exception as exc:  # noqa: BLE001 - handed to the query thread, raised there
            log.error("refine: refreshing the derived gold tables failed: %s", exc)
            self._error = exc
            return
        log.debug("refine: derived tables refreshed in %.1f s", time.monotonic() - started)

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until a background refresh has finished (tests, a clean stop)."""
        if self._thread is not None:
            self._thread.join(timeout_s)


def refresh_derived(
    spark: SparkSession,
    settings: JobSettings,
    ranges: list[MarketRange],
    version: int,
    as_of: datetime,
) -> None:
    """Recompute the SMA windows and hour/day statistics the new bars touch, from the candles
    table at ``version`` (so a late bar corrects them), and upsert them with ``updated_at`` =
    ``as_of``, the moment that version was taken."""
    candles = (
        spark.read.format("delta")
        .option("versionAsOf", version)
        .load(settings.table_path(tables.GOLD_CANDLES_1M))
    )
    minute, hour, day = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
    # Every bar any of the three needs (the touched days, and the SMA's 4 minutes before),
    # read once and cut from the Delta scan's plan; each table's rows come from it.
    bars = candles.where(
        ranges_condition(_truncated(ranges, "day"), "minute", 4 * minute, day)
    ).localCheckpoint(eager=True)
    sma_source = bars.where(ranges_condition(ranges, "minute", 4 * minute, 5 * minute))
    sma = sma_5m(sma_source).where(ranges_condition(ranges, "window_start", 4 * minute, minute))
    hourly_source = bars.where(
        ranges_condition(_truncated(ranges, "hour"), "minute", timedelta(0), hour)
    )
    daily_source = bars.where(
        ranges_condition(_truncated(ranges, "day"), "minute", timedelta(0), day)
    )
    # Each upsert's target side limited to the rows it can touch (file skipping, as for the
    # candles MERGE).
    targets = [
        (tables.GOLD_SMA_5M, sma, "window_start",
         ranges_condition(ranges, "window_start", 4 * minute, minute, alias="t")),
        (tables.GOLD_STATS_HOURLY, period_stats(hourly_source, "hour"), "period_start",
         ranges_condition(_truncated(ranges, "hour"), "period_start", timedelta(0), hour,
                          alias="t")),
        (tables.GOLD_STATS_DAILY, period_stats(daily_source, "day"), "period_start",
         ranges_condition(_truncated(ranges, "day"), "period_start", timedelta(0), day,
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

        retry_on_conflict(upsert, name)


def _latest_version(spark: SparkSession, path: str) -> int:
    last = DeltaTable.forPath(spark, path).history(1).first()
    assert last is not None, f"{path} has no commit (ensure_tables creates it)"
    return int(last["version"])


def _minute_ranges(bars: DataFrame) -> list[MarketRange]:
    """(exchange, symbol, first minute, last minute) of each market that ``bars`` hold."""
    return [
        (row["exchange"], row["symbol"], row["lo"], row["hi"])
        for row in bars.groupBy("exchange", "symbol")
        .agg(F.min("minute").alias("lo"), F.max("minute").alias("hi"))
        .collect()
    ]


def _truncated(ranges: list[MarketRange], unit: str) -> list[MarketRange]:
    """Ranges widened to whole hours or days (stats cover whole periods)."""

    def floor(moment: Any) -> Any:
        if unit == "hour":
            return moment.replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    return [(exchange, symbol, floor(lo), floor(hi)) for exchange, symbol, lo, hi in ranges]


# --- the streaming query ---------------------------------------------------------------------

# Checkpoints of the layout before refine: silver and gold as queries of their own, reading
# bronze and silver as Delta sources (and, earlier still, silver as two queries).
LEGACY_CHECKPOINTS = ("silver", "gold", "silver_trades", "silver_quarantine")


class LegacyLayout(RuntimeError):
    """The lakehouse was written by the older bronze → silver → gold queries."""


def refuse_legacy_layout(spark: SparkSession, settings: JobSettings) -> None:
    """Silver and Gold written by the old chained queries have no refine checkpoint: refine
    would read the topic from its start and append every trade again, so say how to rebuild."""
    if path_exists(spark, settings.checkpoint_path(QUERY)):
        return
    legacy = [name for name in LEGACY_CHECKPOINTS
              if path_exists(spark, settings.checkpoint_path(name))]  # fmt: skip
    if legacy:
        raise LegacyLayout(
            f"{settings.checkpoints} holds checkpoints of the old bronze → silver → gold "
            f"layout ({', '.join(legacy)}); refine would append every trade of the topic "
            "again. Stop the jobs and run `python -m cryptolake.jobs rebuild` (`make rebuild` "
            "locally): it recomputes silver and gold from bronze and starts refine where "
            "bronze ends"
        )


class LostCheckpoint(RuntimeError):
    """Gold holds batches of a refine query whose checkpoint is gone."""


def refuse_lost_checkpoint(spark: SparkSession, settings: JobSettings) -> None:
    """Without its checkpoint refine would start a new query at the topic's start and count
    every trade still in Kafka into Gold again: refuse when the candles hold a refine query's
    batches (Delta keeps their txnAppIds) and nothing says where to start instead."""
    checkpoint = settings.checkpoint_path(QUERY)
    if path_exists(spark, f"{checkpoint}/metadata") or path_exists(
        spark, f"{settings.checkpoints}/{START_OFFSETS_FILE}"
    ):
        return
    candles = settings.table_path(tables.GOLD_CANDLES_1M)
    if not DeltaTable.isDeltaTable(spark, candles):
        return
    writers = [app for app in txn_app_ids(spark, candles) if app.startswith(f"cryptolake-{QUERY}-")]
    if writers:
        raise LostCheckpoint(
            f"the refine checkpoint {checkpoint} is missing, but {candles} holds batches of "
            f"refine query {writers[-1].removeprefix(f'cryptolake-{QUERY}-')}: starting anew "
            "would count every trade still in Kafka into Gold a second time. Restore the "
            "checkpoint if you have it; else stop the jobs and run `python -m cryptolake.jobs "
            "rebuild` (`make rebuild` locally), which recomputes silver and gold from bronze "
            "and starts refine where bronze ends"
        )


def start_refine(
    spark: SparkSession,
    settings: JobSettings,
    *,
    available_now: bool = False,
    on_batch: Callable[[BatchOutcome], None] | None = None,
) -> tuple[StreamingQuery, RefineWriter]:
    """Kafka → parse, validate, deduplicate → ``RefineWriter``."""
    refuse_legacy_layout(spark, settings)
    refuse_lost_checkpoint(spark, settings)
    guard = TopicGuard(spark, settings, QUERY)
    # A recreated topic adopted: a new checkpoint from the new topic's first offsets (the start
    # file first, so that a crash in between never leaves refine without either).
    guard.on_start(reset=[
        (f"{settings.checkpoints}/{START_OFFSETS_FILE}", json.dumps({settings.trades_topic: {}})),
        (settings.checkpoint_path(QUERY), None),
    ])  # fmt: skip
    ensure_tables(spark, settings, QUERY)
    kafka = kafka_stream(spark, settings, starting_offsets=_starting_offsets(spark, settings))
    parsed = parse_trades(bronze_from_kafka(kafka), max_future_skew_s=settings.max_future_skew_s)
    # A run to the end of the input refreshes after each batch: its last batch is unknown.
    derived_s = 0.0 if available_now else duration_us(settings.gold_derived_interval) / 1e6
    writer = RefineWriter(settings, on_batch=on_batch, derived_interval_s=derived_s,
                          before_batch=guard.before_batch)  # fmt: skip
    query = (
        deduplicate(parsed, settings.silver_watermark)
        .writeStream.queryName(QUERY)
        .foreachBatch(writer)
        .option("checkpointLocation", settings.checkpoint_path(QUERY))
        .trigger(**trigger(settings.refine_trigger, available_now))
        .start()
    )
    return query, writer


def _starting_offsets(spark: SparkSession, settings: JobSettings) -> str:
    """Where ``rebuild`` left off, else the configured start (used without a checkpoint).
    Spark wants an offset for every partition of the topic: those bronze never saw start at
    their earliest (-2)."""
    text = read_text(spark, f"{settings.checkpoints}/{START_OFFSETS_FILE}")
    if text is None:
        return settings.starting_offsets
    ends: dict[str, int] = json.loads(text).get(settings.trades_topic, {})
    every = {str(p): ends.get(str(p), -2) for p in range(_partitions(spark, settings))}
    return json.dumps({settings.trades_topic: every})


def _partitions(spark: SparkSession, settings: JobSettings) -> int:
    """The trades topic's partition count, from the Kafka admin client on Spark's class path."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    admin = java_admin(spark, settings)
    try:
        topics = jvm.java.util.Collections.singletonList(settings.trades_topic)
        described = admin.describeTopics(topics).allTopicNames().get()
        return int(described.get(settings.trades_topic).partitions().size())
    finally:
        admin.close()


# --- rebuild ---------------------------------------------------------------------------------


def deduplicate_whole(parsed: DataFrame) -> DataFrame:
    """A whole input at once (rebuild, backfill), deduplicated as ``deduplicate`` does and
    materialized. Duplicates are rare: their keys are found by counting keys alone (measured
    on 2M trades: 6 s, where dropDuplicates' aggregation of whole rows took 23 s), and only
    the rows of repeated keys go through it."""
    keyed = with_dedup_key(parsed).localCheckpoint(eager=True)
    repeated = (
        keyed.groupBy(DEDUP_COLUMN).count().where(F.col("count") > 1).select(DEDUP_COLUMN)
    ).localCheckpoint(eager=True)
    if repeated.isEmpty():
        return keyed.drop(DEDUP_COLUMN)
    once = keyed.join(repeated, DEDUP_COLUMN, "left_anti").unionByName(
        keyed.join(repeated, DEDUP_COLUMN, "left_semi").dropDuplicates([DEDUP_COLUMN])
    )
    return once.drop(DEDUP_COLUMN).localCheckpoint(eager=True)


def rebuild(spark: SparkSession, settings: JobSettings) -> BatchOutcome:
    """Recompute silver and Gold from bronze with refine's transforms, in one batch, and leave
    the offsets after bronze's last record for the next refine query. Run with the streams
    stopped: it deletes silver/, gold/ and the refine checkpoints first."""
    for path in [*(settings.table_path(name) for name in TABLE_WRITERS[QUERY]),
                 *(settings.checkpoint_path(name) for name in (QUERY, *LEGACY_CHECKPOINTS)),
                 f"{settings.checkpoints}/{START_OFFSETS_FILE}"]:  # fmt: skip
        delete_path(spark, path)
    ensure_tables(spark, settings, QUERY)
    bronze = spark.read.format("delta").load(settings.table_path(tables.BRONZE_TRADES))
    parsed = parse_trades(bronze, max_future_skew_s=settings.max_future_skew_s)
    outcomes: list[BatchOutcome] = []
    writer = RefineWriter(settings, on_batch=outcomes.append, materialize=False,
                          app_id=f"cryptolake-rebuild-{uuid.uuid4().hex}")  # fmt: skip
    writer(deduplicate_whole(parsed), 0)
    topic = bronze.where(F.col("topic") == settings.trades_topic)
    ends = {str(row["partition"]): row["last"] + 1 for row in
            topic.groupBy("partition").agg(F.max("offset").alias("last")).collect()}  # fmt: skip
    if ends:
        write_text(spark, f"{settings.checkpoints}/{START_OFFSETS_FILE}",
                   json.dumps({settings.trades_topic: ends}))  # fmt: skip
    return outcomes[0]
