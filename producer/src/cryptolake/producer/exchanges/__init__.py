"""Exchange adapters, one class per exchange (cryptofeed style), and the registry of them.

Each adapter knows one wire protocol; the simulator speaks all three, so the same adapter class
reads it too, with ``label="simulator"``.
"""

from __future__ import annotations

from cryptolake.producer.exchanges.base import ExchangeAdapter
from cryptolake.producer.exchanges.binance import BinanceAdapter
from cryptolake.producer.exchanges.coinbase import CoinbaseAdapter
from cryptolake.producer.exchanges.kraken import KrakenAdapter

__all__ = ["ADAPTERS", "BinanceAdapter", "CoinbaseAdapter", "KrakenAdapter", "adapter_class"]

ADAPTERS: dict[str, type[ExchangeAdapter]] = {
    "binance": BinanceAdapter,
    "kraken": KrakenAdapter,
    "coinbase": CoinbaseAdapter,
}


def adapter_class(name: str) -> type[ExchangeAdapter]:
    """The adapter for an exchange name; ValueError naming the choices for anything else."""
    try:
        return ADAPTERS[name]
    except KeyError:
        choices = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown exchange {name!r}: choose one of {choices}") from None
