"""Prometheus metrics and the ``/metrics`` + ``/healthz`` endpoint of the producer.

Metric names are a contract: Grafana's pipeline-health dashboard queries them.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)


class ProducerMetrics:
    """One registry per producer (tests create several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["exchange", "protocol"]
        self.frames = Counter(
            "cryptolake_producer_frames_received",
            "WebSocket frames received",
            [*labels, "kind"],
            registry=self.registry,
        )
        self.received = Counter(
            "cryptolake_producer_trades_received",
            "Trades normalized from frames or dump rows",
            labels,
            registry=self.registry,
        )
        self.produced = Counter(
            "cryptolake_producer_trades_produced",
            "Trades acknowledged by the broker",
            ["exchange"],
            registry=self.registry,
        )
        self.delivery_errors = Counter(
            "cryptolake_producer_delivery_errors",
            "Messages the broker did not acknowledge",
            ["topic"],
            registry=self.registry,
        )
        self.dlq = Counter(
            "cryptolake_producer_dlq",
            "Frames or rows sent to the DLQ",
            [*labels, "reason"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "cryptolake_producer_reconnects", "WebSocket reconnects", labels, registry=self.registry
        )
        self.gaps = Counter(
            "cryptolake_producer_gaps",
            "Reconnects or sequence jumps after which trades may be missing",
            labels,
            registry=self.registry,
        )
        self.gap_trades = Counter(
            "cryptolake_producer_gap_trades",
            "Trades missing (still, after a grace period) from jumps in sequential trade ids",
            labels,
            registry=self.registry,
        )
        self.recovered_trades = Counter(
            "cryptolake_producer_recovered_trades",
            "Missing trades fetched from the exchange's REST history and published",
            labels,
            registry=self.registry,
        )
        self.unrecoverable_gaps = Counter(
            "cryptolake_producer_unrecoverable_gaps",
            "Gaps the REST history could not close (too old, or REST down): recorded in logs",
            labels,
            registry=self.registry,
        )
        self.kline_checks = Counter(
            "cryptolake_producer_kline_checks",
            "Gold 1-minute candles compared with the exchange's published kline, by outcome "
            "(match, mismatch, missing_in_gold, missing_at_exchange)",
            [*labels, "status"],
            registry=self.registry,
        )
        self.market_snapshots = Counter(
            "cryptolake_producer_market_snapshots",
            "Coin market snapshots published to crypto.markets.v1 (CoinGecko or the simulator)",
            ["source"],
            registry=self.registry,
        )
        self.market_polls = Counter(
            "cryptolake_producer_market_polls",
            "Polls of the coin markets endpoint, by outcome (ok, failed)",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.kline_mismatches = Counter(
            "cryptolake_producer_kline_mismatches",
            "Fields of Gold candles that differ from the exchange's kline (gold/kline_checks)",
            [*labels, "field"],
            registry=self.registry,
        )
        self.open_gap_trades = Gauge(
            "cryptolake_producer_open_gap_trades",
            "Trades known missing and not yet recovered",
            labels,
            registry=self.registry,
        )
        self.gap_close = Histogram(
            "cryptolake_producer_gap_close_seconds",
            "Time from a gap's detection to its last missing trade published",
            labels,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
            registry=self.registry,
        )
        self.connected = Gauge(
            "cryptolake_producer_connected",
            "1 while the exchange WebSocket is open",
            labels,
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "cryptolake_producer_delivery_latency_seconds",
            "Time from produce() to the broker's acknowledgement",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.started = time.time()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A probe or scraper that gave up (timeout) before the answer: nothing to report.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` on a daemon thread."""

    def __init__(self, metrics: ProducerMetrics, port: int, host: str = "0.0.0.0") -> None:
        self.metrics = metrics
        handler = self._handler_class()
        self.httpd = _QuietServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        metrics = self.metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path.split("?")[0] == "/healthz":
                    body = {"status": "ok", "uptime_s": round(time.time() - metrics.started, 1)}
                    self._send(200, json.dumps(body).encode(), "application/json")
                else:
                    self._send(
                        404, b'{"error":"not found: try /metrics or /healthz"}', "application/json"
                    )

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics http: " + format, *args)

        return Handler

    def start(self) -> MetricsServer:
        self.thread.start()
        log.info("metrics on http://127.0.0.1:%d/metrics (health: /healthz)", self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
