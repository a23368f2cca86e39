"""Every endpoint over real Delta tables: a local folder and a bucket on a real MinIO."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cryptolake.api.queries import INTERVALS
from cryptolake.api.sample import bars_from_trades, rounded
from cryptolake.api.settings import ApiSettings
from cryptolake.api.store import LakeStore

ClientFor = Callable[[ApiSettings], TestClient]


def iso(moment: Any) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def exact(response: httpx.Response) -> Any:
    """The body with JSON numbers read as Decimal: the digits as sent, no float in between."""
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def expected_bars(lake: Any, exchange: str, symbol: str, interval: str) -> list[dict[str, Any]]:
    mine = [t for t in lake.trades if (t.exchange, t.symbol) == (exchange, symbol)]
    return bars_from_trades(mine, INTERVALS[interval])


BAR_NUMBERS = (
    "open", "high", "low", "close", "volume", "quote_volume", "vwap", "buy_volume", "sell_volume",
)  # fmt: skip


def assert_same_bars(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [bar["time_ms"] for bar in got] == [int(w["minute"].timestamp() * 1000) for w in want]
    for bar, w in zip(got, want, strict=True):
        for name in BAR_NUMBERS:
            assert bar[name] == w[name], (bar["time"], name)
        assert bar["trades"] == w["trades"]


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
        body = exact(local_client.get("/v1/candles", params=params))
        assert (body["exchange"], body["symbol"], body["interval"]) == (
            "simulator", "BTC-USDT", interval,
        )  # fmt: skip
        in_range = [w for w in want[first:] if end is None or w["minute"] < end]
        assert_same_bars(body["bars"], in_range)


@pytest.mark.parametrize("interval", ["5m", "1h"])
def test_limit_bars_from_a_start_inside_a_bar(
    local_lake: Any, local_client: TestClient, interval: str
) -> None:
    want = expected_bars(local_lake, "simulator", "BTC-USDT", interval)
    # Two minutes into a bar: that bar started before start, the answer begins with the next.
    start = want[len(want) // 2]["minute"] + timedelta(minutes=2)
    params = {"symbol": "BTC-USDT", "exchange": "simulator", "interval": interval}
    body = exact(local_client.get("/v1/candles", params=params | {"start": iso(start), "limit": 3}))
    assert_same_bars(body["bars"], [w for w in want if w["minute"] >= start][:3])


def test_sma_from_a_start(local_lake: Any, local_client: TestClient) -> None:
    bars = expected_bars(local_lake, "simulator", "BTC-USDT", "1m")
    start = bars[len(bars) // 2]["minute"]
    params = {"symbol": "BTC-USDT", "exchange": "simulator", "start": iso(start), "limit": 3}
    points = exact(local_client.get("/v1/indicators/sma", params=params))["points"]
    assert [p["window_start_ms"] for p in points] == [
        int((start + timedelta(minutes=i)).timestamp() * 1000) for i in range(3)
    ]


def test_latest_candles_without_a_range(local_lake: Any, local_client: TestClient) -> None:
    want = expected_bars(local_lake, "simulator", "ETH-USDT", "1m")[-7:]
    body = exact(local_client.get("/v1/candles", params={"symbol": "ETH-USDT", "limit": 7}))
    assert body["exchange"] == "simulator"  # the only one with ETH-USDT
    assert_same_bars(body["bars"], want)


def test_exchange_defaults_to_the_newest_and_can_be_chosen(
    local_lake: Any, local_client: TestClient
) -> None:
    binance = exact(
        local_client.get(
            "/v1/candles", params={"symbol": "BTC-USDT", "exchange": "binance", "limit": 3}
        )
    )
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
    params = {"symbol": "ETH-USDT", "limit": 5}
    body = exact(local_client.get("/v1/trades/latest", params=params))
    mine = [t for t in local_lake.trades if t.symbol == "ETH-USDT"]
    newest = sorted(mine, key=lambda t: (t.event_time, t.trade_id), reverse=True)[:5]
    assert [t["trade_id"] for t in body["trades"]] == [t.trade_id for t in newest]
    assert [(t["price"], t["qty"]) for t in body["trades"]] == [(t.price, t.qty) for t in newest]


def test_sma_stats_and_kpis(local_lake: Any, local_client: TestClient) -> None:
    sim_btc = {"symbol": "BTC-USDT", "exchange": "simulator"}
    sma = exact(local_client.get("/v1/indicators/sma", params={**sim_btc, "limit": 3}))
    bars = expected_bars(local_lake, "simulator", "BTC-USDT", "1m")
    last_bar = bars[-1]["minute"]
    assert sma["points"][-1]["time_ms"] == int(last_bar.timestamp() * 1000)
    window = [b for b in bars if b["minute"] > last_bar - timedelta(minutes=5)]
    closes = sum((b["close"] for b in window), Decimal(0))
    quote = sum((b["quote_volume"] for b in window), Decimal(0))
    volume = sum((b["volume"] for b in window), Decimal(0))
    assert sma["points"][-1]["sma"] == rounded(closes, len(window))
    assert sma["points"][-1]["vwap"] == rounded(quote, volume)

    daily = exact(local_client.get("/v1/stats/daily", params=sim_btc))["stats"]
    want_daily = expected_bars(local_lake, "simulator", "BTC-USDT", "1d")
    for name in ("open", "close", "high", "low", "volume", "quote_volume", "vwap"):
        assert [d[name] for d in daily] == [b[name] for b in want_daily], name
    assert [d["change_pct"] for d in daily] == [  # stored with 14 decimals, as the jobs do
        rounded((b["close"] - b["open"]) * 100, b["open"]).quantize(Decimal("1e-14"))
        for b in want_daily
    ]
    hourly = local_client.get("/v1/stats/hourly", params={"limit": 4}).json()["stats"]
    assert len(hourly) == 4

    kpis = {(k["exchange"], k["symbol"]): k for k in exact(local_client.get("/v1/kpis"))["kpis"]}
    btc = kpis[("simulator", "BTC-USDT")]
    assert btc["last_price"] == bars[-1]["close"]
    day = [b for b in bars if b["minute"] > bars[-1]["minute"] - timedelta(hours=24)]
    assert btc["volume_24h"] == sum((b["volume"] for b in day), Decimal(0))
    hour_ago = [b for b in bars if b["minute"] <= bars[-1]["minute"] - timedelta(hours=1)][-1]
    # A percentage for a tile, computed in floats: not one of the exact figures.
    assert float(btc["change_1h_pct"]) == pytest.approx(
        (float(bars[-1]["close"]) / float(hour_ago["close"]) - 1) * 100
    )


@pytest.mark.parametrize(
    ("params", "status", "parameter"),
    [
        ({"symbol": "DOGE-USDT"}, 404, "symbol"),
        ({"symbol": "BTC-USDT", "exchange": "kraken"}, 404, "symbol"),
        ({"symbol": "BT\u0421-USDT"}, 422, "symbol"),  # a Cyrillic Es
        ({"symbol": "BTC\u200b-USDT"}, 422, "symbol"),  # a zero-width space
        ({"symbol": "A" * 21 + "-USDT"}, 422, "symbol"),
        ({"symbol": "BTC-"}, 422, "symbol"),
        ({"symbol": "-"}, 422, "symbol"),
        ({"symbol": "BTC\x01-USDT"}, 422, "symbol"),
        ({"symbol": "BTC-USDT" * 10}, 422, "symbol"),
        ({"symbol": "BTC-USDT", "exchange": "ftx"}, 422, "exchange"),
        ({"symbol": "BTC-USDT", "exchange": "k\u0440aken"}, 422, "exchange"),
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


def test_spellings_of_a_symbol_and_exchange_answer_as_the_canonical_one(
    local_lake: Any, local_client: TestClient
) -> None:
    want = expected_bars(local_lake, "binance", "BTC-USDT", "1m")[-2:]
    for symbol, exchange in (("btc/usdt", "binance"), ("BTCUSDT", "Binance"), (" btc_usdt", None)):
        params = {"symbol": symbol, "limit": 2} | ({"exchange": exchange} if exchange else {})
        body = exact(local_client.get("/v1/candles", params=params))
        assert (body["exchange"], body["symbol"]) == ("binance", "BTC-USDT"), symbol
        assert_same_bars(body["bars"], want)


@pytest.mark.parametrize(
    "path", ["/v1/candles", "/v1/indicators/sma", "/v1/stats/hourly", "/v1/trades/latest"]
)
def test_a_symbol_that_cannot_exist_reads_nothing(
    local_client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    for method in ("read_candles_history", "table_rows", "symbols", "exchanges_of"):

        def refuse(*_: Any, method: str = method, **__: Any) -> None:
            raise AssertionError(f"{method} called for an impossible symbol")

        monkeypatch.setattr(LakeStore, method, refuse)
    for symbol in ("BT\u0421-USDT", "BTC-", "X" * 30 + "-USDT"):
        response = local_client.get(path, params={"symbol": symbol})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["parameter"] == "symbol"


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
    params = {"symbol": "BTC-USDT", "exchange": "simulator", "interval": "1h", "start": first_day}
    body = exact(client.get("/v1/candles", params=params))
    assert_same_bars(body["bars"], want)
    trades = client.get("/v1/trades/latest", params={"symbol": "ETH-USDT"}).json()["trades"]
    assert len(trades) == 50
