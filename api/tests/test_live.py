"""The API under uvicorn: SSE pushes a bar after a new Delta commit, new commits show up
within a second, and a storage outage gives 503s that clear by themselves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from cryptolake.api.sample import (
    SampleTrade,
    append_bars,
    bars_from_trades,
    generate_trades,
    write_lake,
)
from cryptolake.api.settings import ApiSettings
from cryptolake.common.tables import GOLD_CANDLES_1M
from cryptolake.stack.kafka import free_port
from cryptolake.stack.minio import MinioServer, MinioServerConfig, ensure_bucket

START = datetime(2026, 11, 24, tzinfo=UTC)


def next_bar(lake: Any, minutes_after: int, price: str) -> list[dict[str, Any]]:
    last = max(bar["minute"] for bar in lake.bars if bar["symbol"] == "ETH-USDT")
    at = last + timedelta(minutes=minutes_after, seconds=1)
    trade = SampleTrade("simulator", "ETH-USDT", f"new-{minutes_after}", Decimal(price),
                        Decimal("0.5"), "buy", at)  # fmt: skip
    return bars_from_trades([trade])


def read_events(url: str, found: list[dict[str, Any]], stop: threading.Event) -> None:
    with httpx.Client(timeout=None) as client, client.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "candle":
                found.append(orjson.loads(line[6:]))


def test_sse_pushes_the_bar_of_a_new_commit(
    fresh_lake: Any, live_api_for: Callable[[ApiSettings], Any], wait_for: Any
) -> None:
    # Short keepalives, so the reader sees `stop` soon and the server can shut down.
    api = live_api_for(fresh_lake.settings.model_copy(update={"sse_keepalive_s": 0.5}))
    found: list[dict[str, Any]] = []
    stop = threading.Event()
    url = f"{api.base_url}/v1/stream/candles?symbol=ETH-USDT"
    reader = threading.Thread(target=read_events, args=(url, found, stop), daemon=True)
    reader.start()
    # First event: the newest bar as it stands.
    wait_for(lambda: len(found) >= 1, 10, "the initial bar")
    assert found[0]["symbol"] == "ETH-USDT"
    bar = next_bar(fresh_lake, 1, "3333.5")
    append_bars(fresh_lake.uri(GOLD_CANDLES_1M), bar)
    wait_for(lambda: any(e["bar"]["close"] == 3333.5 for e in found), 5, "the new bar over SSE")
    pushed = next(e for e in found if e["bar"]["close"] == 3333.5)
    assert pushed["bar"]["time_ms"] == int(bar[0]["minute"].timestamp() * 1000)
    stop.set()


def test_a_new_commit_is_served_within_a_second(
    fresh_lake: Any, live_api_for: Callable[[ApiSettings], Any], http: httpx.Client
) -> None:
    api = live_api_for(fresh_lake.settings)
    url = f"{api.base_url}/v1/candles?symbol=ETH-USDT&limit=1"
    assert http.get(url).status_code == 200
    for step in (1, 2, 3):
        bar = next_bar(fresh_lake, step, f"{3000 + step}")
        append_bars(fresh_lake.uri(GOLD_CANDLES_1M), bar)
        committed = time.monotonic()
        while http.get(url).json()["bars"][-1]["close"] != 3000 + step:
            assert time.monotonic() - committed < 1.0, f"commit {step} not served within 1 s"
            time.sleep(0.02)


def test_storage_outage_gives_503_and_recovers(
    tmp_path: Path,
    live_api_for: Callable[[ApiSettings], Any],
    http: httpx.Client,
    wait_for: Any,
) -> None:
    # A MinIO of this test's own, so stopping it leaves the session's alone.
    config = MinioServerConfig(data_dir=tmp_path / "minio", port=free_port())
    minio = MinioServer(config)
    minio.start()
    try:
        ensure_bucket(minio.endpoint, minio.access_key, minio.secret_key, "outage")
        settings = ApiSettings(
            table_root="s3://outage/lake",
            s3_endpoint=minio.endpoint,
            s3_access_key=minio.access_key,
            s3_secret_key=minio.secret_key,
            refresh_interval_s=0.2,
        )
        trades = generate_trades([("simulator", "BTC-USDT", Decimal(100))], START, 30)
        write_lake(settings.table_uri, trades, settings.storage_options())
        api = live_api_for(settings)
        candles = f"{api.base_url}/v1/candles?symbol=BTC-USDT&limit=5"
        assert http.get(candles).status_code == 200

        minio.stop()
        wait_for(lambda: http.get(f"{api.base_url}/readyz").status_code == 503, 30, "503")
        down = http.get(candles)
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "storage_unavailable"
        assert http.get(f"{api.base_url}/healthz").status_code == 200

        minio.start()
        wait_for(lambda: http.get(f"{api.base_url}/readyz").status_code == 200, 30, "recovery")
        assert http.get(candles).status_code == 200
    finally:
        minio.stop()
