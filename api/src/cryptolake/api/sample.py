"""A sample lakehouse written with ``deltalake`` in the jobs' table schemas — no Spark.

Tests, the benchmark and ``cryptolake-api`` demos use it: a deterministic random walk of
trades, the 1-minute bars, SMA and period stats computed from them with ``Decimal``, and the
Delta writes (a local folder or ``s3://`` with the API's storage options).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from itertools import groupby
from typing import Any, Final

import pyarrow as pa
from deltalake import write_deltalake

from cryptolake.common.completeness import id_bounds, mark_complete
from cryptolake.common.tables import (
    GOLD_CANDLES_1M,
    GOLD_SMA_5M,
    GOLD_STATS_DAILY,
    GOLD_STATS_HOURLY,
    SILVER_TRADES,
)

# The contract's column types (cryptolake.common.trade): every figure exact.
PRICE: Final = pa.decimal128(19, 10)
QTY: Final = pa.decimal128(18, 8)
VOLUME: Final = pa.decimal128(38, 8)  # sums of quantities
QUOTE: Final = pa.decimal128(38, 18)  # sums of price * qty
# vwap and sma: quotients of prices' size, 18 decimals (half-even here); change_pct: 14 decimals,
# as the jobs write them (docs/data-contract.md).
RATIO: Final = pa.decimal128(27, 18)
CHANGE_PCT: Final = pa.decimal128(38, 14)
TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
QUANTUM: Final = Decimal("1e-18")

CANDLES_SCHEMA: Final = pa.schema(
    [
        ("exchange", pa.string()), ("symbol", pa.string()), ("minute", TIMESTAMP),
        ("trade_date", pa.date32()), ("open", PRICE), ("high", PRICE), ("low", PRICE),
        ("close", PRICE), ("volume", VOLUME), ("quote_volume", QUOTE), ("vwap", RATIO),
        ("trades", pa.int64()), ("buy_volume", VOLUME), ("sell_volume", VOLUME),
        ("first_trade_time", TIMESTAMP), ("first_trade_id", pa.string()),
        ("last_trade_time", TIMESTAMP), ("last_trade_id", pa.string()), ("updated_at", TIMESTAMP),
        ("min_trade_id", pa.int64()), ("max_trade_id", pa.int64()), ("complete", pa.bool_()),
    ]
)  # fmt: skip
SMA_SCHEMA: Final = pa.schema(
    [
        ("exchange", pa.string()), ("symbol", pa.string()), ("window_start", TIMESTAMP),
        ("window_end", TIMESTAMP), ("trade_date", pa.date32()), ("sma", RATIO),
        ("vwap", RATIO), ("bars", pa.int32()), ("trades", pa.int64()), ("updated_at", TIMESTAMP),
    ]
)  # fmt: skip
STATS_SCHEMA: Final = pa.schema(
    [
        ("exchange", pa.string()), ("symbol", pa.string()), ("period_start", TIMESTAMP),
        ("period_end", TIMESTAMP), ("trade_date", pa.date32()), ("open", PRICE),
        ("close", PRICE), ("high", PRICE), ("low", PRICE), ("change_pct", CHANGE_PCT),
        ("volume", VOLUME), ("quote_volume", QUOTE), ("vwap", RATIO), ("trades", pa.int64()),
        ("updated_at", TIMESTAMP),
    ]
)  # fmt: skip
SILVER_SCHEMA: Final = pa.schema(
    [
        ("exchange", pa.string()), ("symbol", pa.string()), ("trade_id", pa.string()),
        ("price", PRICE), ("qty", QTY), ("side", pa.string()), ("event_time", TIMESTAMP),
        ("ingest_time", TIMESTAMP), ("trade_date", pa.date32()), ("year", pa.int32()),
        ("month", pa.int32()), ("day", pa.int32()), ("hour", pa.int32()),
        ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
    ]
)  # fmt: skip


# The tests' oracle computes on its own, not with the code it checks: sums and products exact
# (one that would round raises Inexact), quotients by ``rounded``.
EXACT: Final = Context(prec=100, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


def rounded(numerator: Decimal, denominator: Decimal | int) -> Decimal:
    """numerator / denominator rounded half-even to 18 decimals. The quotient is taken to 100
    digits first: with operands of at most 38 digits and 18 decimals, a quotient that is not a
    tie lies at least 1e-75 from one, so that first rounding (under 1e-78 here) never makes one."""
    with localcontext(prec=100, rounding=ROUND_HALF_EVEN):
        return (numerator / denominator).quantize(QUANTUM)


@dataclass(frozen=True)
class SampleTrade:
    exchange: str
    symbol: str
    trade_id: str
    price: Decimal
    qty: Decimal
    side: str
    event_time: datetime


def generate_trades(
    markets: Sequence[tuple[str, str, Decimal]],
    start: datetime,
    minutes: int,
    per_minute: int = 3,
    seed: int = 7,
    *,
    empty_minutes: bool = True,
    price_decimals: Sequence[int] = (2,),
    qty_decimals: int = 3,
) -> list[SampleTrade]:
    """A random walk per (exchange, symbol, first price): ``per_minute`` trades a minute on
    average (some minutes empty unless ``empty_minutes`` is false; some ties on event time).
    Prices take the numbers of decimals in ``price_decimals`` in turn; quantities (up to 5)
    have ``qty_decimals``."""
    rng = random.Random(seed)
    trades: list[SampleTrade] = []
    for exchange, symbol, first_price in markets:
        price, trade_id = first_price, 1000
        for minute in range(minutes):
            fewest = 0 if empty_minutes else 1
            for _ in range(rng.randint(fewest, 2 * per_minute - fewest)):
                step = price * (1 + Decimal(rng.randint(-50, 50)) / 10_000)
                decimals = price_decimals[trade_id % len(price_decimals)]
                price = max(step.quantize(Decimal(1).scaleb(-decimals)), Decimal("0.01"))
                offset = timedelta(minutes=minute, milliseconds=rng.randrange(0, 60_000, 250))
                qty = Decimal(rng.randint(1, 5 * 10**qty_decimals)).scaleb(-qty_decimals)
                side = rng.choice(("buy", "sell"))
                trade_id += 1
                trades.append(
                    SampleTrade(exchange, symbol, str(trade_id), price, qty, side, start + offset)
                )
    return trades


def trade_order(trade: SampleTrade) -> tuple[datetime, int, str]:
    """Open/close order of docs/design.md: event time, then trade id (shorter ids first)."""
    return trade.event_time, len(trade.trade_id), trade.trade_id


def floor_time(moment: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // width) * width


def bars_from_trades(
    trades: Iterable[SampleTrade], width: timedelta = timedelta(minutes=1)
) -> list[dict[str, Any]]:
    """Bars of ``width`` straight from trades, exact in Decimal, in the candles' columns."""
    groups: dict[tuple[str, str, datetime], list[SampleTrade]] = {}
    for trade in trades:
        key = (trade.exchange, trade.symbol, floor_time(trade.event_time, width))
        groups.setdefault(key, []).append(trade)
    updated_at = datetime.now(UTC)
    bars = []
    for (exchange, symbol, start), group in sorted(groups.items()):
        group.sort(key=trade_order)
        with localcontext(EXACT):
            volume = sum((t.qty for t in group), Decimal(0))
            quote = sum((t.price * t.qty for t in group), Decimal(0))
            buy_volume = sum((t.qty for t in group if t.side == "buy"), Decimal(0))
            sell_volume = sum((t.qty for t in group if t.side == "sell"), Decimal(0))
        low, high = id_bounds(t.trade_id for t in group)
        bars.append(
            {
                "exchange": exchange, "symbol": symbol, "minute": start,
                "trade_date": start.date(), "open": group[0].price,
                "high": max(t.price for t in group), "low": min(t.price for t in group),
                "close": group[-1].price, "volume": volume, "quote_volume": quote,
                "vwap": rounded(quote, volume), "trades": len(group),
                "buy_volume": buy_volume, "sell_volume": sell_volume,
                "first_trade_time": group[0].event_time, "first_trade_id": group[0].trade_id,
                "last_trade_time": group[-1].event_time, "last_trade_id": group[-1].trade_id,
                "updated_at": updated_at,
                "min_trade_id": low, "max_trade_id": high,
            }
        )  # fmt: skip
    for _, market in groupby(bars, key=lambda bar: (bar["exchange"], bar["symbol"])):
        ordered = list(market)
        flags = mark_complete(ordered, from_start=True, to_end=True)
        for index, bar in enumerate(ordered):
            bar["complete"] = flags[index]
    return bars


