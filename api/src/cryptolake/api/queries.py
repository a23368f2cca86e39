"""The pure core of the API: polars frames in, frames or JSON bytes out. No I/O here.

Frames keep the Delta tables' column names and types (DECIMAL prices, volumes and vwaps, µs UTC
timestamps). Every figure stays exact: resampled sums are exact decimals (null where one would
not fit its column), resampled vwaps follow the contract's rule (``exact_vwap``), and JSON
numbers carry the decimals' exact digits.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Final

import orjson
import polars as pl

from cryptolake.common.trade import VWAP_SCALE, exact_vwap

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
# Decimal sums: in a group_by, polars 2.1 sums a DECIMAL(38, s) column into its Int128 with no
# check: a total past 38 digits comes out as a value the column cannot hold, one past Int128
# wraps around (a negative sum), and neither raises. So each value's unscaled integer is split
# at 10**19 and the halves are summed as Int128 (room for 10**19 rows), then joined.
_SPLIT: Final = 10**19
_MAX_UNSCALED: Final = 10**38
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
    summed exactly (null where a sum overflows its column), vwap = quote volume / volume by the
    contract's rule (:func:`exact_vwap`; null without volume). The bar's ``minute`` is the
    interval's start."""
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
            *(part for name in BAR_SUM_COLUMNS for part in _sum_parts(name)),
            pl.col("trades").sum(),
            # Complete when every minute is (false if one is not, null if one is unknown).
            _completeness(bars_1m).all(ignore_nulls=False).alias("complete"),
            pl.col("first_trade_time").first(),
            pl.col("last_trade_time").last(),
            pl.col("updated_at").max(),
        )
    )
    sums = grouped.select(_exact_sum(name, _scale(bars_1m, name)) for name in BAR_SUM_COLUMNS)
    vwap = [
        exact_vwap(quote, volume) if quote is not None and volume else None
        for quote, volume in sums.select("quote_volume", "volume").iter_rows()
    ]
    return grouped.drop(_part_names(*BAR_SUM_COLUMNS)).with_columns(
        sums, vwap=pl.Series(vwap, dtype=pl.Decimal(38, VWAP_SCALE))
    )


def _completeness(bars: pl.DataFrame) -> pl.Expr:
    """The bars' ``complete`` flag; null (unknown) for a table from before the column."""
    if "complete" in bars.columns:
        return pl.col("complete")
    return pl.lit(None, dtype=pl.Boolean)


def _polars_duration(width: timedelta) -> str:
    return f"{int(width.total_seconds())}s"


def _scale(frame: pl.DataFrame, column: str) -> int:
    dtype = frame.schema[column]
    assert isinstance(dtype, pl.Decimal), f"{column} is {dtype}, not a decimal"
    return dtype.scale


def _part_names(*names: str) -> list[str]:
    return [f"{name}:{part}" for name in names for part in ("high", "low", "nulls")]


def _sum_parts(name: str) -> list[pl.Expr]:
    """Aggregations from which :func:`_exact_sum` makes the sum of ``name``."""
    unscaled = pl.col(name).to_physical()
    high = unscaled // _SPLIT
    high_sum, low_sum, nulls = _part_names(name)
    return [
        high.sum().alias(high_sum),
        (unscaled - high * _SPLIT).sum().alias(low_sum),
        pl.col(name).null_count().alias(nulls),
    ]


def _exact_sum(name: str, scale: int) -> pl.Expr:
    """The sum of ``name`` (``scale`` decimals) from its :func:`_sum_parts`, exact; null where a
    value was null or where the sum does not fit 38 digits (what the Delta column holds)."""
    high, low, nulls = (pl.col(part) for part in _part_names(name))
    carry = low // _SPLIT
    high, low = high + carry, low - carry * _SPLIT  # 0 <= low < 10**19
    total = pl.when(high.abs() <= _SPLIT).then(high * _SPLIT + low)  # inside Int128
    unscaled = pl.when((nulls == 0) & (total.abs() < _MAX_UNSCALED)).then(total)
    # DECIMAL(38,0) times 1e-scale: the same unscaled integer with ``scale`` decimals.
    return (unscaled.cast(pl.Decimal(38, 0)) * Decimal(f"1e-{scale}")).alias(name)


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
    """A decimal column as its exact digits without trailing zeros (``42000.5``, ``3.0``), for
    :func:`_unquoted` to turn into a JSON number."""
    digits = pl.col(column).cast(pl.String)
    return digits.str.replace(r"^(-?[0-9]+\.[0-9]+?)0+$", "${1}").alias(column)


