"""Gold held against the exchanges' own published 1-minute klines, beside the live feeds.

Every ``interval_s`` the producer takes each market's minutes that Gold no longer changes (they
ended more than ``delay_s`` ago: the lateness plus refine's cadence), asks the exchange for their
klines at the pace it shares with the recovery (``PacedRest``), reads the Gold candles of the same
minutes (delta-rs), compares them field by field (``klines.check_bar``: exact decimals), and
appends one row per minute to ``gold/kline_checks`` (one commit a round; this is its only
writer). Mismatches are counted per field in ``cryptolake_producer_kline_mismatches_total`` and
logged; a round that cannot reach the exchange or the lake is logged and retried next round,
from the same minute. A minute short of trades (mismatched or missing in Gold, its bar not
complete) asks its feed's recovery for the ids Gold lacks around it (``refetch_ranges``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from cryptolake.common.settings import LakeSettings
from cryptolake.common.tables import GOLD_CANDLES_1M, GOLD_KLINE_CHECKS
from cryptolake.common.timeutil import now_us
from cryptolake.producer.exchanges.base import ExchangeAdapter
from cryptolake.producer.gaps import GapTracker
from cryptolake.producer.klines import (
    KLINE_FIELDS,
    MINUTE_US,
    BarCheck,
    CheckStatus,
    Kline,
    KlineError,
    check_bar,
)
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.recovery import PacedRest, RestFailed

log = logging.getLogger(__name__)

_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
KLINE_CHECKS_SCHEMA: Final = pa.schema(
    [
        ("exchange", pa.string()), ("symbol", pa.string()), ("minute", _TIMESTAMP),
        ("check_date", pa.date32()), ("status", pa.string()),
        ("mismatched", pa.list_(pa.string())),
        # Both sides' published fields as JSON objects (decimals as strings, exact).
        ("gold", pa.string()), ("exchange_kline", pa.string()), ("checked_at", _TIMESTAMP),
    ]
)  # fmt: skip


@dataclass(frozen=True)
class ReconcileSettings:
    interval_s: float = 60.0
    # A minute is checked once it ended this long ago (Gold's lateness, 2 min, and margin).
    delay_s: float = 180.0
    # How far back a round checks at most. After a start, a market resumes after the newest
    # minute gold/kline_checks holds for it (so the minutes of a downtime are checked too),
    # or without any, from the minute after the start (its own was only partly streamed).
    lookback_minutes: int = 60


# Gold bars read on each side of the checked minutes: the neighbours whose trade ids bound
# what a short minute lacks.
NEIGHBOUR_MINUTES: Final = 10
# A short minute asks the history for at most this many ids (a wrong bound must not start a
# fetch of millions of trades).
MAX_REFETCH_IDS: Final = 100_000
_BAR_COLUMNS: Final = ("minute", *KLINE_FIELDS, "min_trade_id", "max_trade_id", "complete")


def _moment(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


class GoldNotReady(Exception):
    """gold/candles_1m does not exist yet (the jobs have not started)."""


def open_candles(lake: LakeSettings) -> DeltaTable:
    """gold/candles_1m at its newest version (read once a round, for every market)."""
    try:
        return DeltaTable(lake.table_uri(GOLD_CANDLES_1M), storage_options=lake.storage_options())
    except TableNotFoundError as error:
        raise GoldNotReady(f"{lake.table_uri(GOLD_CANDLES_1M)} does not exist yet") from error


def read_gold_bars(
    table: DeltaTable, exchange: str, symbol: str, start_us: int, end_us: int
) -> dict[int, dict[str, Any]]:
    """Gold's candles of one market's minutes in [start, end), by minute (µs): the published
    fields, the trade-id bounds and the completeness flag (null in tables older than them)."""
    start, end = _moment(start_us), _moment(end_us)
    condition = (
        (ds.field("trade_date") >= start.date())
        & (ds.field("trade_date") <= end.date())
        & (ds.field("minute") >= pa.scalar(start, _TIMESTAMP))
        & (ds.field("minute") < pa.scalar(end, _TIMESTAMP))
    )
    dataset = table.to_pyarrow_dataset()
    columns = [name for name in _BAR_COLUMNS if name in dataset.schema.names]
    window = dataset.to_table(filter=condition, columns=[*columns, "exchange", "symbol"])
    # The market's rows, compared as plain strings after the scan: files that delta-rs
    # rewrote (an UPDATE, a DELETE) carry string_view columns, which a dataset filter
    # against a string cannot compare.
    mine = pc.and_(
        pc.equal(window["exchange"].cast(pa.string()), exchange),
        pc.equal(window["symbol"].cast(pa.string()), symbol),
    )
    rows = window.filter(mine).select(columns).to_pylist()
    return {int(row["minute"].timestamp() * 1_000_000): row for row in rows}


def refetch_ranges(
    check: BarCheck,
    bar: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    following: dict[str, Any] | None,
) -> list[tuple[int, int]]:
    """The trade ids (inclusive ranges) to ask the history for again so that a minute which
    differs from the exchange's kline gets the trades Gold lacks: those between its
    neighbours' bars (``previous``, ``following``: the nearest Gold bars, None if unknown) that
    its own bar does not hold. Without a neighbour the exchange's trade count bounds the ids
    on that side. Nothing when the bar is complete (every id is there: the difference is not a
    missing trade), when the ids are not numbers, or when they cannot be bounded."""
    if check.status not in (CheckStatus.MISMATCH, CheckStatus.MISSING_IN_GOLD):
        return []
    before = previous.get("max_trade_id") if previous else None
    after = following.get("min_trade_id") if following else None
    if bar is None:
        if before is None or after is None:
            return []
        ranges = [(before + 1, after - 1)]
    else:
        low, high = bar.get("min_trade_id"), bar.get("max_trade_id")
        if bar.get("complete") is True or low is None or high is None:
            return []
        published = (check.exchange or {}).get("trades")
        short = max(int(published) - bar["trades"], 0) if published is not None else 0
        first = before + 1 if before is not None else low - short
        last = after - 1 if after is not None else high + short
        if bar["trades"] == high - low + 1:  # no hole inside: only the edges are missing
            ranges = [(first, low - 1), (high + 1, last)]
        else:
            ranges = [(first, last)]
    ranges = [(a, b) for a, b in ranges if 0 < a <= b]
    if sum(b - a + 1 for a, b in ranges) > MAX_REFETCH_IDS:
        return []
    return ranges


def _neighbours(
    bars: dict[int, dict[str, Any]], minutes: list[int], minute: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The nearest bars before and after ``minute`` (``minutes``: ``bars``' keys, sorted)."""
    index = bisect_left(minutes, minute)
    previous = bars[minutes[index - 1]] if index > 0 else None
    after = index + (index < len(minutes) and minutes[index] == minute)
    following = bars[minutes[after]] if after < len(minutes) else None
    return previous, following


