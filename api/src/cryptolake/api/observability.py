"""Tracing and metrics: OpenTelemetry configured only by the standard ``OTEL_*`` variables,
and Prometheus metrics on ``/metrics``.

OTLP/HTTP export is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the per-signal
``…_TRACES_ENDPOINT`` / ``…_METRICS_ENDPOINT``) is set and the signal's ``OTEL_*_EXPORTER``
is not ``none``; otherwise spans are made (for the context) but exported nowhere.
``OTEL_SERVICE_NAME`` defaults to ``cryptolake-api``; ``OTEL_SDK_DISABLED=true`` turns it off.
Without an exporter, requests are not instrumented unless ``OTEL_TRACES_SAMPLER`` is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import (
    NoOpTracerProvider,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptolake.api.store import LakeStore

if TYPE_CHECKING:
    from cryptolake.api.httpcache import ResponseCache

SERVICE_NAME = "cryptolake-api"


def otlp_export_enabled(signal: str, env: Mapping[str, str]) -> bool:
    if env.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    # Whether requests are instrumented: only when spans or metrics go somewhere.
    active: bool = False

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            if isinstance(provider, SdkTracerProvider | SdkMeterProvider):
                provider.shutdown()


def build_telemetry(env: Mapping[str, str] | None = None) -> Telemetry:
    """Providers from the OTEL_* environment (the SDK's exporters read their own variables)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Telemetry(NoOpTracerProvider(), NoOpMeterProvider())
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES itself.
    defaults = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    resource = Resource.create(defaults)
    tracing = otlp_export_enabled("TRACES", env)
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    tracer_provider = SdkTracerProvider(resource=resource)
    if tracing:
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    metering = otlp_export_enabled("METRICS", env)
    meter_provider: MeterProvider = NoOpMeterProvider()
    if metering:
        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        meter_provider = SdkMeterProvider(resource=resource, metric_readers=[reader])
    # With no exporter the instrumentation would cost a third of the throughput for nothing
    # (BENCHMARKS.md); OTEL_TRACES_SAMPLER alone turns it on, e.g. to measure that cost.
    active = tracing or metering or bool(env.get("OTEL_TRACES_SAMPLER"))
    return Telemetry(tracer_provider, meter_provider, active)


# Not traced: probes and scrapes.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class _AsgiHeaders(Getter[list[tuple[bytes, bytes]]]):
    """W3C trace context (and baggage) read from an ASGI scope's raw headers."""

    def get(self, carrier: list[tuple[bytes, bytes]], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        found = [value.decode("latin-1") for header, value in carrier if header == name]
        return found or None

    def keys(self, carrier: list[tuple[bytes, bytes]]) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


_HEADERS = _AsgiHeaders()


class StatusSend:
    """An ASGI ``send`` that remembers the response's status (500 until one starts)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send, self.status = send, 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


def route_template(scope: Scope) -> str | None:
    """The matched route's template (set by the router, or by the response cache on a hit)."""
    return getattr(scope.get("route"), "path", None)


class TracingMiddleware:
    """One SERVER span per HTTP request, child of the caller's W3C trace context, named
    ``<METHOD> <route template>`` once the route is known (the response cache sets it for a
    hit, routing for a miss), with the stable HTTP semantic-convention attributes set once,
    and ``http.server.request.duration`` recorded for OTLP metrics. It replaces the contrib
    ASGI instrumentation, whose per-request work (a route scan for the name, URL redaction,
    attributes set twice, two histograms) cost about four cached requests (BENCHMARKS.md)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.tracer: Tracer = telemetry.tracer_provider.get_tracer("cryptolake.api")
        self.duration = telemetry.meter_provider.get_meter("cryptolake.api").create_histogram(
            "http.server.request.duration", unit="s", description="HTTP server request time."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        parent = propagate.extract(scope["headers"], getter=_HEADERS)
        span = self.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"],
                        "url.scheme": scope.get("scheme", "http")},
        )  # fmt: skip
        responded = StatusSend(send)
        try:
            with trace.use_span(span, end_on_exit=False):
                await self.app(scope, receive, responded)
        finally:
            route, status = route_template(scope), responded.status
            attributes = {"http.request.method": method, "http.response.status_code": status}
            if route is not None:
                attributes["http.route"] = route
                span.update_name(f"{method} {route}")
            if span.is_recording():
                span.set_attributes(attributes)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
            self.duration.record(time.perf_counter() - started, attributes)


def tag_request(**attributes: str | int) -> None:
    """Add ``cryptolake.<name>`` attributes (symbol, interval…) to the request's span."""
    span = trace.get_current_span()
    if span.is_recording():
        for name, value in attributes.items():
            span.set_attribute(f"cryptolake.{name}", value)


# --- Prometheus -----------------------------------------------------------------------------


class ApiMetrics:
    """The API's Prometheus registry: request counts and latencies, plus a collector that
    reads the store (cache hits, table versions, freshness, storage up) at scrape time."""

    def __init__(self, store: LakeStore, cache: ResponseCache) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "cryptolake_api_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cryptolake_api_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.sse_clients = 0
        self.registry.register(_StoreCollector(store, cache, self))


class _StoreCollector(Collector):
    def __init__(self, store: LakeStore, cache: ResponseCache, metrics: ApiMetrics) -> None:
        self.store, self.cache, self.metrics = store, cache, metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        store = self.store
        hits = CounterMetricFamily(
            "cryptolake_api_cache_hits", "Responses served from the rendered cache."
        )
        hits.add_metric([], self.cache.hits)
        misses = CounterMetricFamily(
            "cryptolake_api_cache_misses", "Responses rendered from the tables."
        )
        misses.add_metric([], self.cache.misses)
        up = GaugeMetricFamily(
            "cryptolake_api_storage_up", "1 when the last refresh reached every table."
        )
        up.add_metric([], 1.0 if store.error is None and store.last_refresh else 0.0)
        versions = GaugeMetricFamily(
            "cryptolake_api_table_version", "Delta version served, per table.", labels=["table"]
        )
        for table, version in store.versions.items():
            if version is not None:
                versions.add_metric([table], version)
        freshness = GaugeMetricFamily(
            "cryptolake_api_data_freshness_seconds",
            "Now minus the newest data served, per table (candles: updated_at; trades: event).",
            labels=["table"],
        )
        for table, newest in store.newest_data().items():
            freshness.add_metric([table], time.time() - newest.timestamp())
        clients = GaugeMetricFamily("cryptolake_api_sse_clients", "Open SSE streams.")
        clients.add_metric([], self.metrics.sse_clients)
        yield from (hits, misses, up, versions, freshness, clients)


class RequestMetricsMiddleware:
    """Counts and times every HTTP request by its route template (pure ASGI: no body copy)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        responded = StatusSend(send)
        try:
            await self.app(scope, receive, responded)
        finally:
            template = route_template(scope) or "unmatched"
            status = str(responded.status)
            self.metrics.requests.labels(template, scope["method"], status).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