@cache
def _quoted_numbers(names: tuple[str, ...]) -> re.Pattern[bytes]:
    """``name":"digits"`` after a quote, for each of ``names``: two groups, ``name":`` and the
    digits. (Inside a JSON string every quote is escaped, so this only matches a key.)"""
    keys = "|".join(re.escape(name) for name in names)
    return re.compile(rf'(?<=")((?:{keys})":)"(-?[0-9]+(?:\.[0-9]+)?)"'.encode())


def _unquoted(rendered: str, numbers: tuple[str, ...]) -> bytes:
    """polars writes decimals as JSON strings; the fields ``numbers`` become JSON numbers with
    the same digits."""
    # split() gives the text around the matches and the groups of each: joined, the same text
    # without the quotes around the digits (a few times faster than sub() with a template).
    return b"".join(_quoted_numbers(numbers).split(rendered.encode()))


_BAR_NUMBERS: Final = (
    "open", "high", "low", "close", "volume", "quote_volume", "vwap", "buy_volume", "sell_volume",
)  # fmt: skip


def _bar_fields(bars: pl.DataFrame) -> pl.DataFrame:
    """Candles in their JSON shape (decimal digits for prices and volumes)."""
    return bars.select(
        *_time_fields("minute", "time"),
        *(_number(name) for name in ("open", "high", "low", "close")),
        *(_number(name) for name in ("volume", "quote_volume")),
        _number("vwap"),
        pl.col("trades"),
        *(_number(name) for name in ("buy_volume", "sell_volume")),
        _completeness(bars).alias("complete"),
    )


def bars_json(bars: pl.DataFrame) -> bytes:
    """Candles as a JSON array of objects."""
    return _unquoted(_bar_fields(bars).write_json(), _BAR_NUMBERS)


def complete_windows(points: pl.DataFrame, newest_bar: datetime | None) -> pl.DataFrame:
    """Drop the trailing windows that end after the symbol's newest bar (``newest_bar``, its
    minute): their plot time would lie in the future."""
    if newest_bar is None:
        return points
    return points.filter(pl.col("window_end") - timedelta(minutes=1) <= newest_bar)


def sma_json(points: pl.DataFrame) -> bytes:
    """SMA windows; ``time`` is the last minute inside the window (where a chart plots it)."""
    rendered = (
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
    )
    return _unquoted(rendered, ("sma", "vwap"))


_STATS_NUMBERS: Final = (
    "open", "close", "high", "low", "change_pct", "volume", "quote_volume", "vwap",
)  # fmt: skip


def stats_json(stats: pl.DataFrame) -> bytes:
    rendered = stats.select(
        pl.col("exchange"),
        pl.col("symbol"),
        *_time_fields("period_start", "period_start"),
        *_time_fields("period_end", "period_end"),
        *(_number(name) for name in _STATS_NUMBERS),
        pl.col("trades"),
    ).write_json()
    return _unquoted(rendered, _STATS_NUMBERS)


def trades_json(trades: pl.DataFrame) -> bytes:
    rendered = trades.select(
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("trade_id"),
        _number("price"),
        _number("qty"),
        pl.col("side"),
        *_time_fields("event_time", "time", _ISO_MICROS),
    ).write_json()
    return _unquoted(rendered, ("price", "qty"))


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
        .agg(_sum_parts("volume"))
        .select(
            "exchange",
            "symbol",
            _exact_sum("volume", _scale(candles, "volume")).alias("volume_24h"),
        )
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
    rendered = table.select(
        "exchange",
        "symbol",
        _number("last_price"),
        *_time_fields("last_time", "last_time", _ISO_MICROS),
        "change_1h_pct",
        "change_24h_pct",
        _number("volume_24h"),
    ).write_json()
    return _unquoted(rendered, ("last_price", "volume_24h"))


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
        lines = _unquoted(_bar_fields(part).write_ndjson(), _BAR_NUMBERS).splitlines()
        events[(str(exchange), str(symbol))] = [
            b"event: candle\ndata: " + head + line + b"}\n\n" for line in lines
        ]
    return events
