"""The pure core of the API: polars frames in, frames or JSON bytes out. No I/O here.

Frames keep the Delta tables' column names and types (DECIMAL(38,18) prices, µs UTC
timestamps); sums are exact in decimals and only the response casts to JSON numbers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import orjson
import polars as pl

# Interval name → width. Bars are aligned to the Unix epoch (1d bars start at 00:00 UTC).
INTERVALS: Final = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "1d": timedelta(days=1),
}
SMA_WINDOWS: Final = {"5m": timedelta(minutes=5)}

BAR_SUM_COLUMNS: Final = ("volume", "quote_volume", "buy_volume", "sell_volume")
_ISO_SECONDS: Final = "%Y-%m-%dT%H:%M:%SZ"
_ISO_MICROS: Final = "%Y-%m-%dT%H:%M:%S%.6fZ"


def for_symbol(frame: pl.DataFrame, exchange: str, symbol: str) -> pl.DataFrame:
    return frame.filter((pl.col("exchange") == exchange) & (pl.col("symbol") == symbol))


def select_range(
    frame: pl.DataFrame,
    time_column: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> pl.DataFrame:
    """Rows with start ≤ time < end, sorted by time: the first ``limit`` from ``start`` when a
    start is given, else the last ``limit`` before ``end`` (the latest, without either)."""
    selected = frame
    if start is not None:
        selected = selected.filter(pl.col(time_column) >= start)
    if end is not None:
        selected = selected.filter(pl.col(time_column) < end)
    selected = selected.sort(time_column)
    return selected.head(limit) if start is not None else selected.tail(limit)


def resample(bars_1m: pl.DataFrame, interval: str) -> pl.DataFrame:
    """1-minute bars of one symbol → bars of ``interval``, as an exchange would build them:
    open = first bar's open, close = last bar's close, high/low = extremes, volumes and trades
    summed, vwap = quote volume / volume. The bar's ``minute`` is the interval's start."""
    if interval == "1m":
        return bars_1m.sort("minute")
    every = _polars_duration(INTERVALS[interval])
    grouped = (
        bars_1m.sort("minute")
        .group_by_dynamic("minute", every=every, closed="left", label="left", start_by="window")
        .agg(
            pl.col("exchange").first(),
            pl.col("symbol").first(),
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            *(pl.col(name).sum() for name in BAR_SUM_COLUMNS),
            pl.col("trades").sum(),
            pl.col("first_trade_time").first(),
            pl.col("last_trade_time").last(),
            pl.col("updated_at").max(),
        )
    )
    return grouped.with_columns(vwap=_vwap(pl.col("quote_volume"), pl.col("volume")))


def _polars_duration(width: timedelta) -> str:
    return f"{int(width.total_seconds())}s"


def _vwap(quote_volume: pl.Expr, volume: pl.Expr) -> pl.Expr:
    volume_f = volume.cast(pl.Float64)
    return pl.when(volume_f > 0).then(quote_volume.cast(pl.Float64) / volume_f).otherwise(None)


def range_bars(start: datetime, end: datetime, interval: str) -> float:
    """How many bars of ``interval`` fit in [start, end)."""
    return (end - start) / INTERVALS[interval]


# --- JSON ----------------------------------------------------------------------------------


def _time_fields(column: str, name: str, fmt: str = _ISO_SECONDS) -> list[pl.Expr]:
    return [
        pl.col(column).dt.strftime(fmt).alias(name),
        pl.col(column).dt.epoch("ms").alias(f"{name}_ms"),
    ]


def _number(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64)


def _bar_fields(bars: pl.DataFrame) -> pl.DataFrame:
    """Candles in their JSON shape (numbers for prices and volumes)."""
    return bars.select(
        *_time_fields("minute", "time"),
        *(_number(name) for name in ("open", "high", "low", "close")),
        *(_number(name) for name in ("volume", "quote_volume")),
        _number("vwap"),
        pl.col("trades"),
        *(_number(name) for name in ("buy_volume", "sell_volume")),
    )


def bars_json(bars: pl.DataFrame) -> bytes:
    """Candles as a JSON array of objects."""
    return _bar_fields(bars).write_json().encode()


def complete_windows(points: pl.DataFrame) -> pl.DataFrame:
    """Drop the trailing windows that end after the newest bar (the newest window start is the
    newest bar's minute): their plot time would lie in the future."""
    if points.is_empty():
        return points
    newest_bar = points["window_start"].max()
    return points.filter(pl.col("window_end") - timedelta(minutes=1) <= newest_bar)


def sma_json(points: pl.DataFrame) -> bytes:
    """SMA windows; ``time`` is the last minute inside the window (where a chart plots it)."""
    return (
        points.with_columns(plot_at=pl.col("window_end") - timedelta(minutes=1))
        .select(
            *_time_fields("plot_at", "time"),
            *_time_fields("window_start", "window_start"),
            *_time_fields("window_end", "window_end"),
            _number("sma"),
            _number("vwap"),
            pl.col("bars"),
            pl.col("trades"),
        )
        .write_json()
        .encode()
    )


def stats_json(stats: pl.DataFrame) -> bytes:
    return (
        stats.select(
            pl.col("exchange"),
            pl.col("symbol"),
            *_time_fields("period_start", "period_start"),
            *_time_fields("period_end", "period_end"),
            *(_number(name) for name in ("open", "close", "high", "low", "change_pct")),
            *(_number(name) for name in ("volume", "quote_volume", "vwap")),
            pl.col("trades"),
        )
        .write_json()
        .encode()
    )


def trades_json(trades: pl.DataFrame) -> bytes:
    return (
        trades.select(
            pl.col("exchange"),
            pl.col("symbol"),
            pl.col("trade_id"),
            _number("price"),
            _number("qty"),
            pl.col("side"),
            *_time_fields("event_time", "time", _ISO_MICROS),
        )
        .write_json()
        .encode()
    )


# --- symbols and KPIs ----------------------------------------------------------------------


def symbol_spans(candles: pl.DataFrame) -> pl.DataFrame:
    """Per (exchange, symbol): first and last trade time seen in these bars."""
    return (
        candles.group_by("exchange", "symbol")
        .agg(
            pl.col("first_trade_time").min().alias("first_time"),
            pl.col("last_trade_time").max().alias("last_time"),
        )
        .sort("exchange", "symbol")
    )


def merge_spans(older: pl.DataFrame, newer: pl.DataFrame) -> pl.DataFrame:
    """Combine two span tables (e.g. history and the hot window) into one."""
    both = pl.concat([older, newer], how="vertical")
    return (
        both.group_by("exchange", "symbol")
        .agg(pl.col("first_time").min(), pl.col("last_time").max())
        .sort("exchange", "symbol")
    )


def spans_json(spans: pl.DataFrame) -> bytes:
    return (
        spans.select(
            "exchange",
            "symbol",
            *_time_fields("first_time", "first_time", _ISO_MICROS),
            *_time_fields("last_time", "last_time", _ISO_MICROS),
        )
        .write_json()
        .encode()
    )


def kpis(candles: pl.DataFrame) -> pl.DataFrame:
    """Per (exchange, symbol), anchored at its newest bar: last price and time, % change over
    1 h and 24 h (vs the close of the newest bar at least that old; null without one) and the
    24 h volume."""
    ordered = candles.sort("exchange", "symbol", "minute")
    latest = ordered.group_by("exchange", "symbol", maintain_order=True).agg(
        pl.col("minute").last().alias("last_minute"),
        pl.col("close").last().alias("last_price"),
        pl.col("last_trade_time").last().alias("last_time"),
    )

    def close_before(lag: timedelta, name: str) -> pl.DataFrame:
        joined = ordered.join(latest, on=["exchange", "symbol"])
        return (
            joined.filter(pl.col("minute") <= pl.col("last_minute") - lag)
            .group_by("exchange", "symbol")
            .agg(pl.col("close").sort_by("minute").last().alias(name))
        )

    volume_24h = (
        ordered.join(latest, on=["exchange", "symbol"])
        .filter(pl.col("minute") > pl.col("last_minute") - timedelta(hours=24))
        .group_by("exchange", "symbol")
        .agg(pl.col("volume").sum().alias("volume_24h"))
    )
    result = (
        latest.join(
            close_before(timedelta(hours=1), "close_1h"), on=["exchange", "symbol"], how="left"
        )
        .join(close_before(timedelta(hours=24), "close_24h"), on=["exchange", "symbol"], how="left")
        .join(volume_24h, on=["exchange", "symbol"], how="left")
    )
    last = pl.col("last_price").cast(pl.Float64)
    return result.select(
        "exchange",
        "symbol",
        "last_price",
        "last_time",
        ((last / pl.col("close_1h").cast(pl.Float64) - 1) * 100).alias("change_1h_pct"),
        ((last / pl.col("close_24h").cast(pl.Float64) - 1) * 100).alias("change_24h_pct"),
        "volume_24h",
    ).sort("exchange", "symbol")


def kpis_json(table: pl.DataFrame) -> bytes:
    return (
        table.select(
            "exchange",
            "symbol",
            _number("last_price"),
            *_time_fields("last_time", "last_time", _ISO_MICROS),
            "change_1h_pct",
            "change_24h_pct",
            _number("volume_24h"),
        )
        .write_json()
        .encode()
    )


def latest_trades(trades: pl.DataFrame, per_symbol: int) -> pl.DataFrame:
    """The newest ``per_symbol`` trades of each (exchange, symbol), newest first."""
    return (
        trades.sort("event_time", "trade_id", descending=True)
        .group_by("exchange", "symbol", maintain_order=True)
        .head(per_symbol)
    )


def changed_bars(candles: pl.DataFrame, since: datetime | None) -> pl.DataFrame:
    """Bars updated after ``since`` (all of them when None): what an SSE client is sent."""
    if since is None:
        return candles
    return candles.filter(pl.col("updated_at") > since)


def bar_events(bars: pl.DataFrame) -> dict[tuple[str, str], list[bytes]]:
    """Server-Sent Events, one per updated bar, grouped by (exchange, symbol)."""
    events: dict[tuple[str, str], list[bytes]] = {}
    for (exchange, symbol), part in (
        bars.sort("minute").partition_by("exchange", "symbol", as_dict=True).items()
    ):
        head = orjson.dumps({"exchange": exchange, "symbol": symbol})[:-1] + b',"bar":'
        # One JSON object a line: one event a bar.
        lines = _bar_fields(part).write_ndjson().encode().splitlines()
        events[(str(exchange), str(symbol))] = [
            b"event: candle\ndata: " + head + line + b"}\n\n" for line in lines
        ]
    return events
