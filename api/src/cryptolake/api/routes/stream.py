"""Server-Sent Events: 1-minute bar updates pushed as new Delta versions arrive."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

import orjson
import polars as pl
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from cryptolake.api import queries
from cryptolake.api.deps import ExchangeQuery, StoreDep, SymbolQuery
from cryptolake.api.errors import GUARD_RESPONSES, error_response
from cryptolake.api.routes.alerts import alert_records
from cryptolake.api.routes.market import resolve_exchange
from cryptolake.api.security import require_api_key

log = logging.getLogger(__name__)
QUEUE_SIZE = 256


@dataclass(eq=False)
class Subscription:
    exchange: str
    symbol: str
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))


class CandleHub:
    """Fans bar updates out to the open streams (all on the event loop's thread)."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, exchange: str, symbol: str) -> Subscription:
        subscription = Subscription(exchange, symbol)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, bars: pl.DataFrame) -> None:
        if bars.is_empty() or not self._subscriptions:
            return
        self._offer(queries.bar_events(bars))

    def publish_alerts(self, alerts: pl.DataFrame) -> None:
        """``event: alert`` to the streams of each new firing's market."""
        if alerts.is_empty() or not self._subscriptions:
            return
        events: dict[tuple[str, str], list[bytes]] = {}
        for record in reversed(alert_records(alerts)):  # oldest first
            market = (str(record["exchange"]), str(record["symbol"]))
            data = orjson.dumps(record)
            events.setdefault(market, []).append(b"event: alert\ndata: " + data + b"\n\n")
        self._offer(events)

    def _offer(self, events: dict[tuple[str, str], list[bytes]]) -> None:
        for subscription in self._subscriptions:
            for event in events.get((subscription.exchange, subscription.symbol), ()):
                if subscription.queue.full():
                    # A slow client loses its oldest update, never the newest.
                    subscription.queue.get_nowait()
                subscription.queue.put_nowait(event)


async def get_hub(request: Request) -> CandleHub:
    hub: CandleHub = request.app.state.hub
    return hub


router = APIRouter(
    prefix="/v1/stream",
    tags=["stream"],
    dependencies=[Depends(require_api_key)],
    responses=GUARD_RESPONSES,
)


@router.get(
    "/candles",
    summary="1-minute bar updates (event: candle) and alerts (event: alert) of one symbol as "
    "Server-Sent Events",
    response_class=StreamingResponse,
    responses={429: {"description": "Too many open streams (Retry-After)"}},
)
async def stream_candles(
    request: Request,
    store: StoreDep,
    hub: Annotated[CandleHub, Depends(get_hub)],
    symbol: SymbolQuery,
    exchange: ExchangeQuery = None,
) -> Response:
    venue = resolve_exchange(store, symbol, exchange)
    keepalive, limit = store.settings.sse_keepalive_s, store.settings.sse_max_clients
    metrics = request.app.state.metrics
    if len(hub) >= limit:
        message = f"{len(hub)} streams are open, the most this server keeps: retry later"
        return error_response(429, "too_many_streams", message, headers={"Retry-After": "10"})

    async def events() -> AsyncIterator[bytes]:
        subscription = hub.subscribe(venue, symbol)
        metrics.sse_clients += 1
        try:
            yield b"retry: 2000\n\n"
            latest = store.hot_bars(venue, symbol)
            if latest is not None and len(latest):
                for event in queries.bar_events(latest.tail(1)).values():
                    yield event[-1]
            while True:
                try:
                    yield await asyncio.wait_for(subscription.queue.get(), keepalive)
                except TimeoutError:
                    yield b": keepalive\n\n"
        finally:
            hub.unsubscribe(subscription)
            metrics.sse_clients -= 1

    # Started here, so the stream subscribes (and counts against the cap) before the next
    # request is read; a started generator is closed by asyncio even if never resumed.
    stream = events()
    first = await anext(stream)

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in stream:
            yield chunk

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
