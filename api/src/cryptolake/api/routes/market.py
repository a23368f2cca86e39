"""Market data: symbols, candles at any interval, SMA, period stats, latest trades, KPIs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import orjson
import polars as pl
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cryptolake.api import queries
from cryptolake.api.deps import (
    ExchangeQuery,
    OptionalSymbolQuery,
    StoreDep,
    SymbolQuery,
    TimeQuery,
    TracerDep,
)
from cryptolake.api.errors import GUARD_RESPONSES, ApiError, bad_parameter
from cryptolake.api.lake import StorageUnavailable, TableUnreadable
from cryptolake.api.observability import tag_request
from cryptolake.api.params import parse_range
from cryptolake.api.security import require_api_key
from cryptolake.api.store import MAX_TRADES, LakeStore, day_span
from cryptolake.common.tables import (
    GOLD_SMA_5M,
    GOLD_STATS_DAILY,
    GOLD_STATS_HOURLY,
)

MAX_LIMIT = 5000
Interval = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"1 … {MAX_LIMIT}")]

router = APIRouter(
    prefix="/v1",
    tags=["market"],
    dependencies=[Depends(require_api_key)],
    responses=GUARD_RESPONSES,
)


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def _envelope(fields: Mapping[str, object], name: str, rows: bytes) -> bytes:
    """``{…fields, name: rows}`` where rows is an already rendered JSON array."""
    head = orjson.dumps(fields)
    return head[:-1] + (b"," if fields else b"") + b'"' + name.encode() + b'":' + rows + b"}"


async def _rendered(
    store: LakeStore, tracer: TracerDep, what: str, render: Callable[[], bytes]
) -> bytes:
    """The body from ``render``, in a worker thread: reads may hit storage. (Repeated requests
    are answered by httpcache.py in front of the routes.)"""
    try:
        store.check_available()
    except StorageUnavailable as error:
        raise ApiError(503, "storage_unavailable", str(error)) from error

    def traced() -> bytes:
        with tracer.start_as_current_span("lake.render", attributes={"cryptolake.query": what}):
            return render()

    try:
        body = await asyncio.to_thread(traced)
    except (StorageUnavailable, TableUnreadable) as error:
        raise ApiError(503, "storage_unavailable", str(error)) from error
    return body


def resolve_exchange(store: LakeStore, symbol: str, exchange: str | None) -> str:
    """The exchange to read ``symbol`` from; 404 when no table has the pair."""
    exchanges = store.exchanges_of(symbol)
    if exchange is None and exchanges:
        return exchanges[0]
    if exchange in exchanges:
        return exchange
    known = ", ".join(store.symbols()["symbol"].unique().sort().to_list()) or "none yet"
    where = f" on {exchange}" if exchange else ""
    raise ApiError(404, "unknown_symbol", f"no data for {symbol}{where} (known: {known})", "symbol")


@router.get("/symbols", summary="Exchanges and symbols with their first and last trade time")
async def symbols(store: StoreDep, tracer: TracerDep) -> Response:
    spans = store.symbols()
    body = await _rendered(
        store,
        tracer,
        "symbols",
        lambda: _envelope({}, "symbols", queries.spans_json(spans) if len(spans) else b"[]"),
    )
    return _json(body)


def _bar_window(
    store: LakeStore,
    exchange: str,
    symbol: str,
    width: timedelta,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> tuple[datetime, datetime]:
    """The [lo, hi) span of 1-minute bars a request needs, bounded by max_range_days."""
    max_span = timedelta(days=store.settings.max_range_days)
    wanted = min(width * limit, max_span)
    if start is not None:
        if end is not None and end - start > max_span:
            raise bad_parameter(
                "end", f"the range exceeds {store.settings.max_range_days} days; narrow it"
            )
        lo = _ceil(start, width)  # the first bar that starts at or after start
        return lo, (lo + wanted if end is None else end)
    if end is None:
        last = _last_trade_time(store, exchange, symbol)
        end = (last or datetime.now(UTC)) + timedelta(minutes=1)
    hi = _ceil(end, width)
    return hi - wanted, hi


def _last_trade_time(store: LakeStore, exchange: str, symbol: str) -> datetime | None:
    spans = store.symbols().filter((pl.col("exchange") == exchange) & (pl.col("symbol") == symbol))
    last = spans["last_time"].max() if len(spans) else None
    return last if isinstance(last, datetime) else None


def _latest_or_range(
    load: Callable[[datetime], pl.DataFrame],
    time_column: str,
    store: LakeStore,
    exchange: str,
    symbol: str,
    window: tuple[datetime, datetime],
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> pl.DataFrame:
    """Bars from ``load(lo)`` cut to the request. For "the latest ``limit``" the first guess
    of ``lo`` assumes no empty minutes; with gaps it reaches further back (up to the range
    limit or the symbol's first trade) until ``limit`` bars are found."""
    lo, hi = window
    max_span = timedelta(days=store.settings.max_range_days)
    spans = store.symbols().filter((pl.col("exchange") == exchange) & (pl.col("symbol") == symbol))
    first = spans["first_time"].min() if len(spans) else None
    while True:
        rows = load(lo)
        selected = queries.select_range(rows, time_column, start, end, limit)
        exhausted = hi - lo >= max_span or (isinstance(first, datetime) and lo <= first)
        if start is not None or len(selected) >= limit or exhausted:
            return selected
        lo = max(hi - (hi - lo) * 4, hi - max_span)


def _floor(moment: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // width) * width


def _ceil(moment: datetime, width: timedelta) -> datetime:
    return _floor(moment - timedelta(microseconds=1), width) + width


def _bars_1m(
    store: LakeStore, exchange: str, symbol: str, lo: datetime, hi: datetime
) -> pl.DataFrame:
    hot_start = store.hot_start()
    hot = store.hot_bars(exchange, symbol)
    if hot is not None and hot_start is not None and lo.date() >= hot_start:
        bars = hot
    else:
        bars = store.read_candles_history(exchange, symbol, *day_span(lo, hi))
    return bars.filter((pl.col("minute") >= lo) & (pl.col("minute") < hi))


@router.get("/candles", summary="OHLCV bars resampled from the 1-minute Gold candles")
async def candles(
    store: StoreDep,
    tracer: TracerDep,
    symbol: SymbolQuery,
    exchange: ExchangeQuery = None,
    interval: Interval = "1m",
    start: TimeQuery = None,
    end: TimeQuery = None,
    limit: Limit = 500,
) -> Response:
    """Bars whose start is in [start, end): the first `limit` from `start`, or the last
    `limit` before `end` (the latest without either)."""
    tag_request(symbol=symbol, interval=interval)
    start_at, end_at = parse_range(start, end)
    venue = resolve_exchange(store, symbol, exchange)
    width = queries.INTERVALS[interval]
    lo, hi = _bar_window(store, venue, symbol, width, start_at, end_at, limit)

    def render() -> bytes:
        bars = _latest_or_range(
            lambda lo_: queries.resample(_bars_1m(store, venue, symbol, lo_, hi), interval),
            "minute",
            store, venue, symbol, (lo, hi), start_at, end_at, limit,
        )  # fmt: skip
        fields = {"exchange": venue, "symbol": symbol, "interval": interval}
        return _envelope(fields, "bars", queries.bars_json(bars))

    return _json(await _rendered(store, tracer, "candles", render))


@router.get("/indicators/sma", summary="Simple moving average of 1-minute closes")
async def sma(
    store: StoreDep,
    tracer: TracerDep,
    symbol: SymbolQuery,
    exchange: ExchangeQuery = None,
    window: Literal["5m"] = "5m",
    start: TimeQuery = None,
    end: TimeQuery = None,
    limit: Limit = 500,
) -> Response:
    tag_request(symbol=symbol, window=window)
    start_at, end_at = parse_range(start, end)
    venue = resolve_exchange(store, symbol, exchange)
    minute = timedelta(minutes=1)
    lo, hi = _bar_window(store, venue, symbol, minute, start_at, end_at, limit)
    # A window is plotted at its last minute; the trailing windows reach past the newest bar.
    lo -= queries.SMA_WINDOWS[window]
    last = _last_trade_time(store, venue, symbol)
    newest_bar = _floor(last, minute) if last is not None else None

    def load(lo_: datetime) -> pl.DataFrame:
        rows = store.table_rows(
            GOLD_SMA_5M, exchange=venue, symbol=symbol, lo=lo_, hi=hi, time_column="window_start"
        )
        return queries.complete_windows(rows, newest_bar)

    def render() -> bytes:
        selected = _latest_or_range(
            load, "window_start", store, venue, symbol, (lo, hi), start_at, end_at, limit
        )
        fields = {"exchange": venue, "symbol": symbol, "window": window}
        return _envelope(fields, "points", queries.sma_json(selected))

    return _json(await _rendered(store, tracer, "sma", render))


async def _stats(
    store: LakeStore,
    tracer: TracerDep,
    table: str,
    period: timedelta,
    symbol: str | None,
    exchange: str | None,
    start: str | None,
    end: str | None,
    limit: int,
) -> Response:
    tag_request(symbol=symbol or "*", period=table.rsplit("_", 1)[-1])
    start_at, end_at = parse_range(start, end)
    venue = resolve_exchange(store, symbol, exchange) if symbol else exchange
    # Daily stats are small (one row a symbol a day): ten years fit in one request.
    max_span = timedelta(days=3660 if period.days else store.settings.max_range_days)
    wanted = min(period * limit, max_span)
    if start_at is not None:
        lo, hi = start_at, end_at or start_at + wanted
    else:
        hi = end_at or datetime.now(UTC) + period
        lo = hi - wanted
    if hi - lo > max_span:
        raise bad_parameter("end", f"the range exceeds {max_span.days} days; narrow it")

    def render() -> bytes:
        rows = store.table_rows(
            table, exchange=venue, symbol=symbol, lo=lo, hi=hi, time_column="period_start"
        )
        selected = queries.select_range(rows, "period_start", start_at, end_at, limit)
        return _envelope(
            {"period": table.rsplit("_", 1)[-1]}, "stats", queries.stats_json(selected)
        )

    return _json(await _rendered(store, tracer, table, render))


def _stats_endpoint(table: str, period: timedelta) -> Callable[..., Awaitable[Response]]:
    async def stats(
        store: StoreDep,
        tracer: TracerDep,
        symbol: OptionalSymbolQuery = None,
        exchange: ExchangeQuery = None,
        start: TimeQuery = None,
        end: TimeQuery = None,
        limit: Limit = 500,
    ) -> Response:
        return await _stats(store, tracer, table, period, symbol, exchange, start, end, limit)

    return stats


for _path, _table, _period in (
    ("/stats/hourly", GOLD_STATS_HOURLY, timedelta(hours=1)),
    ("/stats/daily", GOLD_STATS_DAILY, timedelta(days=1)),
):
    router.add_api_route(
        _path,
        _stats_endpoint(_table, _period),
        methods=["GET"],
        name=f"stats_{_path.rsplit('/', 1)[-1]}",
        summary=f"{_path.rsplit('/', 1)[-1].capitalize()} open, close, high, low, % change, "
        "volume, vwap (all symbols, or one)",
    )


@router.get("/trades/latest", summary="The newest trades of a symbol from Silver, newest first")
async def latest_trades(
    store: StoreDep,
    tracer: TracerDep,
    symbol: SymbolQuery,
    exchange: ExchangeQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TRADES, description=f"1 … {MAX_TRADES}")] = 50,
) -> Response:
    tag_request(symbol=symbol)
    venue = resolve_exchange(store, symbol, exchange)

    def render() -> bytes:
        trades = store.trades
        rows = (
            queries.for_symbol(trades, venue, symbol).head(limit)
            if trades is not None and len(trades)
            else pl.DataFrame()
        )
        fields = {"exchange": venue, "symbol": symbol}
        return _envelope(fields, "trades", queries.trades_json(rows) if len(rows) else b"[]")

    return _json(await _rendered(store, tracer, "trades", render))


@router.get("/kpis", summary="Per symbol: last price, 1 h and 24 h % change, 24 h volume")
async def kpis(store: StoreDep, tracer: TracerDep) -> Response:
    def render() -> bytes:
        bars = store.candles.frame
        if bars is None or bars.is_empty():
            return _envelope({}, "kpis", b"[]")
        return _envelope({}, "kpis", queries.kpis_json(queries.kpis(bars)))

    return _json(await _rendered(store, tracer, "kpis", render))
