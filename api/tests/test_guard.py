"""What keeps the API up under abuse and tells the truth about itself: the SSE cap, the
per-client rate limit, request timeouts, key files that would turn auth off, and /readyz when
the table refresher has died or stalled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cryptolake.api.app import create_app
from cryptolake.api.settings import ApiSettings

ClientFor = Callable[[ApiSettings], TestClient]
CANDLES = ("/v1/candles", {"symbol": "BTC-USDT", "limit": 1})


def test_an_empty_key_file_is_a_startup_error_not_auth_off(local_lake: Any, tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.write_text("\n  \n")
    settings = local_lake.settings.model_copy(update={"api_keys_file": empty})
    with pytest.raises(ValueError, match="holds no key, which would turn auth off"):
        create_app(settings)


def test_the_rate_limit_is_per_client_and_spares_the_probes(
    local_lake: Any, client_for: ClientFor
) -> None:
    client = client_for(local_lake.settings.model_copy(update={"rate_limit": "5/minute"}))
    url, params = CANDLES
    assert [client.get(url, params=params).status_code for _ in range(5)] == [200] * 5
    refused = client.get(url, params=params)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # A made-up key is no way around it: only a configured key names a client.
    invented = {"X-API-Key": "random-4f1c"}
    assert client.get(url, params=params, headers=invented).status_code == 429
    assert all(client.get("/healthz").status_code == 200 for _ in range(10))


def test_each_configured_key_has_its_own_budget(local_lake: Any, client_for: ClientFor) -> None:
    settings = local_lake.settings.model_copy(
        update={"rate_limit": "3/minute", "api_keys": ["dashboard-1", "dashboard-2"]}
    )
    client = client_for(ApiSettings.model_validate(settings.model_dump()))
    url, params = CANDLES
    first, second = {"X-API-Key": "dashboard-1"}, {"X-API-Key": "dashboard-2"}
    assert [client.get(url, params=params, headers=first).status_code for _ in range(4)] == [
        200, 200, 200, 429,
    ]  # fmt: skip
    assert client.get(url, params=params, headers=second).status_code == 200
    # Wrong keys count against the address they come from, like no key.
    wrong = [client.get(url, params=params, headers={"X-API-Key": f"guess-{i}"}).status_code
             for i in range(4)]  # fmt: skip
    assert wrong == [401, 401, 401, 429]


def test_a_bad_rate_limit_is_refused_with_the_notation() -> None:
    with pytest.raises(ValueError, match=r"write e\.g\. 100/second"):
        ApiSettings(rate_limit="fast")


def test_a_request_past_the_timeout_gets_504(local_lake: Any, client_for: ClientFor) -> None:
    client = client_for(local_lake.settings.model_copy(update={"request_timeout_s": 1e-6}))
    url, params = CANDLES
    answer = client.get(url, params={**params, "limit": 7})  # a miss: the route runs
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "timeout"


def test_readyz_is_503_when_the_refresher_has_died(
    local_lake: Any, client_for: ClientFor, wait_for: Any
) -> None:
    client = client_for(local_lake.settings)
    assert client.get("/readyz").status_code == 200

    def broken() -> None:
        raise RuntimeError("a bug in the refresh")

    client.app.state.store.refresh = broken  # type: ignore[attr-defined]
    wait_for(lambda: client.get("/readyz").status_code == 503, 5, "/readyz turning 503")
    error = client.get("/readyz").json()["error"]
    assert error["code"] == "refresher_stopped" and "a bug in the refresh" in error["message"]


def test_readyz_is_503_when_the_tables_were_not_read_for_too_long(
    local_lake: Any, client_for: ClientFor, wait_for: Any
) -> None:
    client = client_for(local_lake.settings.model_copy(update={"refresh_stale_s": 1}))
    release = threading.Event()
    client.app.state.store.refresh = lambda: release.wait(30)  # type: ignore[attr-defined]
    wait_for(lambda: client.get("/readyz").status_code == 503, 5, "/readyz turning 503")
    assert client.get("/readyz").json()["error"]["code"] == "refresh_stale"
    release.set()


def _hold_stream(url: str, opened: list[int], stop: threading.Event) -> None:
    with httpx.Client(timeout=None) as http, http.stream("GET", url) as response:
        opened.append(response.status_code)
        for _ in response.iter_lines():
            if stop.is_set():
                return


def test_streams_beyond_the_cap_get_429_and_candles_still_answer(
    local_lake: Any, live_api_for: Callable[[ApiSettings], Any], wait_for: Any
) -> None:
    settings = local_lake.settings.model_copy(
        update={"sse_max_clients": 20, "sse_keepalive_s": 0.2, "rate_limit": ""}
    )
    api = live_api_for(settings)
    url = f"{api.base_url}/v1/stream/candles?symbol=ETH-USDT"
    opened: list[int] = []
    stop = threading.Event()
    readers = [threading.Thread(target=_hold_stream, args=(url, opened, stop), daemon=True)
               for _ in range(20)]  # fmt: skip
    for reader in readers:
        reader.start()
    wait_for(lambda: len(opened) == 20, 15, "20 open streams")
    assert opened == [200] * 20
    with httpx.Client(timeout=10) as http:
        refused = http.get(url)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "10"
        assert refused.json()["error"]["code"] == "too_many_streams"
        started = time.monotonic()
        assert http.get(f"{api.base_url}{CANDLES[0]}", params=CANDLES[1]).status_code == 200
        assert time.monotonic() - started < 1
        stop.set()
        for reader in readers:
            reader.join(timeout=5)

        def opens() -> bool:
            with http.stream("GET", url) as response:
                return response.status_code == 200

        wait_for(opens, 10, "a stream slot free again")
