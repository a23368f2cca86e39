"""Builds the API: settings → store → routes, telemetry, the dashboard, the refresh loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from cryptolake.api.errors import error_response, install_error_handlers
from cryptolake.api.guard import RateLimit, Timeout
from cryptolake.api.httpcache import CachedResponses, ResponseCache
from cryptolake.api.observability import (
    ApiMetrics,
    RequestMetricsMiddleware,
    TracingMiddleware,
    build_telemetry,
)
from cryptolake.api.routes import alerts, health, market, stream
from cryptolake.api.settings import ApiSettings
from cryptolake.api.store import LakeStore
from cryptolake.common.s3 import trust_ca_file

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
CHART_DIST = Path("lightweight-charts") / "dist"


async def refresh_forever(store: LakeStore, hub: stream.CandleHub, interval_s: float) -> None:
    """Follow the tables' logs; push updated bars to the SSE streams. Errors are recorded by
    ``store.refresh`` (storage down → 503s), and the loop keeps polling until it recovers."""
    while True:
        result = await asyncio.to_thread(store.refresh)
        if result.updated_bars is not None:
            hub.publish(result.updated_bars)
        if result.new_alerts is not None:
            hub.publish_alerts(result.new_alerts)
        await asyncio.sleep(interval_s)


def _report_stop(refresher: asyncio.Task[None]) -> None:
    """A refresher that dies (a bug: refresh() records storage errors itself) is logged; /readyz
    turns 503 with the same reason."""
    if not refresher.cancelled() and refresher.exception() is not None:
        log.error("the table refresher stopped: %r; /readyz now fails", refresher.exception())


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    if settings.s3_ca_file is not None:
        trust_ca_file(settings.s3_ca_file)  # before delta-rs opens a table
    store = LakeStore(settings)
    hub = stream.CandleHub()
    telemetry = build_telemetry()
    cache = ResponseCache(settings.response_cache_mib * 1024 * 1024)
    metrics = ApiMetrics(store, cache)
    api_keys = settings.all_api_keys()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(store.refresh)
        refresher = app.state.refresher = asyncio.create_task(
            refresh_forever(store, hub, settings.refresh_interval_s), name="lake-refresh"
        )
        refresher.add_done_callback(_report_stop)
        log.info("serving %s (tables: %s)", settings.table_root, store.versions)
        yield
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        telemetry.shutdown()

    app = FastAPI(
        title="CryptoLake API",
        version=metadata.version("cryptolake-api"),
        description="Candles, indicators, period stats and trades from the CryptoLake Delta "
        "tables. Timestamps: ISO-8601 UTC (`time`) and epoch ms (`time_ms`).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.hub = hub
    app.state.metrics = metrics
    app.state.api_keys = api_keys
    app.state.tracer = telemetry.tracer_provider.get_tracer("cryptolake.api")
    install_error_handlers(app)

    app.include_router(market.router)
    app.include_router(alerts.router)
    app.include_router(stream.router)
    app.include_router(health.router)
    _mount_dashboard(app, settings)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key", "Authorization"],
        )
    # Outermost last: metrics → rate limit → response cache → timeout → CORS → routes
    # (tracing wraps them all).
    app.add_middleware(Timeout, timeout_s=settings.request_timeout_s)
    app.add_middleware(CachedResponses, store=store, cache=cache, api_keys=lambda: api_keys)
    app.add_middleware(RateLimit, rate_limit=settings.rate_limit, api_keys=lambda: api_keys)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    if telemetry.active:  # outermost: the span covers every layer below
        app.add_middleware(TracingMiddleware, telemetry=telemetry)
    return app


def _mount_dashboard(app: FastAPI, settings: ApiSettings) -> None:
    vendor = settings.vendor_dir / CHART_DIST
    if vendor.is_dir():
        app.mount("/static/vendor", StaticFiles(directory=vendor), name="vendor")
    else:
        log.warning("%s is missing: the dashboard has no chart library (run `make setup`)", vendor)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return error_response(404, "not_found", "the dashboard is not installed")
        return FileResponse(index, media_type="text/html")


def app_from_env() -> FastAPI:
    """uvicorn factory (``cryptolake.api.app:app_from_env``): settings from the environment."""
    return create_app(ApiSettings())
