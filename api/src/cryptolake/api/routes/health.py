"""Probes and metrics: /healthz (the process), /readyz (the tables), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cryptolake.api.deps import StoreDep
from cryptolake.api.errors import error_response
from cryptolake.api.security import require_api_key
from cryptolake.common.tables import GOLD_CANDLES_1M

router = APIRouter(tags=["health"], dependencies=[Depends(require_api_key)])


@router.get("/healthz", summary="The process is up")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz", summary="The tables are reachable (503 with the reason otherwise)")
async def readyz(request: Request, store: StoreDep) -> Response:
    refresher: asyncio.Task[None] | None = getattr(request.app.state, "refresher", None)
    if refresher is not None and refresher.done():
        error = None if refresher.cancelled() else refresher.exception()
        message = f"the table refresher stopped: {error!r}" if error else "it was cancelled"
        return error_response(503, "refresher_stopped", message)
    if store.error is not None:
        return error_response(503, "storage_unavailable", store.error)
    if store.last_refresh is None:
        return error_response(503, "starting", "the tables have not been read yet")
    if store.versions[GOLD_CANDLES_1M] is None:
        uri = store.readers[GOLD_CANDLES_1M].uri
        message = f"{GOLD_CANDLES_1M} does not exist yet at {uri} (are the jobs running?)"
        return error_response(503, "table_missing", message)
    age = time.time() - store.last_refresh
    if age > store.settings.refresh_stale_s:
        message = f"the tables were last read {age:.0f} s ago (CRYPTOLAKE_REFRESH_STALE_S)"
        return error_response(503, "refresh_stale", message)
    body = {
        "status": "ready",
        "versions": store.versions,
        "last_refresh": datetime.fromtimestamp(store.last_refresh, UTC).isoformat(),
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
