"""The normalized trade v1 contract shared by every component (docs/design.md).

One JSON object per Kafka message on ``crypto.trades.v1``, keyed ``"{exchange}:{symbol}"`` so
that a symbol's trades stay ordered in one partition. Prices and quantities travel as decimal
strings, never binary floats; times are epoch microseconds UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, Final

import orjson

from cryptolake.common.symbols import PERP_SUFFIX

SCHEMA_VERSION: Final = 1
TRADES_TOPIC: Final = "crypto.trades.v1"
DLQ_TOPIC: Final = "crypto.trades.dlq"
# Topic settings every creator applies (producer, operator, benchmarks): the broker stamps each
# record with its append time, a clock no producer can forge; silver judges "too far in the
# future" against it.
TOPIC_CONFIG: Final = {"message.timestamp.type": "LogAppendTime"}

LIVE_EXCHANGES: Final = ("binance", "kraken", "coinbase")
SIMULATOR: Final = "simulator"
EXCHANGES: Final = (*LIVE_EXCHANGES, SIMULATOR)
SIDES: Final = ("buy", "sell")

# Event times before this are absurd for crypto trades (2010-01-01T00:00:00Z, in µs).
MIN_EVENT_TIME_US: Final = 1_262_304_000_000_000
# How far a trade's times may run ahead of a clock the record cannot set (the broker's append
# time in silver, the receive time in the producer) before they count as absurd.
MAX_FUTURE_SKEW_US: Final = 300_000_000

# --- The validation rules: one source for the producer (make_trade), silver (Spark rlike) and
# the API. Patterns are written without anchors: Python's ``$`` and Java's both match before a
# final newline, so each engine anchors them itself (``re.fullmatch``; ``^(?:…)\z`` in Spark).

# Numeric bounds. Inside them every product and sum Gold computes is exact in Spark's 38-digit
# decimals: price DECIMAL(19,10) * qty DECIMAL(18,8) = DECIMAL(38,18) with no scale cut.
PRICE_INTEGER_DIGITS: Final = 9  # price < 1,000,000,000
PRICE_SCALE: Final = 10  # at most 10 decimal places
QTY_INTEGER_DIGITS: Final = 10  # qty < 10,000,000,000
QTY_SCALE: Final = 8  # at most 8 decimal places (what Binance, Kraken and Coinbase publish)
QUOTE_SCALE: Final = PRICE_SCALE + QTY_SCALE  # price * qty, exact
VWAP_SCALE: Final = 18  # quote volume / volume, rounded half-even


# Leading zeros, and trailing zeros past the scale, change no value: a few are allowed, not a
# megabyte of them (a valid trade stays far below MAX_VALUE_BYTES).
MAX_ZERO_PADDING: Final = 20


def decimal_pattern(integer_digits: int, scale: int) -> str:
    """A plain decimal string (ASCII digits, optional point; no sign, exponent or spaces) with at
    most ``integer_digits`` before the point and ``scale`` after it, plus at most
    ``MAX_ZERO_PADDING`` leading zeros and as many trailing zeros past the scale."""
    return (
        rf"0{{0,{MAX_ZERO_PADDING}}}[0-9]{{1,{integer_digits}}}"
        rf"(?:\.[0-9]{{1,{scale}}}0{{0,{MAX_ZERO_PADDING}}})?"
    )


PRICE_PATTERN: Final = decimal_pattern(PRICE_INTEGER_DIGITS, PRICE_SCALE)
QTY_PATTERN: Final = decimal_pattern(QTY_INTEGER_DIGITS, QTY_SCALE)
# Canonical symbols: ASCII upper-case letters and digits, BASE-QUOTE (Kraken XBT is BTC), and
# BASE-QUOTE-PERP for a perpetual futures contract.
SYMBOL_PATTERN: Final = rf"[A-Z0-9]{{1,20}}-[A-Z0-9]{{1,20}}(?:{PERP_SUFFIX})?"
# The exchange's own trade id: 1-64 ASCII letters, digits or . _ : - (JSON strings or integers).
TRADE_ID_PATTERN: Final = r"[0-9A-Za-z._:-]{1,64}"
# Epoch-microsecond times: an integer of at most 18 digits (fits a long).
TIME_PATTERN: Final = r"-?[0-9]{1,18}"
# A trade message is ~250 bytes; a larger value is quarantined (too_large) before parsing, and
# keeps a prefix of this many characters as its raw value (bronze keeps every byte).
MAX_VALUE_BYTES: Final = 16_384
RAW_PREFIX_CHARS: Final = 1_024

PRICE_RULE: Final = (
    f"is not a plain decimal > 0 below 1e{PRICE_INTEGER_DIGITS} with at most {PRICE_SCALE} decimals"
)
QTY_RULE: Final = (
    f"is not a plain decimal > 0 below 1e{QTY_INTEGER_DIGITS} with at most {QTY_SCALE} decimals"
)
_PRICE = re.compile(PRICE_PATTERN)
_QTY = re.compile(QTY_PATTERN)
_CANONICAL_SYMBOL = re.compile(SYMBOL_PATTERN)
_TRADE_ID = re.compile(TRADE_ID_PATTERN)


def is_canonical_symbol(symbol: str) -> bool:
    return _CANONICAL_SYMBOL.fullmatch(symbol) is not None


def exact_vwap(quote_volume: Decimal, volume: Decimal) -> Decimal:
    """quote volume / volume rounded half-even to ``VWAP_SCALE`` decimals, computed exactly
    (rational arithmetic: no context precision, no double rounding)."""
    scaled = round(Fraction(quote_volume) / Fraction(volume) * 10**VWAP_SCALE)  # half-even
    return Decimal(f"{scaled}E-{VWAP_SCALE}")


class RejectReason(StrEnum):
    """Why a frame, or one trade in it, could not be normalized (DLQ and quarantine codes)."""

    MALFORMED_JSON = "malformed_json"
    UNKNOWN_MESSAGE = "unknown_message"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_ENCODING = "bad_encoding"
    TOO_LARGE = "too_large"
    BAD_EXCHANGE = "bad_exchange"
    BAD_SYMBOL = "bad_symbol"
    BAD_TRADE_ID = "bad_trade_id"
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
                RejectReason.UNKNOWN_SCHEMA_VERSION, f"schema_version {version!r:.80} is not 1"
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


def canonical_decimal(text: str, pattern: re.Pattern[str] = _PRICE) -> str | None:
    """``text`` itself if it is a plain decimal > 0 within ``pattern``'s bounds, else None.

    Exchange strings such as ``"0.00100000"`` are kept exactly as sent.
    """
    if pattern.fullmatch(text) is None or not text.strip("0."):
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
        raise TradeRejected(RejectReason.BAD_EXCHANGE, f"unknown exchange {exchange!r:.80}")
    if not isinstance(symbol, str) or not is_canonical_symbol(symbol):
        raise TradeRejected(RejectReason.BAD_SYMBOL, f"symbol {symbol!r:.80} is not BASE-QUOTE")
    if isinstance(trade_id, int) and not isinstance(trade_id, bool):
        trade_id = str(trade_id)
    if not isinstance(trade_id, str):
        raise TradeRejected(RejectReason.BAD_TYPE, f"trade_id {trade_id!r:.80} is not a string")
    if _TRADE_ID.fullmatch(trade_id) is None:
        raise TradeRejected(
            RejectReason.BAD_TRADE_ID, f"trade_id {trade_id!r:.80} is not 1-64 of [0-9A-Za-z._:-]"
        )
    if not isinstance(price, str) or (canonical_price := canonical_decimal(price)) is None:
        raise TradeRejected(RejectReason.BAD_PRICE, f"price {price!r:.80} {PRICE_RULE}")
    if not isinstance(qty, str) or (canonical_qty := canonical_decimal(qty, _QTY)) is None:
        raise TradeRejected(RejectReason.BAD_QTY, f"qty {qty!r:.80} {QTY_RULE}")
    if side not in SIDES:
        raise TradeRejected(RejectReason.BAD_SIDE, f"side {side!r:.80} is not buy or sell")
    if not isinstance(ingest_time, int) or isinstance(ingest_time, bool):
        raise TradeRejected(RejectReason.BAD_TYPE, f"ingest_time {ingest_time!r:.80} is not an int")
    if not isinstance(event_time, int) or isinstance(event_time, bool):
        raise TradeRejected(RejectReason.BAD_TYPE, f"event_time {event_time!r:.80} is not an int")
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
    """What goes to ``crypto.trades.dlq``: the raw frame (or trade element), or its first
    ``RAW_PREFIX_CHARS`` characters, and why; ``raw_length`` is the whole raw's size in bytes."""

    source: str
    reason: RejectReason
    detail: str
    raw: str
    ingest_time: int
    raw_length: int | None = None

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
                "raw_length": self.raw_length,
                "ingest_time": self.ingest_time,
            }
        )
