"""The normalized trade v1 contract shared by every component (see shared DESIGN.md).

One JSON object per Kafka message on ``crypto.trades.v1``, keyed ``"{exchange}:{symbol}"`` so
that a symbol's trades stay ordered in one partition. Prices and quantities travel as decimal
strings, never binary floats; times are epoch microseconds UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

SCHEMA_VERSION: Final = 1
TRADES_TOPIC: Final = "crypto.trades.v1"
DLQ_TOPIC: Final = "crypto.trades.dlq"

LIVE_EXCHANGES: Final = ("binance", "kraken", "coinbase")
SIMULATOR: Final = "simulator"
EXCHANGES: Final = (*LIVE_EXCHANGES, SIMULATOR)
SIDES: Final = ("buy", "sell")

# Event times before this are absurd for crypto trades (2010-01-01T00:00:00Z, in µs).
MIN_EVENT_TIME_US: Final = 1_262_304_000_000_000
# How far an exchange clock may run ahead of ours before a trade counts as absurd.
MAX_FUTURE_SKEW_US: Final = 300_000_000

_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_CANONICAL_SYMBOL = re.compile(r"[A-Z0-9]{1,20}-[A-Z0-9]{1,20}")


class RejectReason(StrEnum):
    """Why a frame, or one trade in it, could not be normalized (DLQ and quarantine codes)."""

    MALFORMED_JSON = "malformed_json"
    UNKNOWN_MESSAGE = "unknown_message"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_SYMBOL = "bad_symbol"
    BAD_PRICE = "bad_price"
    BAD_QTY = "bad_qty"
    BAD_SIDE = "bad_side"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    LATE = "late"


class TradeRejected(ValueError):
    """A field failed validation; ``reason`` is the code that goes to the DLQ."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Trade:
    """One normalized trade v1. Build it with :func:`make_trade` so every field is validated."""

    exchange: str
    symbol: str
    trade_id: str
    price: str
    qty: str
    side: str
    event_time: int
    ingest_time: int
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "trade_id": self.trade_id,
            "price": self.price,
            "qty": self.qty,
            "side": self.side,
            "event_time": self.event_time,
            "ingest_time": self.ingest_time,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, value: bytes | str) -> Trade:
        """Parse and validate a message value; raises :class:`TradeRejected`."""
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise TradeRejected(RejectReason.MALFORMED_JSON, str(exc)) from exc
        if not isinstance(obj, dict):
            raise TradeRejected(RejectReason.BAD_TYPE, "a trade is a JSON object")
        version = obj.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TradeRejected(
                RejectReason.UNKNOWN_SCHEMA_VERSION, f"schema_version {version!r} is not 1"
            )
        try:
            return make_trade(
                exchange=obj["exchange"],
                symbol=obj["symbol"],
                trade_id=obj["trade_id"],
                price=obj["price"],
                qty=obj["qty"],
                side=obj["side"],
                event_time=obj["event_time"],
                ingest_time=obj["ingest_time"],
            )
        except KeyError as exc:
            raise TradeRejected(RejectReason.MISSING_FIELD, f"{exc.args[0]} is missing") from exc


def canonical_decimal(text: str) -> str | None:
    """The plain (no exponent) decimal string for ``text`` if it is a number > 0, else None.

    Exchange strings such as ``"0.00100000"`` are kept exactly as sent.
    """
    if _PLAIN_DECIMAL.fullmatch(text) is None:
        return None
    if not text.strip("0."):
        return None
    return text


def make_trade(
    *,
    exchange: object,
    symbol: object,
    trade_id: object,
    price: object,
    qty: object,
    side: object,
    event_time: object,
    ingest_time: object,
) -> Trade:
    """Validate raw field values into a :class:`Trade`; raises :class:`TradeRejected`."""
    if exchange not in EXCHANGES:
        raise TradeRejected(RejectReason.BAD_TYPE, f"unknown exchange {exchange!r}")
    if not isinstance(symbol, str) or _CANONICAL_SYMBOL.fullmatch(symbol) is None:
        raise TradeRejected(RejectReason.BAD_SYMBOL, f"symbol {symbol!r} is not BASE-QUOTE")
    if isinstance(trade_id, int) and not isinstance(trade_id, bool):
        trade_id = str(trade_id)
    if not isinstance(trade_id, str) or not trade_id:
        raise TradeRejected(RejectReason.BAD_TYPE, f"trade_id {trade_id!r} is not a string")
    if not isinstance(price, str) or (canonical_price := canonical_decimal(price)) is None:
        raise TradeRejected(RejectReason.BAD_PRICE, f"price {price!r} is not a decimal > 0")
    if not isinstance(qty, str) or (canonical_qty := canonical_decimal(qty)) is None:
        raise TradeRejected(RejectReason.BAD_QTY, f"qty {qty!r} is not a decimal > 0")
    if side not in SIDES:
        raise TradeRejected(RejectReason.BAD_SIDE, f"side {side!r} is not buy or sell")
    if not isinstance(ingest_time, int) or isinstance(ingest_time, bool):
        raise TradeRejected(RejectReason.BAD_TYPE, f"ingest_time {ingest_time!r} is not an int")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        raise TradeRejected(RejectReason.BAD_TYPE, f"event_time {event_time!r} is not an int")
    if not MIN_EVENT_TIME_US <= event_time <= ingest_time + MAX_FUTURE_SKEW_US:
        raise TradeRejected(
            RejectReason.BAD_TIMESTAMP,
            f"event_time {event_time} is before 2010 or over 5 min ahead of ingest_time",
        )
    return Trade(
        exchange=exchange,
        symbol=symbol,
        trade_id=trade_id,
        price=canonical_price,
        qty=canonical_qty,
        side=side,
        event_time=event_time,
        ingest_time=ingest_time,
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What goes to ``crypto.trades.dlq``: the raw frame (or trade element) and why."""

    source: str
    reason: RejectReason
    detail: str
    raw: str
    ingest_time: int

    @property
    def key(self) -> str:
        return self.source

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "source": self.source,
                "reason": str(self.reason),
                "detail": self.detail,
                "raw": self.raw,
                "ingest_time": self.ingest_time,
            }
        )