def sma_from_bars(bars: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """5-minute windows sliding by 1 minute over the 1-minute closes (as the gold job)."""
    windows: dict[tuple[str, str, datetime], list[dict[str, Any]]] = {}
    for bar in bars:
        for back in range(5):
            start = bar["minute"] - timedelta(minutes=back)
            windows.setdefault((bar["exchange"], bar["symbol"], start), []).append(bar)
    rows = []
    for (exchange, symbol, start), group in sorted(windows.items()):
        with localcontext(EXACT):
            closes = sum((b["close"] for b in group), Decimal(0))
            volume = sum((b["volume"] for b in group), Decimal(0))
            quote = sum((b["quote_volume"] for b in group), Decimal(0))
        rows.append(
            {
                "exchange": exchange, "symbol": symbol, "window_start": start,
                "window_end": start + timedelta(minutes=5), "trade_date": start.date(),
                "sma": rounded(closes, len(group)), "vwap": rounded(quote, volume),
                "bars": len(group),
                "trades": sum(b["trades"] for b in group), "updated_at": datetime.now(UTC),
            }
        )  # fmt: skip
    return rows


def stats_from_bars(bars: Sequence[dict[str, Any]], period: timedelta) -> list[dict[str, Any]]:
    """Hourly or daily open, close, high, low, % change, volume, vwap from 1-minute bars."""
    groups: dict[tuple[str, str, datetime], list[dict[str, Any]]] = {}
    for bar in bars:
        key = (bar["exchange"], bar["symbol"], floor_time(bar["minute"], period))
        groups.setdefault(key, []).append(bar)
    rows = []
    for (exchange, symbol, start), group in sorted(groups.items()):
        group.sort(key=lambda b: b["minute"])
        first, last = group[0]["open"], group[-1]["close"]
        with localcontext(EXACT):
            volume = sum((b["volume"] for b in group), Decimal(0))
            quote = sum((b["quote_volume"] for b in group), Decimal(0))
            change = (last - first) * 100
        rows.append(
            {
                "exchange": exchange, "symbol": symbol, "period_start": start,
                "period_end": start + period, "trade_date": start.date(), "open": first,
                "close": last, "high": max(b["high"] for b in group),
                "low": min(b["low"] for b in group),
                "change_pct": rounded(change, first).quantize(Decimal("1e-14")),
                "volume": volume, "quote_volume": quote, "vwap": rounded(quote, volume),
                "trades": sum(b["trades"] for b in group), "updated_at": datetime.now(UTC),
            }
        )  # fmt: skip
    return rows


def silver_rows(trades: Iterable[SampleTrade]) -> list[dict[str, Any]]:
    return [
        {
            "exchange": t.exchange, "symbol": t.symbol, "trade_id": t.trade_id, "price": t.price,
            "qty": t.qty, "side": t.side, "event_time": t.event_time,
            "ingest_time": t.event_time + timedelta(milliseconds=5),
            "trade_date": t.event_time.date(), "year": t.event_time.year,
            "month": t.event_time.month, "day": t.event_time.day, "hour": t.event_time.hour,
            "kafka_topic": "crypto.trades.v1", "kafka_partition": 0, "kafka_offset": index,
        }
        for index, t in enumerate(trades)
    ]  # fmt: skip


def _append(
    uri: str, rows: list[dict[str, Any]], schema: pa.Schema, options: dict[str, str] | None
) -> None:
    if rows:
        table = pa.Table.from_pylist(rows, schema=schema)
        write_deltalake(
            uri, table, mode="append", partition_by=["trade_date"], storage_options=options
        )


def write_lake(
    table_uri: Any,
    trades: Sequence[SampleTrade],
    storage_options: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Write silver/trades and the four Gold tables for ``trades`` (one commit a day each, so
    tables have several files and versions). ``table_uri(table)`` gives each table's URI.
    Returns the 1-minute bars written."""
    bars = bars_from_trades(trades)
    days: dict[date, list[SampleTrade]] = {}
    for trade in trades:
        days.setdefault(trade.event_time.date(), []).append(trade)
    for day, day_trades in days.items():
        day_bars = [bar for bar in bars if bar["trade_date"] == day]
        _append(table_uri(SILVER_TRADES), silver_rows(day_trades), SILVER_SCHEMA, storage_options)
        _append(table_uri(GOLD_CANDLES_1M), day_bars, CANDLES_SCHEMA, storage_options)
        _append(table_uri(GOLD_SMA_5M), sma_from_bars(day_bars), SMA_SCHEMA, storage_options)
        _append(
            table_uri(GOLD_STATS_HOURLY),
            stats_from_bars(day_bars, timedelta(hours=1)),
            STATS_SCHEMA,
            storage_options,
        )
        _append(
            table_uri(GOLD_STATS_DAILY),
            stats_from_bars(day_bars, timedelta(days=1)),
            STATS_SCHEMA,
            storage_options,
        )
    return bars


def append_bars(
    table_uri: str, bars: list[dict[str, Any]], storage_options: dict[str, str] | None = None
) -> None:
    """One more commit to gold/candles_1m (new minutes), as the gold job's MERGE would add."""
    _append(table_uri, bars, CANDLES_SCHEMA, storage_options)
