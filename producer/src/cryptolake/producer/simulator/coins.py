"""The simulator's CoinGecko: ``/coingecko/api/v3/coins/markets`` from a fixed table of coins
whose prices move every ``STEP_S`` seconds on a seeded walk, so ``make run`` and the tests get
market snapshots offline. Numbers are written as CoinGecko writes them: JSON numbers, not
strings (the producer must keep their digits exact)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

STEP_S: Final = 10
# id, symbol, name, price in USD at the walk's start, circulating supply.
COINS: Final = (
    ("bitcoin", "btc", "Bitcoin", "67187.33", "19700000"),
    ("ethereum", "eth", "Ethereum", "3504.12", "120100000"),
    ("tether", "usdt", "Tether", "1.0002", "110000000000"),
    ("binancecoin", "bnb", "BNB", "598.4", "153800000"),
    ("solana", "sol", "Solana", "182.77", "444000000"),
    ("usd-coin", "usdc", "USDC", "0.9998", "33000000000"),
    ("ripple", "xrp", "XRP", "0.6231", "55100000000"),
    ("dogecoin", "doge", "Dogecoin", "0.16123", "144000000000"),
    ("cardano", "ada", "Cardano", "0.4512", "35200000000"),
    ("tron", "trx", "TRON", "0.1207", "87300000000"),
    ("pepe", "pepe", "Pepe", "0.00000812", "420690000000000"),
)


def _significant(value: Decimal, digits: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(value.adjusted() - digits + 1))


def coins_markets(now_s: float, seed: int, ids: Sequence[str] | None, per_page: int,
                  page: int) -> list[dict[str, Any]]:  # fmt: skip
    """The rows CoinGecko would answer at ``now_s``: by market cap, highest first."""
    step = int(now_s // STEP_S)
    updated = datetime.fromtimestamp(step * STEP_S, UTC)
    rows: list[tuple[Decimal, dict[str, Any]]] = []
    for index, (coin_id, symbol, name, start, supply) in enumerate(COINS):
        if ids and coin_id not in ids:
            continue
        walk = random.Random(f"{seed}:{index}:{step}")
        change = Decimal(walk.randint(-500_000, 500_000)).scaleb(-5)  # ±5 %, 5 decimals
        price = _significant(Decimal(start) * (1 + change / 100), 8)
        market_cap = (price * Decimal(supply)).to_integral_value()
        rows.append((market_cap, {
            "id": coin_id, "symbol": symbol, "name": name, "current_price": price,
            "market_cap": market_cap, "total_volume": (market_cap * Decimal("0.031"))
            .to_integral_value(), "price_change_percentage_24h": change,
            "last_updated": updated.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }))  # fmt: skip
    rows.sort(key=lambda row: row[0], reverse=True)
    return [row for _, row in rows][(page - 1) * per_page : page * per_page]


def encode(rows: list[dict[str, Any]]) -> bytes:
    """JSON with Decimals as plain JSON numbers, their digits as they are."""

    def value(item: Any) -> str:
        return f"{item:f}" if isinstance(item, Decimal) else json.dumps(item)

    objects = ("{" + ",".join(f"{json.dumps(k)}:{value(v)}" for k, v in row.items()) + "}"
               for row in rows)  # fmt: skip
    return ("[" + ",".join(objects) + "]").encode()
