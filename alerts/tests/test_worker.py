"""The alerts worker over a real MinIO: Gold candles written with delta-rs in the jobs' schema,
rules firing as new versions appear, every firing once in gold/alerts with its delivery state,
and a restart that neither fires again nor forgets a pending delivery."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cryptolake.alerts.evaluate import Firing
from cryptolake.alerts.journal import DELIVERED, FAILED, Journal, firing_row
from cryptolake.alerts.rules import parse_rules
from cryptolake.alerts.settings import AlertsSettings
from cryptolake.alerts.worker import AlertsWorker
from cryptolake.api.sample import SampleTrade, append_bars, bars_from_trades
from cryptolake.common.alert_rules import AlertKind
from cryptolake.common.tables import GOLD_CANDLES_1M

RULES = """
rules:
  - name: btc-spike
    markets: ["simulator:BTC-USDT"]
    kind: volatility
    threshold: "2"
    cooldown: 0m
    webhook: {{format: discord, url: "{ok}"}}
  - name: btc-105
    kind: price_cross
    threshold: 105
    direction: up
    webhook: {{format: slack, url: "{flaky}"}}
  - name: btc-move
    kind: price_change
    window: 2m
    threshold: "5"
    webhook: {{format: json, url: "{hang}"}}
"""


def trades(minute: datetime, prices: list[str], first_id: int) -> list[SampleTrade]:
    return [
        SampleTrade(
            "simulator",
            "BTC-USDT",
            str(first_id + i),
            Decimal(p),
            Decimal("0.5"),
            "buy",
            minute + timedelta(seconds=1 + i),
        )
        for i, p in enumerate(prices)
    ]


class Running:
    """A worker on its own event loop in a thread, stopped on exit."""

    def __init__(self, worker: AlertsWorker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.worker.run(self.stop))

    def __enter__(self) -> AlertsWorker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def wait_for(condition, timeout_s: float = 30.0, what: str = "") -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def lake(s3_bucket) -> AlertsSettings:
    return AlertsSettings(
        table_root=f"s3://{s3_bucket.name}/lake",
        s3_endpoint=s3_bucket.endpoint,
        s3_access_key=s3_bucket.access_key,
        s3_secret_key=s3_bucket.secret_key,
        poll_interval_s=0.2,
        journal_flush_s=0.2,
        delivery_timeout_s=0.3,
        delivery_attempts=3,
        delivery_backoff_s=0.05,
        metrics_port=0,
    )


@pytest.fixture
def now_minute() -> Iterator[datetime]:
    yield datetime.now(UTC).replace(second=0, microsecond=0)


def test_firings_are_delivered_logged_once_and_survive_a_restart(
    lake, webhook_receiver, now_minute
):
    rules = parse_rules(
        RULES.format(
            ok=webhook_receiver.url("/ok"),
            flaky=webhook_receiver.url("/flaky"),
            hang=webhook_receiver.url("/hang"),
        )
    )
    candles = lake.table_uri(GOLD_CANDLES_1M)
    options = lake.storage_options()
    calm = [
        trades(now_minute - m * timedelta(minutes=1), ["100", "100.5", "100"], 100 * m)
        for m in range(8, 2, -1)
    ]
    append_bars(candles, bars_from_trades([t for minute in calm for t in minute]), options)

    with Running(AlertsWorker(lake, rules)) as worker:
        wait_for(lambda: worker.evaluated_version is not None, what="the first evaluation")
        assert worker.tally.fired == 0
        spike_minute = now_minute - timedelta(minutes=2)
        append_bars(candles, bars_from_trades(trades(spike_minute, ["100", "106"], 1000)), options)
        latency = wait_for(lambda: webhook_receiver.answered("/ok"), what="the discord post")
        wait_for(
            lambda: len([r for r in Journal(lake).read_all() if r["delivery"] != "pending"]) == 3,
            what="the three outcomes",
        )
    assert latency < 3.0

    end = spike_minute + timedelta(minutes=1)
    rows = {row["rule"]: row for row in Journal(lake).read_all()}
    # Independent recomputations: (106 - 100) / 100 over the spike minute; +6 % against the
    # close two minutes before; the close that crossed 105.
    assert {
        rule: (row["value"], row["delivery"], row["attempts"]) for rule, row in rows.items()
    } == {
        "btc-spike": (Decimal("6"), DELIVERED, 1),
        "btc-105": (Decimal("106"), DELIVERED, 3),
        "btc-move": (Decimal("6"), FAILED, 3),
    }
    assert all(row["window_end"] == end for row in rows.values())
    assert rows["btc-move"]["last_error"].startswith("timed out")
    assert rows["btc-spike"]["destination"] == f"discord:{webhook_receiver.base_url}/…"
    assert (
        rows["btc-spike"]["delivered_at"] is not None and rows["btc-move"]["delivered_at"] is None
    )
    (post,) = webhook_receiver.answered("/ok")
    assert post.body["content"] == "BTC-USDT on simulator: volatility 6% over 1 min (threshold 2%)"

    # A restart, then a new Gold version: nothing fires twice, nothing is posted again.
    with Running(AlertsWorker(lake, rules)) as worker:
        wait_for(lambda: worker.evaluated_version is not None, what="the evaluation after restart")
        later = now_minute - timedelta(minutes=1)
        append_bars(candles, bars_from_trades(trades(later, ["106", "106.1"], 2000)), options)
        version = worker.evaluated_version
        wait_for(lambda: worker.evaluated_version != version, what="the new version")
    assert len(Journal(lake).read_all()) == 3
    assert len(webhook_receiver.answered("/ok")) == 1
    assert len(webhook_receiver.answered("/flaky")) == 1


def test_a_firing_committed_but_not_delivered_is_delivered_after_a_restart(
    lake, webhook_receiver, now_minute
):
    rules = parse_rules(
        RULES.format(ok=webhook_receiver.url("/ok"), flaky="http://unused/", hang="http://unused/")
    )
    append_bars(
        lake.table_uri(GOLD_CANDLES_1M),
        bars_from_trades(trades(now_minute - timedelta(minutes=5), ["100"], 1)),
        lake.storage_options(),
    )
    # The worker died after the commit, before the post: the row is pending.
    firing = Firing(
        "btc-spike",
        AlertKind.VOLATILITY,
        "simulator",
        "BTC-USDT",
        1,
        now_minute - timedelta(minutes=3),
        Decimal("3.5"),
        Decimal("2"),
    )
    Journal(lake).record_firings([firing_row(firing, "discord:…", datetime.now(UTC))])
    with Running(AlertsWorker(lake, rules)):
        wait_for(lambda: Journal(lake).read_all()[0]["delivery"] == DELIVERED, what="delivery")
    (post,) = webhook_receiver.answered("/ok")
    assert "volatility 3.5%" in post.body["content"]
    # Replaying the same firing adds nothing.
    Journal(lake).record_firings([firing_row(firing, "discord:…", datetime.now(UTC))])
    assert [row["delivery"] for row in Journal(lake).read_all()] == [DELIVERED]
