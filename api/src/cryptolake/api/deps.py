"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from opentelemetry.trace import Tracer

from cryptolake.api.store import LakeStore

SYMBOL_PATTERN = r"^[A-Za-z0-9]{1,20}-[A-Za-z0-9]{1,20}$"
EXCHANGE_PATTERN = r"^[a-z0-9_]{1,32}$"


async def get_store(request: Request) -> LakeStore:
    store: LakeStore = request.app.state.store
    return store


async def get_tracer(request: Request) -> Tracer:
    tracer: Tracer = request.app.state.tracer
    return tracer


StoreDep = Annotated[LakeStore, Depends(get_store)]
TracerDep = Annotated[Tracer, Depends(get_tracer)]
SymbolQuery = Annotated[
    str, Query(pattern=SYMBOL_PATTERN, description="Canonical BASE-QUOTE, e.g. BTC-USDT")
]
OptionalSymbolQuery = Annotated[
    str | None, Query(pattern=SYMBOL_PATTERN, description="Canonical BASE-QUOTE, e.g. BTC-USDT")
]
ExchangeQuery = Annotated[
    str | None,
    Query(
        pattern=EXCHANGE_PATTERN,
        description="binance, kraken, coinbase or simulator; default: the one with the newest data",
    ),
]
TimeQuery = Annotated[str | None, Query(description="ISO-8601 UTC or epoch milliseconds")]