def resume_point(lake: LakeSettings, exchange: str, symbol: str) -> int | None:
    """The minute after the newest one ``gold/kline_checks`` holds for the market (µs); None
    when it holds none."""
    try:
        table = DeltaTable(
            lake.table_uri(GOLD_KLINE_CHECKS), storage_options=lake.storage_options()
        )
    except TableNotFoundError:
        return None
    condition = (ds.field("exchange") == exchange) & (ds.field("symbol") == symbol)
    minutes = table.to_pyarrow_dataset().to_table(filter=condition, columns=["minute"])
    newest = pc.max(minutes["minute"]).as_py()
    return None if newest is None else int(newest.timestamp()) * 1_000_000 + MINUTE_US


def _json(fields: dict[str, Any] | None) -> str | None:
    if fields is None:
        return None
    return orjson.dumps({name: str(value) for name, value in fields.items()}).decode()


def check_rows(
    exchange: str, symbol: str, checks: list[BarCheck], checked_at: datetime
) -> list[dict[str, Any]]:
    """``gold/kline_checks`` rows of one market's checks."""
    return [
        {
            "exchange": exchange, "symbol": symbol, "minute": _moment(check.minute_us),
            "check_date": _moment(check.minute_us).date(), "status": str(check.status),
            "mismatched": list(check.mismatched), "gold": _json(check.gold),
            "exchange_kline": _json(check.exchange), "checked_at": checked_at,
        }
        for check in checks
    ]  # fmt: skip


