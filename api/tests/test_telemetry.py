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
