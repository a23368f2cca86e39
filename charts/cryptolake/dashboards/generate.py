"""Writes the chart's Grafana dashboards (markets.json, pipeline-health.json) next to this file.

Run after editing: `.venv/bin/python charts/cryptolake/dashboards/generate.py`. A test checks
that the committed JSON equals what this script writes, that every panel's datasource is one the
chart provisions, and that every metric a query names is one a component exports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
# The datasource UIDs templates/datasources.yaml provisions.
PROMETHEUS = {"type": "prometheus", "uid": "cryptolake-prometheus"}
API = {"type": "yesoreyeram-infinity-datasource", "uid": "cryptolake-api"}


class Layout:
    """Grafana's 24-column grid, filled left to right, top to bottom."""

    def __init__(self) -> None:
        self.x = self.y = self.row_height = 0
        self.next_id = 1

    def place(self, width: int, height: int) -> dict[str, int]:
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        position = {"x": self.x, "y": self.y, "w": width, "h": height}
        self.x += width
        self.row_height = max(self.row_height, height)
        return position

    def panel(self, width: int, height: int, **fields: Any) -> dict[str, Any]:
        panel = {"id": self.next_id, "gridPos": self.place(width, height), **fields}
        self.next_id += 1
        return panel


def api_target(ref: str, path: str, root: str, columns: list[tuple[str, str, str]]) -> dict:
    """An Infinity JSON query of the API (the datasource's URL is the API's base URL)."""
    return {
        "refId": ref,
        "datasource": API,
        "type": "json",
        "source": "url",
        "parser": "backend",
        "format": "table",
        "url": path,
        "url_options": {"method": "GET"},
        "root_selector": root,
        "columns": [
            {"selector": selector, "text": text, "type": kind} for selector, text, kind in columns
        ],
    }


