"""OpenTelemetry from the OTEL_* environment: spans reach a real OTLP/HTTP receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from cryptolake.api.app import create_app
from cryptolake.api.observability import otlp_export_enabled


class OtlpReceiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[Any] = []
        self.resources: list[dict[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                self.server.resources.append(attrs)
                for scope in resource_spans.scope_spans:
                    self.server.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_request_spans_carry_symbol_and_interval(
    local_lake: Any, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    with TestClient(create_app(local_lake.settings)) as client:
        response = client.get("/v1/candles", params={"symbol": "ETH-USDT", "interval": "5m"})
        assert response.status_code == 200
    # Leaving the client ran the lifespan's shutdown, which flushes the span processor.
    names = {span.name for span in otlp_receiver.spans}
    assert "lake.render" in names
    server = next(s for s in otlp_receiver.spans if s.name == "GET /v1/candles")
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["cryptolake.symbol"].string_value == "ETH-USDT"
    assert attributes["cryptolake.interval"].string_value == "5m"
    assert otlp_receiver.resources[0]["service.name"] == "cryptolake-api"


def test_a_request_joins_the_callers_trace_and_probes_are_not_traced(
    local_lake: Any, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W3C trace context from the request's ``traceparent``; a cached hit is a span too, named
    by its route; /healthz and /metrics make none."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    with TestClient(create_app(local_lake.settings)) as client:
        for _ in range(2):  # a miss, then a hit of the response cache
            response = client.get("/v1/symbols", headers=traceparent)
            assert response.status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/nowhere").status_code == 404
    servers = [s for s in otlp_receiver.spans if s.kind == s.SPAN_KIND_SERVER]
    assert sorted(s.name for s in servers) == ["GET", "GET /v1/symbols", "GET /v1/symbols"]
    for span in [s for s in servers if s.name == "GET /v1/symbols"]:
        assert (span.trace_id.hex(), span.parent_span_id.hex()) == (trace_id, parent_id)
        attributes = {a.key: a.value for a in span.attributes}
        assert attributes["http.route"].string_value == "/v1/symbols"
        assert attributes["http.response.status_code"].int_value == 200
    (lost,) = [s for s in servers if s.name == "GET"]
    assert {a.key: a.value for a in lost.attributes}["http.response.status_code"].int_value == 404


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_export_only_when_an_endpoint_is_set(env: dict[str, str], expected: bool) -> None:
    assert otlp_export_enabled("TRACES", env) is expected
