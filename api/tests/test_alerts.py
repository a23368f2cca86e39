"""GET /v1/alerts and ``event: alert`` on the SSE stream, over gold/alerts rows written by the
alerts worker's own journal (delta-rs), exact decimals kept as strings."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
from fastapi.testclient import TestClient

from cryptolake.alerts.evaluate import Firing
from cryptolake.alerts.journal import DELIVERED, Journal, Outcome, firing_row
from cryptolake.api.settings import ApiSettings
from cryptolake.common.alert_rules import AlertKind

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def firing(rule: str, symbol: str, minutes_ago: int, value: str, exchange: str = "simulator",
           kind: AlertKind = AlertKind.VOLATILITY) -> Firing:  # fmt: skip
    return Firing(rule, kind, exchange, symbol, 5, NOW - timedelta(minutes=minutes_ago),
                  Decimal(value), Decimal("2.5"))  # fmt: skip


FIRINGS = [
    firing("spike", "BTC-USDT", 30, "3.141592653589"),
    firing("spike", "ETH-USDT", 20, "2.5"),
    firing("level", "BTC-USDT", 10, "100000.1234567891", kind=AlertKind.PRICE_CROSS),
    firing("spike", "BTC-USDT", 60 * 24 * 3, "9.99"),  # three days ago
]


def journal_for(settings: ApiSettings) -> Journal:
    return Journal(settings)


def write(settings: ApiSettings, firings: list[Firing]) -> None:
    rows = [firing_row(f, "discord:https://discord.example.test/…", f.window_end) for f in firings]
    journal_for(settings).record_firings(rows)


def test_alerts_are_listed_newest_first_exactly_and_filtered(
    fresh_lake: Any, client_for: Callable[[ApiSettings], TestClient]
) -> None:
    write(fresh_lake.settings, FIRINGS)
    client = client_for(fresh_lake.settings)
    body = client.get("/v1/alerts").json()
    assert [(a["rule"], a["symbol"], a["value"]) for a in body["alerts"]] == [
        ("level", "BTC-USDT", "100000.123456789100"),
        ("spike", "ETH-USDT", "2.500000000000"),
        ("spike", "BTC-USDT", "3.141592653589"),
    ]
    first = body["alerts"][0]
    assert first["alert_id"] == FIRINGS[2].alert_id and first["kind"] == "price_cross"
    assert first["window_end_ms"] == int(FIRINGS[2].window_end.timestamp() * 1000)
    assert (first["delivery"], first["attempts"], first["threshold"]) == (
        "pending",
        0,
        "2.5" + "0" * 11,
    )
    assert Decimal(first["value"]) == FIRINGS[2].value

    def rules(**params: str) -> list[str]:
        return [a["alert_id"] for a in client.get("/v1/alerts", params=params).json()["alerts"]]

    assert rules(rule="spike", symbol="BTC-USDT") == [FIRINGS[0].alert_id]
    assert rules(symbol="eth/usdt") == [FIRINGS[1].alert_id]
    assert rules(exchange="binance") == []
    assert rules(limit="1") == [FIRINGS[2].alert_id]
    # Older than the hot days: read from storage by partition.
    week = (NOW - timedelta(days=7)).isoformat()
    assert rules(start=week, symbol="BTC-USDT", rule="spike") == [
        FIRINGS[0].alert_id,
        FIRINGS[3].alert_id,
    ]
    assert client.get("/v1/alerts", params={"rule": "x" * 64}).status_code == 422
    assert client.get("/v1/alerts", params={"limit": "0"}).status_code == 422
    assert client.get("/v1/alerts", params={"start": "yesterday"}).status_code == 422
    schema = client.get("/openapi.json").json()
    response = schema["paths"]["/v1/alerts"]["get"]["responses"]["200"]
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AlertsPage"
    }
    assert "delivery" in schema["components"]["schemas"]["Alert"]["properties"]


def test_an_empty_lake_has_no_alerts(
    local_lake: Any, client_for: Callable[[ApiSettings], TestClient]
) -> None:
    assert client_for(local_lake.settings).get("/v1/alerts").json() == {"alerts": []}


def read_alert_events(url: str, found: list[dict[str, Any]], stop: threading.Event) -> None:
    with httpx.Client(timeout=None) as client, client.stream("GET", url) as response:
        event = None
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                found.append({"event": event, **orjson.loads(line[6:])})


def test_a_new_firing_is_pushed_to_its_symbols_stream_and_its_delivery_is_served(
    fresh_lake: Any, live_api_for: Callable[[ApiSettings], Any], wait_for: Any
) -> None:
    write(fresh_lake.settings, FIRINGS[:1])
    api = live_api_for(fresh_lake.settings.model_copy(update={"sse_keepalive_s": 0.5}))
    found: list[dict[str, Any]] = []
    stop = threading.Event()
    url = f"{api.base_url}/v1/stream/candles?symbol=ETH-USDT"
    threading.Thread(target=read_alert_events, args=(url, found, stop), daemon=True).start()
    wait_for(lambda: any(e["event"] == "candle" for e in found), 10, "the initial bar")
    write(fresh_lake.settings, [FIRINGS[1], FIRINGS[2]])  # one for ETH-USDT, one for BTC-USDT
    wait_for(lambda: any(e["event"] == "alert" for e in found), 5, "the alert over SSE")
    alerts = [e for e in found if e["event"] == "alert"]
    assert [(a["alert_id"], a["value"]) for a in alerts] == [
        (FIRINGS[1].alert_id, "2.500000000000")
    ]
    stop.set()
    finished = datetime.now(UTC)
    journal_for(fresh_lake.settings).record_outcomes(
        [Outcome(FIRINGS[1].alert_id, DELIVERED, 2, None, finished)]
    )

    def delivered() -> bool:
        listed = httpx.get(f"{api.base_url}/v1/alerts?symbol=ETH-USDT").json()["alerts"]
        return listed[0]["delivery"] == DELIVERED and listed[0]["attempts"] == 2

    wait_for(delivered, 5, "the delivery outcome in /v1/alerts")
