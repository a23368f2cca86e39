"""Deliveries to a real HTTP receiver: retries with backoff, a final state, Retry-After, and a
hanging or dead webhook that delays nobody else."""

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

from cryptolake.alerts.delivery import Delivery, DeliveryPolicy, Dispatcher
from cryptolake.alerts.evaluate import Firing
from cryptolake.alerts.journal import DELIVERED, FAILED, Outcome
from cryptolake.alerts.payloads import json_body
from cryptolake.common.alert_rules import AlertKind

FIRING = Firing(
    "spike",
    AlertKind.VOLATILITY,
    "binance",
    "BTC-USDT",
    5,
    datetime(2026, 12, 7, 12, 5, tzinfo=UTC),
    Decimal("2.5"),
    Decimal("2"),
)
POLICY = DeliveryPolicy(timeout_s=0.5, attempts=3, backoff_s=0.05, backoff_max_s=2.0)


def test_each_webhook_gets_its_outcome_and_a_hanging_one_delays_no_other(webhook_receiver):
    outcomes: dict[str, tuple[Outcome, float]] = {}
    started = time.monotonic()

    def record(outcome: Outcome) -> None:
        outcomes[outcome.alert_id] = (outcome, time.monotonic() - started)

    async def scenario() -> None:
        dispatcher = Dispatcher(POLICY, record)
        for path in ("/hang", "/ok", "/flaky", "/limited", "/gone"):
            dispatcher.submit(webhook_receiver.url(path), Delivery(path, json_body(FIRING)))
        assert await dispatcher.drain(timeout_s=20)
        assert dispatcher.queued == 0
        await dispatcher.close()

    asyncio.run(scenario())
    result = {path: (o.delivery, o.attempts) for path, (o, _) in outcomes.items()}
    assert result == {
        "/ok": (DELIVERED, 1),
        "/flaky": (DELIVERED, 3),
        "/limited": (DELIVERED, 2),
        "/gone": (FAILED, 1),
        "/hang": (FAILED, 3),
    }
    # Three 0.5 s timeouts held /hang; /ok was done long before the first of them ended.
    assert outcomes["/ok"][1] < 0.4 < outcomes["/hang"][1]
    assert outcomes["/hang"][0].last_error.startswith("timed out")
    assert outcomes["/gone"][0].last_error == "HTTP 404"
    limited = webhook_receiver.posts["/limited"]
    assert limited[1].at - limited[0].at >= 1.0  # Retry-After: 1, over a 0.05 s backoff
    assert [p.body for p in webhook_receiver.answered("/ok")] == [json_body(FIRING)]


def test_a_webhook_that_answers_nothing_in_time_ends_failed_after_every_attempt(webhook_receiver):
    outcomes: list[Outcome] = []

    async def scenario() -> None:
        dispatcher = Dispatcher(
            DeliveryPolicy(timeout_s=0.2, attempts=4, backoff_s=0.01), outcomes.append
        )
        dispatcher.submit(webhook_receiver.url("/hang"), Delivery("a", {}))
        dispatcher.submit(webhook_receiver.url("/hang"), Delivery("b", {}))
        assert await dispatcher.drain(timeout_s=10)
        await dispatcher.close()

    asyncio.run(scenario())
    assert [(o.alert_id, o.delivery, o.attempts) for o in outcomes] == [
        ("a", FAILED, 4),
        ("b", FAILED, 4),
    ]
