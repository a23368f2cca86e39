"""Fixtures for the API tests: sample lakes written with ``deltalake`` (a local folder, or a
bucket on the session's real MinIO), the app over them, and a live uvicorn server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from cryptolake.api.app import create_app
from cryptolake.api.sample import SampleTrade, generate_trades, write_lake
from cryptolake.api.settings import ApiSettings
from cryptolake.stack.kafka import free_port

# Three days ending "today" for the data (the hot window is the newest two partitions).
LAKE_MINUTES = 3 * 24 * 60
MARKETS = (
    ("simulator", "BTC-USDT", Decimal("42000.00")),
    ("simulator", "ETH-USDT", Decimal("2500.00")),
    ("binance", "BTC-USDT", Decimal("41990.00")),
)


@dataclass
class SampleLake:
    settings: ApiSettings
    trades: list[SampleTrade]
    bars: list[dict[str, Any]]

    def uri(self, table: str) -> str:
        return self.settings.table_uri(table)


@pytest.fixture(scope="session")
def sample_trades() -> list[SampleTrade]:
    # Two days back to one day ahead of this hour: the endpoints' default windows end near
    # now (a fixed start made the tests fail once "now" passed its last bar).
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    # Prices with 2 to 8 decimals, 8-decimal quantities: exact answers differ from float ones.
    return generate_trades(
        MARKETS, start, LAKE_MINUTES, per_minute=2, price_decimals=range(2, 9), qty_decimals=8
    )


def _write_local_lake(folder: Path, trades: list[SampleTrade]) -> SampleLake:
    settings = ApiSettings(table_root=str(folder), refresh_interval_s=0.1)
    return SampleLake(settings, trades, write_lake(settings.table_uri, trades))


@pytest.fixture(scope="session")
def local_lake(
    tmp_path_factory: pytest.TempPathFactory, sample_trades: list[SampleTrade]
) -> SampleLake:
    """The sample lake in a local folder, written once: tests must not change it."""
    return _write_local_lake(tmp_path_factory.mktemp("lake"), sample_trades)


@pytest.fixture
def fresh_lake(tmp_path: Path, sample_trades: list[SampleTrade]) -> SampleLake:
    """The sample lake in a local folder of this test's own, to add commits to."""
    return _write_local_lake(tmp_path / "lake", sample_trades)


@pytest.fixture(scope="session")
def _s3_lake_bucket(minio_server: Any, sample_trades: list[SampleTrade]) -> ApiSettings:
    from cryptolake.stack.minio import ensure_bucket  # noqa: PLC0415

    ensure_bucket(
        minio_server.endpoint, minio_server.access_key, minio_server.secret_key, "api-lake"
    )
    settings = ApiSettings(
        table_root="s3a://api-lake/lakehouse",
        s3_endpoint=minio_server.endpoint,
        s3_access_key=minio_server.access_key,
        s3_secret_key=minio_server.secret_key,
        refresh_interval_s=0.1,
    )
    write_lake(settings.table_uri, sample_trades, settings.storage_options())
    return settings


@pytest.fixture
def s3_lake(_s3_lake_bucket: ApiSettings, sample_trades: list[SampleTrade]) -> SampleLake:
    """The sample lake in a bucket on the session's real MinIO (written once; read-only)."""
    from cryptolake.api.sample import bars_from_trades  # noqa: PLC0415

    return SampleLake(_s3_lake_bucket, sample_trades, bars_from_trades(sample_trades))


@pytest.fixture
def client_for() -> Iterator[Callable[[ApiSettings], TestClient]]:
    """``client_for(settings)``: a TestClient with the lifespan running (first refresh done)."""
    clients: list[TestClient] = []

    def make(settings: ApiSettings) -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def local_client(
    local_lake: SampleLake, client_for: Callable[[ApiSettings], TestClient]
) -> TestClient:
    return client_for(local_lake.settings)


@dataclass
class LiveApi:
    base_url: str
    server: uvicorn.Server


@pytest.fixture
def live_api_for() -> Iterator[Callable[[ApiSettings], LiveApi]]:
    """``live_api_for(settings)``: the real app under uvicorn on a free loopback port."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: ApiSettings) -> LiveApi:
        port = free_port()
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on {base_url}")
            time.sleep(0.05)
        running.append((server, thread))
        return LiveApi(base_url, server)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_api(local_lake: SampleLake, live_api_for: Callable[[ApiSettings], LiveApi]) -> LiveApi:
    return live_api_for(local_lake.settings)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def wait_for() -> Callable[[Callable[[], bool], float, str], None]:
    """``wait_for(predicate, timeout_s, what)``: bounded polling."""
    return _wait_for


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client
