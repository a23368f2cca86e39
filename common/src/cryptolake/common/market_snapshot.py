"""The market snapshot v1 contract: one coin's market as an aggregator publishes it (CoinGecko's
``/coins/markets``), on ``crypto.markets.v1``, keyed ``"{source}:{coin_id}"``.

One JSON object a message; every figure a decimal string exactly as the source sent it (no
binary float on the way), times in epoch microseconds UTC:

.. code-block:: json

    {"schema_version": 1, "source": "coingecko", "coin_id": "bitcoin", "symbol": "BTC",
     "name": "Bitcoin", "price_usd": "67187.33", "market_cap_usd": "1317802988326",
     "volume_24h_usd": "31260929299", "change_24h_pct": "3.63727", "last_updated": 1711455600123000,
     "ingest_time": 1711455601000000}

A row that cannot be normalized is a dead letter (``crypto.trades.dlq``, source
``<source>:markets``) with its reason; silver checks the contract again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import orjson

from cryptolake.common.timeutil import rfc3339_to_us
from cryptolake.common.trade import MAX_FUTURE_SKEW_US, MIN_EVENT_TIME_US, RejectReason

SCHEMA_VERSION: Final = 1
MARKETS_TOPIC: Final = "crypto.markets.v1"
COINGECKO: Final = "coingecko"
COIN_ID_PATTERN: Final = r"[a-z0-9][a-z0-9.-]{0,99}"
COIN_SYMBOL_PATTERN: Final = r"[A-Z0-9]{1,20}"
# Figures travel as silver's decimal(38, 18) can hold them: 20 integer digits, 18 decimals.
FIGURE_INTEGER_DIGITS: Final = 20
FIGURE_SCALE: Final = 18
MAX_NAME_CHARS: Final = 100
_COIN_ID = re.compile(COIN_ID_PATTERN)
_COIN_SYMBOL = re.compile(COIN_SYMBOL_PATTERN)


class SnapshotRejected(ValueError):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class MarketSnapshot:
    source: str
    coin_id: str
    symbol: str
    name: str
    price_usd: Decimal
    market_cap_usd: Decimal | None
    volume_24h_usd: Decimal | None
    change_24h_pct: Decimal | None
    last_updated: int  # µs
    ingest_time: int  # µs

    @property
    def key(self) -> str:
        return f"{self.source}:{self.coin_id}"

    def to_json(self) -> bytes:
        def text(value: Decimal | None) -> str | None:
            return None if value is None else f"{value:f}"

        return orjson.dumps({
            "schema_version": SCHEMA_VERSION, "source": self.source, "coin_id": self.coin_id,
            "symbol": self.symbol, "name": self.name, "price_usd": text(self.price_usd),
            "market_cap_usd": text(self.market_cap_usd),
            "volume_24h_usd": text(self.volume_24h_usd),
            "change_24h_pct": text(self.change_24h_pct), "last_updated": self.last_updated,
            "ingest_time": self.ingest_time,
        })  # fmt: skip


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number this contract carries")


def decode_exact(body: bytes) -> Any:
    """JSON with every number as the Decimal of its digits (CoinGecko's floats stay exact);
    NaN and Infinity refused. Raises SnapshotRejected (bad_encoding, malformed_json)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SnapshotRejected(RejectReason.BAD_ENCODING, f"not UTF-8: {error}") from error
    try:
        return json.loads(text, parse_float=Decimal, parse_int=Decimal,
                          parse_constant=_refuse_constant)  # fmt: skip
    except (ValueError, RecursionError) as error:
        raise SnapshotRejected(RejectReason.MALFORMED_JSON, str(error)[:200]) from error


def _figure(row: dict[str, Any], field: str, *, required: bool, signed: bool = False
            ) -> Decimal | None:  # fmt: skip
    value = row.get(field)
    if value is None:
        if required:
            raise SnapshotRejected(RejectReason.MISSING_FIELD, f"{field} is missing or null")
        return None
    if not isinstance(value, Decimal):  # a string, a bool, an object: never guessed at
        raise SnapshotRejected(RejectReason.BAD_TYPE, f"{field} is {type(value).__name__}, "
                               "not a number")  # fmt: skip
    exponent = value.as_tuple().exponent
    integer_digits = value.adjusted() + 1
    if not signed and value < 0:
        raise SnapshotRejected(RejectReason.BAD_PRICE, f"{field} is negative: {value}")
    if isinstance(exponent, int) and -exponent > FIGURE_SCALE and value != 0:
        raise SnapshotRejected(RejectReason.BAD_PRICE, f"{field} {value} has more than "
                               f"{FIGURE_SCALE} decimals")  # fmt: skip
    if integer_digits > FIGURE_INTEGER_DIGITS:
        raise SnapshotRejected(RejectReason.BAD_PRICE, f"{field} {value} has more than "
                               f"{FIGURE_INTEGER_DIGITS} integer digits")  # fmt: skip
    return value


def snapshot_from_coingecko(row: Any, source: str, ingest_time: int) -> MarketSnapshot:
    """One element of CoinGecko's ``/api/v3/coins/markets`` (numbers already Decimal, see
    ``decode_exact``) as a snapshot; SnapshotRejected says why not.

    .. code-block:: json

        {"id": "bitcoin", "symbol": "btc", "name": "Bitcoin", "current_price": 67187.33,
         "market_cap": 1317802988326, "total_volume": 31260929299,
         "price_change_percentage_24h": 3.63727, "last_updated": "2024-03-26T12:20:00.123Z"}
    """
    if not isinstance(row, dict):
        raise SnapshotRejected(RejectReason.BAD_TYPE, f"a {type(row).__name__}, not an object")
    coin_id, symbol, name = row.get("id"), row.get("symbol"), row.get("name")
    if not isinstance(coin_id, str) or not _COIN_ID.fullmatch(coin_id):
        raise SnapshotRejected(RejectReason.MISSING_FIELD, f"id {str(coin_id)[:60]!r} is not a "
                               "coin id")  # fmt: skip
    if not isinstance(symbol, str) or not _COIN_SYMBOL.fullmatch(symbol.upper()):
        raise SnapshotRejected(RejectReason.BAD_SYMBOL, f"symbol {str(symbol)[:60]!r}")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
        raise SnapshotRejected(RejectReason.BAD_TYPE, "name is not a short string")
    updated = row.get("last_updated")
    try:
        last_updated = rfc3339_to_us(updated) if isinstance(updated, str) else None
    except ValueError as error:
        raise SnapshotRejected(RejectReason.BAD_TIMESTAMP, str(error)) from error
    if last_updated is None:
        raise SnapshotRejected(RejectReason.MISSING_FIELD, "last_updated is missing")
    if not MIN_EVENT_TIME_US <= last_updated <= ingest_time + MAX_FUTURE_SKEW_US:
        raise SnapshotRejected(RejectReason.BAD_TIMESTAMP, f"last_updated {updated} is out of "
                               "range (before 2010, or ahead of the receive time)")  # fmt: skip
    price = _figure(row, "current_price", required=True)
    assert price is not None
    return MarketSnapshot(
        source=source, coin_id=coin_id, symbol=symbol.upper(), name=name or coin_id,
        price_usd=price, market_cap_usd=_figure(row, "market_cap", required=False),
        volume_24h_usd=_figure(row, "total_volume", required=False),
        change_24h_pct=_figure(row, "price_change_percentage_24h", required=False, signed=True),
        last_updated=last_updated, ingest_time=ingest_time,
    )  # fmt: skip
