"""The 1-minute candle of docs/design.md, computed the plain way: the oracle that tests hold Spark's
Gold table and the API's answers against (never used by the pipeline itself, and sharing none
of its code: sums in exact Decimal, vwap by Decimal division at 100 digits then half-even)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, localcontext
from typing import Any

MINUTE_US = 60_000_000
_VWAP_QUANTUM = Decimal("1e-18")


def trade_order(trade: Mapping[str, Any]) -> tuple[int, int, str]:
    """Event time, then trade id as a number would sort (shorter first), then the id."""
    return trade["event_time"], len(trade["trade_id"]), trade["trade_id"]


def half_even_quotient(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator / denominator to 18 decimals, half-even. The quotient is first taken to 100
    significant digits; for operands of at most 38 digits a quotient that is not a tie at the
    19th decimal differs from one by far more than 10^-100, so that first rounding cannot
    make or break a tie."""
    with localcontext(Context(prec=100)):
        return (numerator / denominator).quantize(_VWAP_QUANTUM, rounding=ROUND_HALF_EVEN)


def reference_bars(trades: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Bars by (symbol, epoch minute) of trade v1 records as on the wire (price and qty as
    decimal strings, event_time in epoch microseconds, side), each trade counted once as given:
    every column of ``gold/candles_1m`` but the keys and ``updated_at``, exact."""
    by_bar: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for trade in trades:
        by_bar[(trade["symbol"], trade["event_time"] // MINUTE_US)].append(trade)
    bars = {}
    # Any rounding in a sum or product would be a bug of the oracle: trap it.
    with localcontext(Context(prec=100, traps=[Inexact])):
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
                "quote_volume": quote,
                "vwap": half_even_quotient(quote, volume),
                "trades": len(group),
                "buy_volume": sum(
                    (Decimal(t["qty"]) for t in group if t["side"] == "buy"), Decimal(0)
                ),
                "sell_volume": sum(
                    (Decimal(t["qty"]) for t in group if t["side"] == "sell"), Decimal(0)
                ),
                "first_trade_id": ordered[0]["trade_id"],
                "first_trade_time_us": ordered[0]["event_time"],
                "last_trade_id": ordered[-1]["trade_id"],
                "last_trade_time_us": ordered[-1]["event_time"],
            }
    return bars
