"""Exchange adapters, one class per exchange (cryptofeed style), and the registry of them.

Each adapter knows one wire protocol; the simulator speaks them all, so the same adapter class
reads it too, with ``label="simulator"``. An exchange's perpetual contracts (``-PERP``
symbols) stream from their own host and protocol: ``markets`` splits a symbol list by adapter.
"""

from __future__ import annotations

from cryptolake.common.symbols import is_perpetual
from cryptolake.producer.exchanges.base import ExchangeAdapter
from cryptolake.producer.exchanges.binance import BinanceAdapter
from cryptolake.producer.exchanges.binance_futures import BinanceFuturesAdapter
from cryptolake.producer.exchanges.coinbase import CoinbaseAdapter
from cryptolake.producer.exchanges.kraken import KrakenAdapter

__all__ = [
    "ADAPTERS",
    "BinanceAdapter",
    "BinanceFuturesAdapter",
    "CoinbaseAdapter",
    "KrakenAdapter",
    "adapter_class",
    "markets",
]

# By protocol name (the simulator's paths, CRYPTOLAKE_SIMULATOR_PROTOCOL, metrics' `protocol`).
ADAPTERS: dict[str, type[ExchangeAdapter]] = {
    "binance": BinanceAdapter,
    "binance-futures": BinanceFuturesAdapter,
    "kraken": KrakenAdapter,
    "coinbase": CoinbaseAdapter,
}
# Where each exchange's perpetual contracts stream from.
PERPETUALS: dict[str, type[ExchangeAdapter]] = {"binance": BinanceFuturesAdapter}


def markets(exchange: str, symbols: list[str]) -> list[tuple[type[ExchangeAdapter], list[str]]]:
    """The adapters one exchange's symbols need, each with its symbols: spot markets on the
    exchange's own, perpetual contracts on its futures protocol. ValueError for contracts of
    an exchange without one."""
    spot = [symbol for symbol in symbols if not is_perpetual(symbol)]
    contracts = [symbol for symbol in symbols if is_perpetual(symbol)]
    if contracts and exchange not in PERPETUALS:
        raise ValueError(
            f"{', '.join(contracts)}: perpetual contracts stream from "
            f"{', '.join(PERPETUALS)} only (USD-M futures), not {exchange}"
        )
    split = [(adapter_class(exchange), spot)] if spot else []
    if contracts:
        split.append((PERPETUALS[exchange], contracts))
    return split


def adapter_class(name: str) -> type[ExchangeAdapter]:
    """The adapter for an exchange name; ValueError naming the choices for anything else."""
    try:
        return ADAPTERS[name]
    except KeyError:
        choices = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown exchange {name!r}: choose one of {choices}") from None