def append_checks(lake: LakeSettings, rows: list[dict[str, Any]]) -> None:
    """One commit to ``gold/kline_checks`` (created by its first one)."""
    table = pa.Table.from_pylist(rows, schema=KLINE_CHECKS_SCHEMA)
    write_deltalake(
        lake.table_uri(GOLD_KLINE_CHECKS),
        table,
        mode="append",
        partition_by=["check_date"],
        storage_options=lake.storage_options() or None,
    )


@dataclass(frozen=True)
class KlineSource:
    """One feed's exchange as the checks use it: its adapter, the pace it shares with the
    recovery, and the gap tracker a short minute is handed to (None: checks only)."""

    adapter: ExchangeAdapter
    rest: PacedRest
    gaps: GapTracker | None = None


@dataclass
class Market:
    source: KlineSource
    symbol: str
    checked_until_us: int | None = None  # the next minute to check

    @property
    def adapter(self) -> ExchangeAdapter:
        return self.source.adapter

    @property
    def rest(self) -> PacedRest:
        return self.source.rest


class Reconciler:
    """Runs until ``stop``: one round every ``interval_s`` over every market of ``sources``."""

    def __init__(
        self,
        sources: list[KlineSource],
        lake: LakeSettings,
        metrics: ProducerMetrics,
        settings: ReconcileSettings | None = None,
    ) -> None:
        self.lake = lake
        self.metrics = metrics
        self.settings = settings or ReconcileSettings()
        self.markets = [
            Market(source, symbol)
            for source in sources
            if source.adapter.kline_request(source.adapter.symbols[0], 0, MINUTE_US) is not None
            for symbol in source.adapter.symbols
        ]
        self.rounds = 0
        self.refetched = 0  # ids handed to the recovery by short minutes
        self.counts: dict[CheckStatus, int] = dict.fromkeys(CheckStatus, 0)
        started = now_us()
        self.first_minute_us = started - started % MINUTE_US + MINUTE_US
        self._waiting_logged = False

    async def run(self, stop: asyncio.Event) -> None:
        if not self.markets:
            return
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
            while not stop.is_set():
                await self.round(client, now_us())
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.interval_s)
                except TimeoutError:
                    continue

    async def round(self, client: httpx.AsyncClient, now: int) -> list[dict[str, Any]]:
        """Check every market's minutes that ended ``delay_s`` before ``now`` and were not
        checked yet; returns the rows written."""
        settled = now - int(self.settings.delay_s * 1_000_000)
        end = settled - settled % MINUTE_US
        rows: list[dict[str, Any]] = []
        checked_at = _moment(now)
        advanced: list[tuple[Market, int]] = []
        candles: DeltaTable | None = None
        for market in self.markets:
            oldest = end - self.settings.lookback_minutes * MINUTE_US
            try:
                if market.checked_until_us is None:
                    resumed = await asyncio.to_thread(
                        resume_point, self.lake, market.adapter.label, market.symbol
                    )
                    market.checked_until_us = resumed or self.first_minute_us
                start = max(market.checked_until_us, oldest)
                if start >= end:
                    continue
                if candles is None:
                    candles = await asyncio.to_thread(open_candles, self.lake)
                checks = await self.check(client, market, candles, start, end)
            except GoldNotReady as error:
                if not self._waiting_logged:
                    log.info("kline checks wait for the jobs: %s", error)
                    self._waiting_logged = True
                continue
            except (RestFailed, KlineError, DeltaError, OSError, pa.ArrowException) as error:
                log.warning(
                    "kline check of %s %s skipped this round (retried next): %s",
                    market.adapter.label, market.symbol, error,
                )  # fmt: skip
                continue
            rows += check_rows(market.adapter.label, market.symbol, checks, checked_at)
            advanced.append((market, end))
            self._count(market, checks)
        if rows:
            try:
                await asyncio.to_thread(append_checks, self.lake, rows)
            except (DeltaError, OSError) as error:
                log.warning("kline checks not written (retried next round): %s", error)
                return []
        for market, until in advanced:
            market.checked_until_us = until
        self.rounds += 1
        return rows

    async def check(
        self, client: httpx.AsyncClient, market: Market, candles: DeltaTable, start: int, end: int
    ) -> list[BarCheck]:
        """One market's minutes in [start, end): the exchange's klines (paged), Gold's bars."""
        adapter, klines = market.adapter, {}
        page_start = start
        while page_start < end:
            page_end = min(end, page_start + adapter.kline_limit * MINUTE_US)
            request = adapter.kline_request(market.symbol, page_start, page_end)
            assert request is not None  # markets are only those whose exchange has klines
            body = await market.rest.get(client, request)
            for kline in adapter.parse_klines(market.symbol, body):
                if page_start <= kline.minute_us < page_end:
                    klines[kline.minute_us] = kline
            page_start = page_end
        margin = NEIGHBOUR_MINUTES * MINUTE_US
        bars = await asyncio.to_thread(
            read_gold_bars, candles, adapter.label, market.symbol, start - margin, end + margin
        )
        gold = {minute: bar for minute, bar in bars.items() if start <= minute < end}
        checks = compare_minutes(gold, klines)
        if market.source.gaps is not None:
            self._refetch(market, market.source.gaps, checks, bars)
        return checks

    def _refetch(
        self, market: Market, gaps: GapTracker, checks: list[BarCheck],
        bars: dict[int, dict[str, Any]],
    ) -> None:  # fmt: skip
        """Hand the ids each short minute lacks to the feed's recovery: published again, they
        reach Bronze; Silver quarantines them as late (the minute is past the lateness), and
        ``make rebuild`` folds them into Gold (docs/gaps.md)."""
        minutes = sorted(bars)
        for check in checks:
            previous, following = _neighbours(bars, minutes, check.minute_us)
            ranges = refetch_ranges(check, bars.get(check.minute_us), previous, following)
            for first, last in ranges:
                gaps.request(market.symbol, first, last, check.minute_us - MINUTE_US,
                             time.monotonic())  # fmt: skip
            if ranges:
                self.refetched += sum(last - first + 1 for first, last in ranges)
                log.info(
                    "klines: %s %s %s is short of trades: ids %s asked from the history again",
                    market.adapter.label, market.symbol, f"{_moment(check.minute_us):%H:%M}",
                    ", ".join(f"{first}-{last}" for first, last in ranges),
                )  # fmt: skip

    def _count(self, market: Market, checks: list[BarCheck]) -> None:
        labels = {"exchange": market.adapter.label, "protocol": market.adapter.name}
        problems = []
        for check in checks:
            self.counts[check.status] += 1
            self.metrics.kline_checks.labels(**labels, status=str(check.status)).inc()
            for name in check.mismatched:
                self.metrics.kline_mismatches.labels(**labels, field=name).inc()
            if check.status != CheckStatus.MATCH:
                problems.append(f"{_moment(check.minute_us):%H:%M} {check.status} "
                                f"({', '.join(check.mismatched)})")  # fmt: skip
        matched = sum(check.status == CheckStatus.MATCH for check in checks)
        log.log(
            logging.WARNING if problems else logging.INFO,
            "klines: %s %s, %d minutes checked, %d match%s",
            market.adapter.label, market.symbol, len(checks), matched,
            f"; DIFFER: {'; '.join(problems[:5])}" if problems else "",
        )  # fmt: skip


def compare_minutes(gold: dict[int, dict[str, Any]], klines: dict[int, Kline]) -> list[BarCheck]:
    """One check per minute that has a Gold bar or a kline with trades."""
    checks = [check_bar(minute, gold.get(minute), klines.get(minute))
              for minute in sorted(set(gold) | set(klines))]  # fmt: skip
    return [check for check in checks if check.gold is not None or check.exchange is not None]
