"""Every endpoint over real Delta tables: a local folder and a bucket on a real MinIO."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cryptolake.api.queries import INTERVALS
from cryptolake.api.sample import bars_from_trades
from cryptolake.api.settings import ApiSettings

ClientFor = Callable[[ApiSettings], TestClient]


def iso(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_bars(lake: Any, exchange: str, symbol: str, interval: str) -> list[dict[str, Any]]:
    mine = [t for t in lake.trades if (t.exchange, t.symbol) == (exchange, symbol)]
    return bars_from_trades(mine, INTERVALS[interval])


def assert_same_bars(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [bar["time_ms"] for bar in got] == [int(w["minute"].timestamp() * 1000) for w in want]
    for bar, w in zip(got, want, strict=True):
        for name in ("open", "high", "low", "close", "volume", "buy_volume", "sell_volume"):
            assert bar[name] == float(w[name]), (bar["time"], name)
        assert bar["trades"] == w["trades"]
        assert bar["vwap"] == pytest.approx(float(w["vwap"]), rel=1e-9)


@pytest.mark.parametrize("interval", ["1m", "5m", "15m", "1h", "4h", "1d"])
def test_candles_over_a_range_match_bars_built_from_the_trades(
    local_lake: Any, local_client: TestClient, interval: str
) -> None:
    want = expected_bars(local_lake, "simulator", "BTC-USDT", interval)
    # The last day is hot (in memory); from the first day on it is read from storage.
    for first in (len(want) // 2, 0):
        start = want[first]["minute"]
        end = start + timedelta(hours=12) if interval not in ("4h", "1d") else None
        params = {"symbol": "BTC-USDT", "exchange": "simulator", "interval": interval}
        params |= {"start": iso(start), "limit": 5000}
        if end is not None:
            params["end"] = iso(end)
        response = local_client.get("/v1/candles", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["exchange"], body["symbol"], body["interval"]) == (
            "simulator", "BTC-USDT", interval,
        )  # fmt: skip
        in_range = [w for w in want[first:] if end is None or w["minute"] < end]
        assert_same_bars(body["bars"], in_range)


def test_latest_candles_without_a_range(local_lake: Any, local_client: TestClient) -> None:
    want = expected_bars(local_lake, "simulator", "ETH-USDT", "1m")[-7:]
    body = local_client.get("/v1/candles", params={"symbol": "ETH-USDT", "limit": 7}).json()
    assert body["exchange"] == "simulator"  # the only one with ETH-USDT
    assert_same_bars(body["bars"], want)


def test_exchange_defaults_to_the_newest_and_can_be_chosen(
    local_lake: Any, local_client: TestClient
) -> None:
    binance = local_client.get(
        "/v1/candles", params={"symbol": "BTC-USDT", "exchange": "binance", "limit": 3}
    ).json()
    assert binance["exchange"] == "binance"
    assert_same_bars(binance["bars"], expected_bars(local_lake, "binance", "BTC-USDT", "1m")[-3:])


def test_symbols_list_first_and_last_trade(local_lake: Any, local_client: TestClient) -> None:
    symbols = local_client.get("/v1/symbols").json()["symbols"]
    assert {(s["exchange"], s["symbol"]) for s in symbols} == {
        ("simulator", "BTC-USDT"), ("simulator", "ETH-USDT"), ("binance", "BTC-USDT"),
    }  # fmt: skip
    for entry in symbols:
        mine = [
            t
            for t in local_lake.trades
            if (t.exchange, t.symbol) == (entry["exchange"], entry["symbol"])
        ]
        assert entry["first_time_ms"] == int(min(t.event_time for t in mine).timestamp() * 1000)
        assert entry["last_time_ms"] == int(max(t.event_time for t in mine).timestamp() * 1000)


def test_latest_trades_are_the_newest_from_silver(
    local_lake: Any, local_client: TestClient
) -> None:
    body = local_client.get("/v1/trades/latest", params={"symbol": "ETH-USDT", "limit": 5}).json()
    mine = [t for t in local_lake.trades if t.symbol == "ETH-USDT"]
    newest = sorted(mine, key=lambda t: (t.event_time, t.trade_id), reverse=True)[:5]
    assert [t["trade_id"] for t in body["trades"]] == [t.trade_id for t in newest]
    assert body["trades"][0]["price"] == float(newest[0].price)


def test_sma_stats_and_kpis(local_lake: Any, local_client: TestClient) -> None:
    sim_btc = {"symbol": "BTC-USDT", "exchange": "simulator"}
    sma = local_client.get("/v1/indicators/sma", params={**sim_btc, "limit": 3}).json()
    bars = expected_bars(local_lake, "simulator", "BTC-USDT", "1m")
    last_bar = bars[-1]["minute"]
    assert sma["points"][-1]["time_ms"] == int(last_bar.timestamp() * 1000)
    closes = [float(b["close"]) for b in bars if b["minute"] > last_bar - timedelta(minutes=5)]
    assert sma["points"][-1]["sma"] == pytest.approx(sum(closes) / len(closes), rel=1e-12)

    daily = local_client.get("/v1/stats/daily", params=sim_btc).json()["stats"]
    assert [d["open"] for d in daily] == [
        float(b["open"]) for b in expected_bars(local_lake, "simulator", "BTC-USDT", "1d")
    ]
    hourly = local_client.get("/v1/stats/hourly", params={"limit": 4}).json()["stats"]
    assert len(hourly) == 4

    kpis = {(k["exchange"], k["symbol"]): k for k in local_client.get("/v1/kpis").json()["kpis"]}
    btc = kpis[("simulator", "BTC-USDT")]
    assert btc["last_price"] == float(bars[-1]["close"])
    hour_ago = [b for b in bars if b["minute"] <= bars[-1]["minute"] - timedelta(hours=1)][-1]
    assert btc["change_1h_pct"] == pytest.approx(
        (float(bars[-1]["close"]) / float(hour_ago["close"]) - 1) * 100
    )


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({"symbol": "DOGE-USDT"}, 404, "symbol"),
        ({"symbol": "BTC-USDT", "exchange": "kraken"}, 404, "symbol"),
        ({"symbol": "BTCUSDT"}, 422, "symbol"),
        ({}, 422, "symbol"),
        ({"symbol": "BTC-USDT", "interval": "2m"}, 422, "interval"),
        ({"symbol": "BTC-USDT", "start": "yesterday"}, 422, "start"),
        ({"symbol": "BTC-USDT", "end": "2026-11-24T25:00:00Z"}, 422, "end"),
        ({"symbol": "BTC-USDT", "start": "2026-11-24", "end": "2026-11-23"}, 422, "end"),
        ({"symbol": "BTC-USDT", "start": "2020-01-01", "end": "2026-01-01"}, 422, "end"),
        ({"symbol": "BTC-USDT", "limit": 0}, 422, "limit"),
        ({"symbol": "BTC-USDT", "limit": 5001}, 422, "limit"),
        ({"symbol": "BTC-USDT", "limit": "ten"}, 422, "limit"),
    ],
)  # fmt: skip
def test_bad_parameters_get_a_message_naming_them(
    local_client: TestClient, params: dict[str, Any], status: int, parameter: str
) -> None:
    response = local_client.get("/v1/candles", params=params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert error["parameter"] == parameter
    assert error["message"]


def test_unknown_path_gets_the_error_body(local_client: TestClient) -> None:
    response = local_client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_probes_and_metrics(local_client: TestClient) -> None:
    assert local_client.get("/healthz").json() == {"status": "ok"}
    ready = local_client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["versions"]["gold/candles_1m"] >= 0
    local_client.get("/v1/candles", params={"symbol": "BTC-USDT"})
    local_client.get("/v1/candles", params={"symbol": "BTC-USDT"})
    metrics = local_client.get("/metrics").text
    assert (
        'cryptolake_api_requests_total{method="GET",route="/v1/candles",status="200"} 2.0'
        in metrics
    )
    assert "cryptolake_api_cache_hits_total 1.0" in metrics
    assert 'cryptolake_api_table_version{table="gold/candles_1m"}' in metrics
    assert 'cryptolake_api_data_freshness_seconds{table="gold/candles_1m"}' in metrics
    assert "cryptolake_api_storage_up 1.0" in metrics


def test_readyz_is_503_until_the_tables_exist(tmp_path: Path, client_for: ClientFor) -> None:
    client = client_for(ApiSettings(table_root=str(tmp_path / "empty")))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "does not exist yet" in response.json()["error"]["message"]
    assert client.get("/v1/candles", params={"symbol": "BTC-USDT"}).status_code == 404


def test_api_keys_guard_data_but_not_probes(
    local_lake: Any, tmp_path: Path, client_for: ClientFor
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text("file-key\n")
    settings = local_lake.settings.model_copy(
        update={"api_keys": ["env-key"], "api_keys_file": key_file}
    )
    client = client_for(ApiSettings.model_validate(settings.model_dump()))
    url, params = "/v1/candles", {"symbol": "BTC-USDT", "limit": 1}
    missing = client.get(url, params=params)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert client.get(url, params=params, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get(url, params=params, headers={"X-API-Key": "env-key"}).status_code == 200
    bearer = {"Authorization": "Bearer file-key"}
    assert client.get(url, params=params, headers=bearer).status_code == 200
    assert client.get(url, params={**params, "api_key": "file-key"}).status_code == 200
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/"):
        assert client.get(open_path).status_code == 200, open_path


def test_auth_is_off_without_keys(local_client: TestClient) -> None:
    assert local_client.get("/v1/kpis").status_code == 200


def test_cors_allows_only_the_configured_origins(local_lake: Any, client_for: ClientFor) -> None:
    settings = local_lake.settings.model_copy(update={"cors_origins": ["http://grafana.local"]})
    client = client_for(settings)
    allowed = client.get("/v1/kpis", headers={"Origin": "http://grafana.local"})
    assert allowed.headers["access-control-allow-origin"] == "http://grafana.local"
    other = client.get("/v1/kpis", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_same_answers_from_minio(s3_lake: Any, client_for: ClientFor) -> None:
    client = client_for(s3_lake.settings)
    assert client.get("/readyz").status_code == 200
    want = expected_bars(s3_lake, "simulator", "BTC-USDT", "1h")
    first_day = iso(want[0]["minute"])
    body = client.get(
        "/v1/candles",
        params={
            "symbol": "BTC-USDT",
            "exchange": "simulator",
            "interval": "1h",
            "start": first_day,
        },
    ).json()
    assert_same_bars(body["bars"], want)
    trades = client.get("/v1/trades/latest", params={"symbol": "ETH-USDT"}).json()["trades"]
    assert len(trades) == 50
