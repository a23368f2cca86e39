"""The exchanges' own 1-minute klines, and how a Gold candle is held against one: pure.

Each adapter reads its exchange's kline answer into :class:`Kline` (``parse_klines``), with the
fields that exchange publishes and nothing else; :func:`check_bar` compares a Gold candle with
it field by field, exactly (decimals with ``==``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final, NoReturn

MINUTE_US: Final = 60_000_000
# Fields a kline may publish, in the candles' names (Binance publishes them all; Kraken all but
# quote volume and taker-buy volume; Coinbase only open, high, low, close and volume).
KLINE_FIELDS: Final = (
    "open", "high", "low", "close", "volume", "quote_volume", "trades", "buy_volume",
)  # fmt: skip


class KlineError(ValueError):
    """A kline answer that cannot be read (the message says what is wrong with it)."""


@dataclass(frozen=True, slots=True)
class Kline:
    """One exchange kline of the minute starting at ``minute_us``; None: not published."""

    minute_us: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal | None = None
    trades: int | None = None
    # The volume bought by takers (Binance's taker-buy base volume): the candles' buy volume.
    buy_volume: Decimal | None = None

    def published(self) -> dict[str, Decimal | int]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in KLINE_FIELDS and getattr(self, f.name) is not None
        }

    @property
    def empty(self) -> bool:
        """A minute without trades: exchanges fill it with the previous close and no volume."""
        return self.trades == 0 if self.trades is not None else self.volume == 0


class CheckStatus(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"  # fields differ
    MISSING_IN_GOLD = "missing_in_gold"  # the exchange traded in a minute Gold has no bar of
    MISSING_AT_EXCHANGE = "missing_at_exchange"  # a Gold bar of a minute the exchange did not


@dataclass(frozen=True, slots=True)
class BarCheck:
    """The outcome for one minute: its status, the fields that differ, both sides' values."""

    minute_us: int
    status: CheckStatus
    mismatched: tuple[str, ...]
    gold: dict[str, Any] | None
    exchange: dict[str, Any] | None


def check_bar(minute_us: int, gold: Mapping[str, Any] | None, kline: Kline | None) -> BarCheck:
    """A Gold candle (its columns; None: no bar) against the exchange's kline of the same minute
    (None or empty: no trades), on the fields the exchange publishes."""
    if kline is not None and kline.empty:
        kline = None
    theirs = kline.published() if kline is not None else None
    ours = None if gold is None else {name: gold[name] for name in (theirs or KLINE_FIELDS)}
    if ours is None and theirs is None:
        return BarCheck(minute_us, CheckStatus.MATCH, (), None, None)
    if ours is None:
        return BarCheck(minute_us, CheckStatus.MISSING_IN_GOLD, tuple(theirs or ()), None, theirs)
    if theirs is None:
        return BarCheck(minute_us, CheckStatus.MISSING_AT_EXCHANGE, tuple(ours), ours, None)
    mismatched = tuple(name for name, value in theirs.items() if ours[name] != value)
    status = CheckStatus.MISMATCH if mismatched else CheckStatus.MATCH
    return BarCheck(minute_us, status, mismatched, ours, theirs)


def load_json(body: bytes) -> Any:
    """An answer's JSON with every non-integer number as the Decimal of its digits (a binary
    float would change them); NaN and Infinity refused."""

    def refuse(name: str) -> NoReturn:
        raise KlineError(f"{name} is not a JSON number")

    try:
        return json.loads(body, parse_float=Decimal, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, KlineError):
            raise
        raise KlineError(f"the answer is not JSON: {exc}") from exc


def decimal_field(value: object, name: str, *, json_number: bool = False) -> Decimal:
    """A kline's decimal: a decimal string (Binance, Kraken), or with ``json_number`` a JSON number
    read as Decimal (Coinbase, with ``load_json``); finite and not negative."""
    kinds = (Decimal, int) if json_number else (str,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = "a JSON number" if json_number else "a decimal string"
        raise KlineError(f"{name} is {type(value).__name__}, not {expected}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise KlineError(f"{name} {value!r:.40} is not a decimal") from exc
    if not number.is_finite() or number < 0 or abs(number.adjusted()) > 30:
        raise KlineError(f"{name} {value!r:.40} is not a finite decimal ≥ 0")
    return number


def count_field(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value < 2**63:
        raise KlineError(f"{name} {value!r:.40} is not a count")
    return value


def minute_field(value: object, name: str, unit_us: int) -> int:
    """An epoch time in ``unit_us`` µs (1,000 for ms, 10^6 for s) on a minute boundary, in µs."""
    if type(value) is not int or not 0 <= value < 2**62 // unit_us:
        raise KlineError(f"{name} {value!r:.40} is not an epoch time")
    moment = value * unit_us
    if moment % MINUTE_US:
        raise KlineError(f"{name} {value} is not on a minute boundary")
    return moment


def closed_minutes(start_us: int, end_us: int) -> range:
    """The minute starts in [start, end), both floored to the minute."""
    first = start_us - start_us % MINUTE_US
    return range(first, end_us - end_us % MINUTE_US, MINUTE_US)
