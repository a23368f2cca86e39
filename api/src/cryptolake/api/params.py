"""Query parameters shared by the routes, parsed and bounded (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptolake.api.errors import bad_parameter
from cryptolake.common.symbols import canonical_symbol
from cryptolake.common.trade import EXCHANGES, is_canonical_symbol

# Before this, no crypto exchange traded; after it, a typo.
_EARLIEST = datetime(2009, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
SYMBOL_FORM = "BASE-QUOTE, each 1-20 ASCII letters or digits (BTC-USDT; btc/usdt and BTCUSDT too)"


def _printable_ascii(parameter: str, text: str) -> str:
    # Checked before any case mapping: str.upper() and .lower() turn some non-ASCII letters into
    # ASCII ones (U+017F long s → 'S', U+00DF sharp s → 'SS', U+212A Kelvin sign → 'k'), so a
    # look-alike would pass as another name.
    if not (text.isascii() and text.isprintable()):
        raise bad_parameter(parameter, f"{text[:50]!a} has characters other than printable ASCII")
    return text


def parse_symbol(text: str) -> str:
    """A symbol in its canonical form (``btc/usdt``, ``BTC_USDT``, ``BTCUSDT`` → ``BTC-USDT``;
    Kraken's ``XBT`` → ``BTC``), or 422 when the normalized form does not match the contract's
    SYMBOL_PATTERN: no such symbol can be in the lake, so nothing is read for it."""
    try:
        symbol = canonical_symbol(_printable_ascii("symbol", text))
    except ValueError:
        symbol = None
    if symbol is None or not is_canonical_symbol(symbol):
        raise bad_parameter("symbol", f"{text[:50]!a} is not {SYMBOL_FORM}")
    return symbol


def parse_exchange(text: str) -> str:
    """One of EXCHANGES (any case), or 422."""
    exchange = _printable_ascii("exchange", text).strip().lower()
    if exchange not in EXCHANGES:
        raise bad_parameter("exchange", f"{text[:50]!a} is not one of {', '.join(EXCHANGES)}")
    return exchange


def parse_time(parameter: str, text: str | None) -> datetime | None:
    """ISO-8601 (``2026-11-24T10:00:00Z``; no offset means UTC) or epoch milliseconds."""
    if text is None or text == "":
        return None
    value: datetime
    if text.lstrip("-").isdigit():
        try:
            value = datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError) as error:
            raise bad_parameter(parameter, f"{text!r} is out of range as epoch ms") from error
    else:
        try:
            value = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError as error:
            raise bad_parameter(
                parameter, f"{text!r} is neither ISO-8601 (2026-11-24T10:00:00Z) nor epoch ms"
            ) from error
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
    if not _EARLIEST <= value < _LATEST:
        raise bad_parameter(parameter, f"{text!r} is outside 2009-01-01 … 2100-01-01")
    return value.astimezone(UTC)


def parse_range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    start_at, end_at = parse_time("start", start), parse_time("end", end)
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise bad_parameter("end", "must be after start")
    return start_at, end_at
