"""The built-in dashboard in a real browser: Debian's Chromium driven by Playwright, against the
real API (uvicorn on a loopback port, ``live_api_for``) over the sample Delta lake.

The page sets ``window.__dashboard = {ready, bars, lastBarTime, updates, status, stream, …}``
once it has drawn the chart; the tests wait on it rather than on timings. A screenshot of the
loaded page goes to ``artifacts/dashboard.png``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pydantic import SecretStr

from cryptolake.api.app import CHART_DIST
from cryptolake.api.sample import append_bars
from cryptolake.api.settings import ApiSettings
from cryptolake.common.tables import GOLD_CANDLES_1M

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
CHART_LIBRARY = "lightweight-charts.standalone.production.js"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
# Everything is local: the page loads in about a second; 5 s is the budget for an SSE update.
LOAD_TIMEOUT_MS = 15_000
SSE_TIMEOUT_MS = 5_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (`make setup` installs it)")
    with sync_playwright() as playwright:
        # Debian's Chromium, not a Playwright download (there is none on these machines);
        # Chromium refuses its sandbox as root.
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def dashboard_for(
    browser: Browser, live_api_for: Callable[[ApiSettings], Any]
) -> Iterator[Callable[[ApiSettings], tuple[str, Page, list[str]]]]:
    """``dashboard_for(settings)``: the API over ``settings`` and a fresh page (not loaded yet),
    with the JS errors it reports (uncaught exceptions and console errors). The pages close
    before the servers stop (they hold SSE streams open)."""
    contexts = []

    def start(settings: ApiSettings) -> tuple[str, Page, list[str]]:
        library = settings.vendor_dir / CHART_DIST / CHART_LIBRARY
        assert library.is_file(), f"{library} is missing: run `make setup` (npm ci)"
        api = live_api_for(settings)
        context = browser.new_context(viewport={"width": 1400, "height": 850})
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                errors.append(f"console.error: {message.text} at {message.location}")
                if message.type == "error"
                else None
            ),
        )
        return api.base_url, page, errors

    yield start
    for context in contexts:
        context.close()


def dashboard_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("() => ({...window.__dashboard})")
    return state


def open_dashboard(page: Page, url: str) -> dict[str, Any]:
    """Loads the page and waits for its first chart draw and its live stream."""
    page.goto(url)
    page.wait_for_function(
        "() => window.__dashboard && window.__dashboard.ready", timeout=LOAD_TIMEOUT_MS
    )
    expect(page.locator("#status")).to_have_class(
        re.compile(r"\bstatus-connected\b"), timeout=LOAD_TIMEOUT_MS
    )
    return dashboard_state(page)


def next_minute_bar(bars: list[dict[str, Any]], exchange: str, symbol: str) -> dict[str, Any]:
    """A copy of the symbol's newest 1-minute bar one minute later, as the gold job's next MERGE
    would commit it."""
    newest = max(
        (bar for bar in bars if (bar["exchange"], bar["symbol"]) == (exchange, symbol)),
        key=lambda bar: bar["minute"],
    )
    step = timedelta(minutes=1)
    return {
        **newest,
        "minute": newest["minute"] + step,
        "trade_date": (newest["minute"] + step).date(),
        "first_trade_time": newest["first_trade_time"] + step,
        "last_trade_time": newest["last_trade_time"] + step,
        "updated_at": datetime.now(UTC),
    }


def test_dashboard_draws_chart_kpis_and_trades(local_lake: Any, dashboard_for: Any) -> None:
    base_url, page, errors = dashboard_for(local_lake.settings)

    state = open_dashboard(page, f"{base_url}/")

    params = {"symbol": state["symbol"], "exchange": state["exchange"]}
    bars = httpx.get(f"{base_url}/v1/candles", params={**params, "interval": "1m"}).json()["bars"]
    assert state["interval"] == "1m"
    assert 0 < state["bars"] == len(bars)
    assert state["lastBarTime"] == bars[-1]["time_ms"]
    # Bars missing trades are marked (the sample market's first bar is: nothing before it).
    incomplete = sum(bar["complete"] is False for bar in bars)
    assert state["incomplete"] == incomplete
    if incomplete:
        expect(page.locator("#chart-info")).to_contain_text(f"{incomplete} incomplete")

    kpis = httpx.get(f"{base_url}/v1/kpis").json()["kpis"]
    tiles = page.locator("#kpis .kpi")
    expect(tiles).to_have_count(len(kpis))
    for index in range(len(kpis)):
        expect(tiles.nth(index).locator(".kpi-price")).to_have_text(re.compile(r"\d"))
        expect(tiles.nth(index).locator(".kpi-change")).to_have_text(re.compile(r"1h [▲▼\u20130]"))

    trades = httpx.get(f"{base_url}/v1/trades/latest", params=params).json()["trades"]
    expect(page.locator("#trades tbody tr")).to_have_count(len(trades))
    assert trades

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
    assert errors == []


def test_dashboard_draws_a_new_bar_from_the_stream(fresh_lake: Any, dashboard_for: Any) -> None:
    base_url, page, errors = dashboard_for(fresh_lake.settings)
    state = open_dashboard(page, f"{base_url}/?interval=1m")

    bar = next_minute_bar(fresh_lake.bars, state["exchange"], state["symbol"])
    append_bars(fresh_lake.uri(GOLD_CANDLES_1M), [{**bar, "complete": False}])

    new_bar_ms = int(bar["minute"].timestamp() * 1000)
    page.wait_for_function(
        "(ms) => window.__dashboard.lastBarTime === ms", arg=new_bar_ms, timeout=SSE_TIMEOUT_MS
    )
    drawn = dashboard_state(page)
    assert drawn["bars"] == state["bars"] + 1
    assert drawn["incomplete"] == state["incomplete"] + 1  # marked as it arrives
    assert errors == []


def test_dashboard_lists_and_marks_alerts_and_adds_a_new_one_from_the_stream(
    fresh_lake: Any, dashboard_for: Any
) -> None:
    from cryptolake.alerts.evaluate import Firing  # noqa: PLC0415
    from cryptolake.alerts.journal import Journal, firing_row  # noqa: PLC0415
    from cryptolake.common.alert_rules import AlertKind  # noqa: PLC0415

    base_url, page, errors = dashboard_for(fresh_lake.settings)
    exchange, symbol = fresh_lake.bars[0]["exchange"], fresh_lake.bars[0]["symbol"]
    newest = max(b["minute"] for b in fresh_lake.bars if (b["exchange"], b["symbol"]) ==
                 (exchange, symbol))  # fmt: skip

    def fire(rule: str, minutes_before_newest: int) -> None:
        end = newest + timedelta(minutes=1 - minutes_before_newest)
        firing = Firing(rule, AlertKind.VOLATILITY, exchange, symbol, 1, end,
                        Decimal("3.25"), Decimal("2"))  # fmt: skip
        Journal(fresh_lake.settings).record_firings([firing_row(firing, "json:…", end)])

    fire("spike", 5)
    open_dashboard(page, f"{base_url}/?symbol={symbol}&exchange={exchange}&interval=1m")
    page.wait_for_function("() => window.__dashboard.alerts === 1", timeout=LOAD_TIMEOUT_MS)
    expect(page.locator("#alerts .alert")).to_have_text([re.compile(r"spike · 3\.25% \(≥ 2%\)")])
    assert dashboard_state(page)["alertMarkers"] == 1

    fire("jump", 0)  # pushed over SSE: no reload
    page.wait_for_function("() => window.__dashboard.alerts === 2", timeout=SSE_TIMEOUT_MS)
    expect(page.locator("#alerts .alert").first).to_contain_text("jump")
    assert dashboard_state(page)["alertMarkers"] == 2
    assert errors == []


def test_dashboard_shows_the_auth_error_then_uses_the_key_from_the_url(
    local_lake: Any, dashboard_for: Any
) -> None:
    settings = local_lake.settings.model_copy(update={"api_keys": [SecretStr("dashboard-key")]})
    base_url, page, errors = dashboard_for(settings)

    page.goto(f"{base_url}/")
    expect(page.locator("#status")).to_have_class(re.compile(r"\bstatus-error\b"))
    expect(page.locator("#status")).to_contain_text("an API key is required")
    assert not dashboard_state(page)["ready"]

    # The key from ?api_key= is kept (localStorage), sent as X-API-Key and to the SSE stream as
    # api_key, and taken out of the address bar.
    state = open_dashboard(page, f"{base_url}/?api_key=dashboard-key")
    assert state["bars"] > 0
    assert "api_key" not in page.url
    page.reload()
    page.wait_for_function("() => window.__dashboard.stream === 'open'", timeout=LOAD_TIMEOUT_MS)
    assert [error for error in errors if "401" not in error] == []
