"""Canonical symbols and the exchanges' own spellings of them: ``BASE-QUOTE`` for spot markets,
``BASE-QUOTE-PERP`` for perpetual futures (Binance USD-M), so the two never share a name."""

from __future__ import annotations

from typing import Final

# Quote assets tried longest first when an exchange glues base and quote together (BTCUSDT).
# TUSD/BUSD are left out on purpose: they would split XBTUSD as XB-TUSD.
KNOWN_QUOTES: Final = (
    "FDUSD",
    "USDT",
    "USDC",
    "USD",
    "EUR",
    "GBP",
    "TRY",
    "BRL",
    "JPY",
    "AUD",
    "BTC",
    "ETH",
    "BNB",
)
# Ends the canonical symbol of a perpetual futures contract (BTC-USDT-PERP).
PERP_SUFFIX: Final = "-PERP"
# Kraken's legacy asset codes.
_ASSET_ALIASES: Final = {"XBT": "BTC", "XDG": "DOGE"}


def canonical_asset(asset: str) -> str:
    upper = asset.upper()
    return _ASSET_ALIASES.get(upper, upper)


def join_symbol(base: str, quote: str) -> str:
    return f"{canonical_asset(base)}-{canonical_asset(quote)}"


def split_concatenated(pair: str) -> str | None:
    """``BTCUSDT`` → ``BTC-USDT`` using the known quote assets; None when no quote matches."""
    upper = pair.upper()
    for quote in sorted(KNOWN_QUOTES, key=len, reverse=True):
        if upper.endswith(quote) and len(upper) > len(quote):
            return join_symbol(upper[: -len(quote)], quote)
    return None


def parse_canonical(symbol: str) -> tuple[str, str]:
    """Split a user-supplied symbol (``BTC-USDT``, ``btc/usdt``, ``BTCUSDT``) into base, quote.

    Raises ValueError with a message that says what form is expected.
    """
    text = symbol.strip().upper().replace("/", "-").replace("_", "-")
    if "-" in text:
        base, _, quote = text.partition("-")
    else:
        joined = split_concatenated(text)
        if joined is None:
            raise ValueError(f"symbol {symbol!r}: write it as BASE-QUOTE, e.g. BTC-USDT")
        base, _, quote = joined.partition("-")
    if not (base.isalnum() and quote.isalnum()):
        raise ValueError(f"symbol {symbol!r}: write it as BASE-QUOTE, e.g. BTC-USDT")
    return canonical_asset(base), canonical_asset(quote)


def is_perpetual(symbol: str) -> bool:
    """A canonical symbol of a perpetual futures contract (``BTC-USDT-PERP``)."""
    return symbol.endswith(PERP_SUFFIX)


def perpetual(symbol: str) -> str:
    """The perpetual contract of a canonical market: ``BTC-USDT`` → ``BTC-USDT-PERP``."""
    return symbol if is_perpetual(symbol) else symbol + PERP_SUFFIX


def spot(symbol: str) -> str:
    """The spot market of a canonical symbol: ``BTC-USDT-PERP`` → ``BTC-USDT``."""
    return symbol.removesuffix(PERP_SUFFIX)


def canonical_symbol(symbol: str) -> str:
    """``btc/usdt`` → ``BTC-USDT``; ``btcusdt-perp`` → ``BTC-USDT-PERP``. Raises ValueError
    with a message that says what form is expected."""
    text = symbol.strip()
    suffix = ""
    if text.upper().endswith(PERP_SUFFIX):
        text, suffix = text[: -len(PERP_SUFFIX)], PERP_SUFFIX
    base, quote = parse_canonical(text)
    return f"{base}-{quote}{suffix}"
