"""The 1-minute candle of DESIGN.md, computed the plain way: the oracle that tests hold Spark's
Gold table and the API's answers against (never used by the pipeline itself)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

MINUTE_US = 60_000_000


def trade_order(trade: Mapping[str, Any]) -> tuple[int, int, str]:
    """Event time, then trade id as a number would sort (shorter first), then the id."""
    return trade["event_time"], len(trade["trade_id"]), trade["trade_id"]


def reference_bars(trades: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Bars by (symbol, epoch minute) of trade v1 records as on the wire (price and qty as
    decimal strings, event_time in epoch microseconds), each trade counted once as given:
    open/close by ``trade_order``, high, low, volume, trades and vwap in exact Decimal."""
    by_bar: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for trade in trades:
        by_bar[(trade["symbol"], trade["event_time"] // MINUTE_US)].append(trade)
    bars = {}
    for key, group in by_bar.items():
        ordered = sorted(group, key=trade_order)
        prices = [Decimal(t["price"]) for t in group]
        volume = sum((Decimal(t["qty"]) for t in group), Decimal(0))
        quote = sum((Decimal(t["price"]) * Decimal(t["qty"]) for t in group), Decimal(0))
        bars[key] = {
            "open": Decimal(ordered[0]["price"]),
            "high": max(prices),
            "low": min(prices),
            "close": Decimal(ordered[-1]["price"]),
            "volume": volume,
            "trades": len(group),
            "vwap": quote / volume,
        }
    return bars
