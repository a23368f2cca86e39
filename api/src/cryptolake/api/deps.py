"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from opentelemetry.trace import Tracer

from cryptolake.api.params import SYMBOL_FORM, parse_exchange, parse_symbol
from cryptolake.api.store import LakeStore
from cryptolake.common.trade import EXCHANGES

# Longer values are refused before parsing (a canonical symbol has at most 41 characters).
_MAX_LENGTH = 64
_SYMBOL = Query(max_length=_MAX_LENGTH, description=SYMBOL_FORM)
_EXCHANGE = Query(
    max_length=_MAX_LENGTH,
    description=f"{', '.join(EXCHANGES)}; default: the one with the newest data for the symbol",
)


async def get_store(request: Request) -> LakeStore:
    store: LakeStore = request.app.state.store
    return store


async def get_tracer(request: Request) -> Tracer:
    tracer: Tracer = request.app.state.tracer
    return tracer


async def symbol_query(symbol: Annotated[str, _SYMBOL]) -> str:
    return parse_symbol(symbol)


async def optional_symbol_query(symbol: Annotated[str | None, _SYMBOL] = None) -> str | None:
    return None if symbol is None else parse_symbol(symbol)


async def exchange_query(exchange: Annotated[str | None, _EXCHANGE] = None) -> str | None:
    return None if exchange is None else parse_exchange(exchange)


StoreDep = Annotated[LakeStore, Depends(get_store)]
TracerDep = Annotated[Tracer, Depends(get_tracer)]
# The canonical symbol and exchange: the routes see nothing else.
SymbolQuery = Annotated[str, Depends(symbol_query)]
OptionalSymbolQuery = Annotated[str | None, Depends(optional_symbol_query)]
ExchangeQuery = Annotated[str | None, Depends(exchange_query)]
TimeQuery = Annotated[str | None, Query(description="ISO-8601 UTC or epoch milliseconds")]