def prom(ref: str, expr: str, legend: str) -> dict:
    return {"refId": ref, "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict], **extra: Any):
    return {
        "uid": uid,
        "title": title,
        "tags": ["cryptolake"],
        "schemaVersion": 41,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "10s",
        "timezone": "utc",
        "templating": {"list": variables},
        "panels": panels,
        **extra,
    }


BAR_COLUMNS = [
    ("time_ms", "time", "timestamp_epoch"),
    ("open", "open", "number"),
    ("high", "high", "number"),
    ("low", "low", "number"),
    ("close", "close", "number"),
    ("volume", "volume", "number"),
    ("vwap", "vwap", "number"),
]


def markets() -> dict:
    layout = Layout()
    symbol = "symbol=${symbol}"
    panels = [
        layout.panel(
            24,
            4,
            type="stat",
            title="KPIs (1 h and 24 h % change, 24 h volume)",
            datasource=API,
            targets=[
                api_target(
                    "A",
                    "/v1/kpis",
                    "kpis",
                    [
                        ("symbol", "symbol", "string"),
                        ("last_price", "last price", "number"),
                        ("change_1h_pct", "1 h %", "number"),
                        ("change_24h_pct", "24 h %", "number"),
                        ("volume_24h", "24 h volume", "number"),
                    ],
                )
            ],
            options={
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/.*/"},
                "textMode": "value_and_name",
                "colorMode": "value",
            },
        ),
        layout.panel(
            16,
            12,
            type="candlestick",
            title="${symbol} candles (${interval})",
            datasource=API,
            targets=[
                api_target(
                    "A",
                    f"/v1/candles?{symbol}&interval=${{interval}}&limit=500",
                    "bars",
                    BAR_COLUMNS,
                )
            ],
            options={
                "mode": "candles+volume",
                "candleStyle": "candles",
                "colorStrategy": "open-close",
                "includeAllFields": True,
            },
        ),
        layout.panel(
            8,
            12,
            type="table",
            title="Latest trades",
            datasource=API,
            targets=[
                api_target(
                    "A",
                    f"/v1/trades/latest?{symbol}&limit=50",
                    "trades",
                    [
                        ("time", "time", "string"),
                        ("side", "side", "string"),
                        ("price", "price", "number"),
                        ("qty", "qty", "number"),
                        ("trade_id", "trade id", "string"),
                    ],
                )
            ],
        ),
        layout.panel(
            16,
            9,
            type="timeseries",
            title="Price vs 5-minute moving average and VWAP",
            datasource=API,
            targets=[
                api_target(
                    "A",
                    f"/v1/candles?{symbol}&interval=1m&limit=500",
                    "bars",
                    [
                        ("time_ms", "time", "timestamp_epoch"),
                        ("close", "close", "number"),
                        ("vwap", "vwap (bar)", "number"),
                    ],
                ),
                api_target(
                    "B",
                    f"/v1/indicators/sma?{symbol}&limit=500",
                    "points",
                    [("time_ms", "time", "timestamp_epoch"), ("sma", "sma 5m", "number")],
                ),
            ],
        ),
        layout.panel(
            8,
            9,
            type="table",
            title="Hourly stats",
            datasource=API,
            targets=[
                api_target(
                    "A",
                    f"/v1/stats/hourly?{symbol}&limit=24",
                    "stats",
                    [
                        ("period_start", "hour", "string"),
                        ("open", "open", "number"),
                        ("close", "close", "number"),
                        ("change_pct", "% change", "number"),
                        ("volume", "volume", "number"),
                        ("vwap", "vwap", "number"),
                    ],
                )
            ],
        ),
    ]
    variables = [
        {
            "name": "symbol",
            "label": "Symbol",
            "type": "query",
            "datasource": API,
            "query": {
                "refId": "symbols",
                "type": "json",
                "source": "url",
                "parser": "backend",
                "url": "/v1/symbols",
                "root_selector": "symbols",
                "columns": [{"selector": "symbol", "text": "symbol", "type": "string"}],
            },
            "refresh": 1,
            "current": {"text": "BTC-USDT", "value": "BTC-USDT"},
        },
        {
            "name": "interval",
            "label": "Interval",
            "type": "custom",
            "query": "1m,5m,15m,1h,4h,1d",
            "current": {"text": "1m", "value": "1m"},
        },
    ]
    # The alerts that fired for the symbol, as annotations on every time-series panel.
    alerts = api_target(
        "alerts",
        "/v1/alerts?symbol=${symbol}&start=${__from}&end=${__to}&limit=1000",
        "alerts",
        [
            ("window_end_ms", "time", "timestamp_epoch"),
            ("rule", "title", "string"),
            ("kind", "tags", "string"),
            ("value", "text", "string"),
        ],
    )
    annotations = {
        "list": [
            {
                "name": "Alerts",
                "enable": True,
                "iconColor": "orange",
                "datasource": API,
                "target": alerts,
            }
        ]
    }
    return dashboard(
        "cryptolake-markets", "CryptoLake / Markets", panels, variables, annotations=annotations
    )


def pipeline_health() -> dict:
    layout = Layout()

    def series(title: str, unit: str, *targets: dict, width: int = 8) -> dict:
        return layout.panel(
            width,
            8,
            type="timeseries",
            title=title,
            datasource=PROMETHEUS,
            targets=list(targets),
            fieldConfig={"defaults": {"unit": unit}, "overrides": []},
        )

    panels = [
        series(
            "Producer: trades produced / s",
            "ops",
            prom(
                "A",
                "sum by (exchange) (rate(cryptolake_producer_trades_produced_total[1m]))",
                "{{exchange}}",
            ),
            prom(
                "B",
                "sum by (exchange) (rate(cryptolake_producer_trades_received_total[1m]))",
                "{{exchange}} received",
            ),
        ),
        series(
            "Producer: DLQ and reconnects (15 min)",
            "short",
            prom(
                "A",
                "sum by (exchange, reason) (increase(cryptolake_producer_dlq_total[15m]))",
                "DLQ {{exchange}} {{reason}}",
            ),
            prom(
                "B",
                "sum by (exchange) (increase(cryptolake_producer_reconnects_total[15m]))",
                "reconnects {{exchange}}",
            ),
            prom(
                "C",
                "sum by (exchange) (increase(cryptolake_producer_gap_trades_total[15m]))",
                "missing trades {{exchange}}",
            ),
            prom(
                "D",
                "sum by (exchange) (increase(cryptolake_producer_recovered_trades_total[15m]))",
                "recovered trades {{exchange}}",
            ),
            prom(
                "E",
                "sum by (exchange) (increase(cryptolake_producer_unrecoverable_gaps_total[15m]))",
                "unrecoverable gaps {{exchange}}",
            ),
        ),
        series(
            "Gold vs the exchanges' klines (minutes checked, 1 h)",
            "short",
            prom(
                "A",
                "sum by (exchange, status) (increase(cryptolake_producer_kline_checks_total[1h]))",
                "{{exchange}} {{status}}",
            ),
            prom(
                "B",
                "sum by (exchange, field) "
                "(increase(cryptolake_producer_kline_mismatches_total[1h]))",
                "{{exchange}} differs: {{field}}",
            ),
        ),
        series(
            "Kafka lag (records behind, per query)",
            "short",
            prom("A", "max by (query) (cryptolake_jobs_kafka_offsets_behind)", "{{query}}"),
        ),
        series(
            "Spark batch duration p95",
            "s",
            prom(
                "A",
                "histogram_quantile(0.95, sum by (le, query) "
                "(rate(cryptolake_jobs_batch_duration_seconds_bucket[5m])))",
                "{{query}}",
            ),
        ),
        series(
            "Rows per layer / s",
            "rowsps",
            prom("A", "sum by (query) (rate(cryptolake_jobs_input_rows_total[1m]))", "{{query}}"),
        ),
        series(
            "Quarantine (15 min, by reason)",
            "short",
            prom(
                "A",
                "sum by (rule) (increase(cryptolake_jobs_silver_rule_rows_total"
                '{rule!="valid"}[15m]))',
                "{{rule}}",
            ),
            prom("B", "sum(increase(cryptolake_jobs_gold_late_rows_total[15m]))", "late (gold)"),
        ),
        series(
            "Data freshness",
            "s",
            prom("A", "max by (table) (cryptolake_api_data_freshness_seconds)", "{{table}} (API)"),
            prom(
                "B",
                "time() - max by (query) (cryptolake_jobs_last_batch_timestamp_seconds)",
                "{{query}} since last batch",
            ),
        ),
        series(
            "API latency",
            "s",
            prom(
                "A",
                "histogram_quantile(0.5, sum by (le) "
                "(rate(cryptolake_api_request_duration_seconds_bucket[5m])))",
                "p50",
            ),
            prom(
                "B",
                "histogram_quantile(0.99, sum by (le) "
                "(rate(cryptolake_api_request_duration_seconds_bucket[5m])))",
                "p99",
            ),
            prom("C", 'sum(rate(cryptolake_api_requests_total{status=~"5.."}[5m]))', "5xx / s"),
        ),
        series(
            "Operator reconciles / s",
            "ops",
            prom(
                "A",
                "sum by (handler) (rate(cryptolake_operator_reconciles_total[5m]))",
                "{{handler}}",
            ),
            prom(
                "B",
                "sum by (handler) (rate(cryptolake_operator_failures_total[5m]))",
                "failed {{handler}}",
            ),
        ),
        layout.panel(
            24,
            5,
            type="table",
            title="Pipelines by phase",
            datasource=PROMETHEUS,
            targets=[
                {
                    **prom(
                        "A", "max by (namespace, name, phase) (cryptolake_operator_phase == 1)", ""
                    ),
                    "format": "table",
                    "instant": True,
                }
            ],
        ),
    ]
    return dashboard("cryptolake-pipeline-health", "CryptoLake / Pipeline health", panels, [])


DASHBOARDS = {"markets.json": markets, "pipeline-health.json": pipeline_health}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> None:
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build))
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
