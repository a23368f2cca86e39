"""What the API serves from memory: the hot window of each Gold table, the newest trades
from Silver. ``generation`` counts the refreshes that changed a table: rendered responses
(httpcache.py) are valid for one generation.

``LakeStore.refresh()`` is blocking I/O; the app runs it in a thread every
``refresh_interval_s`` and publishes the bars it found updated to the SSE subscribers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pyarrow.dataset as pads

from cryptolake.api import queries
from cryptolake.api.lake import (
    DeltaReader,
    HotFiles,
    PartitionFilter,
    StorageUnavailable,
    TableUnreadable,
)
from cryptolake.api.settings import ApiSettings
from cryptolake.common.tables import (
    GOLD_ALERTS,
    GOLD_CANDLES_1M,
    GOLD_SMA_5M,
    GOLD_STATS_DAILY,
    GOLD_STATS_HOURLY,
    SILVER_TRADES,
)

log = logging.getLogger(__name__)

# Newest trades kept in memory per symbol: the ceiling of /v1/trades/latest?limit=.
MAX_TRADES = 1000
SERVED_TABLES = (GOLD_CANDLES_1M, GOLD_SMA_5M, GOLD_STATS_HOURLY, GOLD_STATS_DAILY, SILVER_TRADES)
KEY = ["exchange", "symbol"]
_UTC_MICROS = pl.Datetime("us", "UTC")
EMPTY_SPANS = pl.DataFrame(
    schema={
        "exchange": pl.String,
        "symbol": pl.String,
        "first_time": _UTC_MICROS,
        "last_time": _UTC_MICROS,
    }
)


@dataclass
class RefreshResult:
    changed: list[str] = field(default_factory=list)
    # 1-minute bars written since the previous refresh (for the SSE stream).
    updated_bars: pl.DataFrame | None = None
    # gold/alerts rows that fired since the previous refresh (for the SSE stream).
    new_alerts: pl.DataFrame | None = None


class LakeStore:
    """The served tables: hot frames in memory, pruned reads for history."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        options = settings.storage_options()

        def reader(table: str) -> DeltaReader:
            return DeltaReader(settings.table_uri(table), options)

        self.readers = {table: reader(table) for table in SERVED_TABLES}
        self.candles = HotFiles(self.readers[GOLD_CANDLES_1M], settings.hot_days)
        self.sma = HotFiles(self.readers[GOLD_SMA_5M], settings.hot_days)
        self.stats_hourly = HotFiles(self.readers[GOLD_STATS_HOURLY], settings.hot_days)
        self.stats_daily: pl.DataFrame | None = None
        self.trades: pl.DataFrame | None = None
        # gold/alerts (written by the alerts worker, when it runs): the hot days' rows.
        self.alerts_reader = reader(GOLD_ALERTS)
        self.alerts: pl.DataFrame | None = None
        self.versions: dict[str, int | None] = dict.fromkeys((*SERVED_TABLES, GOLD_ALERTS))
        self.spans: pl.DataFrame | None = None
        self._history_spans: dict[tuple[str, str, date], pl.DataFrame] = {}
        self._seen_trade_files: set[str] = set()
        self._exchanges: dict[str, list[str]] = {}
        self._bars_by_symbol: dict[tuple[str, str], pl.DataFrame] = {}
        self.generation = 0
        # Set by refresh(): None when the last refresh reached every table.
        self.error: str | None = None
        self.last_refresh: float | None = None
        self._lock = threading.Lock()

    # --- refresh (blocking I/O, one thread at a time) ----------------------------------

    def refresh(self) -> RefreshResult:
        """Follow every table's log; read what changed. Records (never raises) storage errors."""
        with self._lock:
            try:
                result = self._refresh()
            except (StorageUnavailable, TableUnreadable) as error:
                if self.error != str(error):
                    log.warning("storage unavailable: %s", error)
                self.error = str(error)
                return RefreshResult()
            if self.error is not None:
                log.info("storage reachable again")
            self.error = None
            self.last_refresh = time.time()
            if result.changed:
                self.generation += 1
            return result

    def _refresh(self) -> RefreshResult:
        result = RefreshResult()
        previous_updated = self._newest_update()
        new_bars = self.candles.refresh()
        if new_bars is not None:
            result.changed.append(GOLD_CANDLES_1M)
            bars = self.candles.frame
            assert bars is not None
            self._bars_by_symbol = {
                (str(key[0]), str(key[1])): part.sort("minute")
                for key, part in bars.partition_by(KEY, as_dict=True).items()
            }
            result.updated_bars = queries.changed_bars(new_bars, previous_updated)
        for table, hot in ((GOLD_SMA_5M, self.sma), (GOLD_STATS_HOURLY, self.stats_hourly)):
            if hot.refresh() is not None:
                result.changed.append(table)
        daily = self.readers[GOLD_STATS_DAILY]
        version = daily.refresh()
        if version is not None and version != self.versions[GOLD_STATS_DAILY]:
            self.stats_daily = daily.read()
            result.changed.append(GOLD_STATS_DAILY)
        if self._refresh_trades():
            result.changed.append(SILVER_TRADES)
        if self._refresh_alerts(result):
            result.changed.append(GOLD_ALERTS)
        self.versions.update(
            {
                GOLD_CANDLES_1M: self.candles.version,
                GOLD_SMA_5M: self.sma.version,
                GOLD_STATS_HOURLY: self.stats_hourly.version,
                GOLD_STATS_DAILY: version,
                SILVER_TRADES: self.readers[SILVER_TRADES].table.version()
                if self.trades is not None
                else None,
                GOLD_ALERTS: self.versions[GOLD_ALERTS],
            }
        )
        if GOLD_CANDLES_1M in result.changed or GOLD_STATS_DAILY in result.changed:
            self.spans = self._symbol_spans()
            self._exchanges = _exchanges_by_symbol(self.spans)
        return result

    def _newest_update(self) -> datetime | None:
        frame = self.candles.frame
        if frame is None or frame.is_empty():
            return None
        newest = frame["updated_at"].max()
        return newest if isinstance(newest, datetime) else None

    def newest_data(self) -> dict[str, datetime]:
        """Newest bar update and newest trade served (for the freshness metric)."""
        newest: dict[str, datetime] = {}
        updated = self._newest_update()
        if updated is not None:
            newest[GOLD_CANDLES_1M] = updated
        if self.trades is not None and not self.trades.is_empty():
            event = self.trades["event_time"].max()
            if isinstance(event, datetime):
                newest[SILVER_TRADES] = event
        return newest

    def _refresh_trades(self) -> bool:
        """Silver is append-only: read the files added since the last look (at startup, the
        newest ``trades_bootstrap_files``) and keep the newest trades per symbol."""
        reader = self.readers[SILVER_TRADES]
        version = reader.refresh()
        if version is None or version == self.versions[SILVER_TRADES]:
            return False
        start, paths = reader.recent_files(2, "event_time")
        if start is None:
            return False
        if self.trades is None:
            unseen = paths[: self.settings.trades_bootstrap_files]
            self._seen_trade_files = set(paths)
        else:
            unseen = [path for path in paths if path not in self._seen_trade_files]
            self._seen_trade_files = set(paths)
        if unseen:
            dataset = reader.dataset([("trade_date", ">=", start.isoformat())])
            wanted = set(unseen)
            fragments = [f for f in dataset.get_fragments() if f.path in wanted]
            try:
                tables = [f.to_table(schema=dataset.schema) for f in fragments]
            except OSError as error:
                raise StorageUnavailable(f"{reader.uri}: {error}") from error
            frames = [pl.DataFrame(pl.from_arrow(table)) for table in tables]
            if self.trades is not None:
                frames.append(self.trades)
            merged = pl.concat(frames, how="vertical_relaxed").unique(
                ["exchange", "symbol", "trade_id"], keep="first"
            )
            self.trades = queries.latest_trades(merged, MAX_TRADES)
        elif self.trades is None:
            self.trades = pl.DataFrame()
        return True

    def _refresh_alerts(self, result: RefreshResult) -> bool:
        """gold/alerts changed (a firing, or a delivery outcome): read its hot days again (a
        small table) and note the firings not seen before."""
        version = self.alerts_reader.refresh()
        if version is None or version == self.versions[GOLD_ALERTS]:
            return False
        first_day = (datetime.now(UTC) - timedelta(days=self.settings.hot_days)).date()
        frame = self.alerts_reader.read([("fired_date", ">=", first_day.isoformat())])
        if self.alerts is not None:
            known = self.alerts["alert_id"]
            result.new_alerts = frame.filter(~pl.col("alert_id").is_in(known.implode()))
        self.alerts = frame
        self.versions[GOLD_ALERTS] = version
        return True

    def _symbol_spans(self) -> pl.DataFrame | None:
        """First and last trade per symbol: the hot bars, plus (for symbols whose history
        starts before the hot window) one pruned read of their first day, cached."""
        hot = self.candles.frame
        spans = queries.symbol_spans(hot) if hot is not None else None
        daily = self.stats_daily
        if daily is None or daily.is_empty():
            return spans
        firsts = daily.group_by(KEY).agg(
            pl.col("period_start").min().alias("first_day"),
            pl.col("period_start").max().alias("last_day"),
        )
        history = []
        for exchange, symbol, first_day, last_day in firsts.iter_rows():
            days = {first_day.date(), last_day.date()}
            for day in days:
                if self.candles.start is not None and day >= self.candles.start:
                    continue
                cache_key = (exchange, symbol, day)
                if cache_key not in self._history_spans:
                    bars = self.read_candles_history(exchange, symbol, day, day)
                    self._history_spans[cache_key] = queries.symbol_spans(bars)
                history.append(self._history_spans[cache_key])
        if not history:
            return spans
        merged = pl.concat(history, how="vertical_relaxed")
        return queries.merge_spans(merged, spans) if spans is not None else merged

    # --- reads --------------------------------------------------------------------------

    def check_available(self) -> None:
        """Raise StorageUnavailable when the last refresh failed or none has run yet."""
        if self.error is not None:
            raise StorageUnavailable(self.error)
        if self.last_refresh is None:
            raise StorageUnavailable("the tables have not been read yet")

    def hot_bars(self, exchange: str, symbol: str) -> pl.DataFrame | None:
        return self._bars_by_symbol.get((exchange, symbol))

    def read_candles_history(
        self, exchange: str, symbol: str, first_day: date, last_day: date
    ) -> pl.DataFrame:
        """1-minute bars of one symbol from storage, reading only [first_day, last_day]."""
        partitions: PartitionFilter = [
            ("trade_date", ">=", first_day.isoformat()),
            ("trade_date", "<=", last_day.isoformat()),
        ]
        match = (pads.field("exchange") == exchange) & (pads.field("symbol") == symbol)
        return self.readers[GOLD_CANDLES_1M].read(partitions, match)

    def table_rows(
        self,
        table: str,
        *,
        exchange: str | None,
        symbol: str | None,
        lo: datetime,
        hi: datetime,
        time_column: str,
    ) -> pl.DataFrame:
        """Rows of a Gold table with lo ≤ time < hi (one symbol, or all when None): from
        memory inside the hot window, else a read pruned to the partitions [lo, hi) touches."""
        hot = {GOLD_SMA_5M: self.sma, GOLD_STATS_HOURLY: self.stats_hourly}.get(table)
        frame: pl.DataFrame | None
        if table == GOLD_STATS_DAILY:
            frame = self.stats_daily
        elif hot is not None and hot.start is not None and lo.date() >= hot.start:
            frame = hot.frame
        else:
            first_day, last_day = day_span(lo, hi)
            partitions: PartitionFilter = [
                ("trade_date", ">=", first_day.isoformat()),
                ("trade_date", "<=", last_day.isoformat()),
            ]
            frame = self.readers[table].read(partitions)
        if frame is None or frame.is_empty():
            return _empty_like(table, frame)
        if exchange is not None:
            frame = frame.filter(pl.col("exchange") == exchange)
        if symbol is not None:
            frame = frame.filter(pl.col("symbol") == symbol)
        return frame.filter((pl.col(time_column) >= lo) & (pl.col(time_column) < hi))

    def alert_rows(
        self,
        *,
        rule: str | None,
        exchange: str | None,
        symbol: str | None,
        lo: datetime,
        hi: datetime,
    ) -> pl.DataFrame:
        """gold/alerts rows whose window ended in [lo, hi): from memory inside the hot days,
        else a read of the fired_date partitions that can hold them."""
        frame = self.alerts
        hot_start = (datetime.now(UTC) - timedelta(days=self.settings.hot_days)).date()
        if lo.date() <= hot_start and self.versions[GOLD_ALERTS] is not None:
            # A firing comes at most a window (≤ 1 h) before its end.
            first_day, last_day = day_span(lo - timedelta(hours=1), hi)
            frame = self.alerts_reader.read([
                ("fired_date", ">=", first_day.isoformat()),
                ("fired_date", "<=", last_day.isoformat()),
            ])  # fmt: skip
        if frame is None or frame.is_empty():
            return pl.DataFrame()
        if rule is not None:
            frame = frame.filter(pl.col("rule") == rule)
        if exchange is not None:
            frame = frame.filter(pl.col("exchange") == exchange)
        if symbol is not None:
            frame = frame.filter(pl.col("symbol") == symbol)
        return frame.filter((pl.col("window_end") >= lo) & (pl.col("window_end") < hi))

    def hot_start(self) -> date | None:
        return self.candles.start

    def symbols(self) -> pl.DataFrame:
        return self.spans if self.spans is not None else EMPTY_SPANS

    def exchanges_of(self, symbol: str) -> list[str]:
        """Exchanges that have ``symbol``, the one with the newest data first."""
        return self._exchanges.get(symbol, [])


def _exchanges_by_symbol(spans: pl.DataFrame | None) -> dict[str, list[str]]:
    if spans is None or spans.is_empty():
        return {}
    newest_first = spans.sort("last_time", descending=True)
    exchanges: dict[str, list[str]] = {}
    for exchange, symbol in newest_first.select("exchange", "symbol").iter_rows():
        exchanges.setdefault(symbol, []).append(exchange)
    return exchanges


def _empty_like(table: str, frame: pl.DataFrame | None) -> pl.DataFrame:
    return frame.clear() if frame is not None else pl.DataFrame()


def day_span(start: datetime, end: datetime) -> tuple[date, date]:
    """The trade_date partitions that [start, end) touches."""
    return start.date(), (end - timedelta(microseconds=1)).date()
