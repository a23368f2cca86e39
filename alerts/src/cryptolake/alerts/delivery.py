"""Posting firings to their webhooks: one queue and one task per URL, so a slow or dead
webhook delays only its own firings, never the evaluation or another destination.

Each attempt has a timeout; timeouts, connection errors, 429 and 5xx are retried with
exponential backoff (tenacity; a 429's ``Retry-After`` is honoured up to the backoff's ceiling)
until ``attempts`` are spent; any other 4xx fails at once (a wrong URL does not heal). The outcome
of every delivery goes to ``on_outcome``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from cryptolake.alerts.journal import DELIVERED, FAILED, Outcome
from cryptolake.common.alert_rules import Webhook

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_s: float = 5.0
    attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass(frozen=True)
class Delivery:
    alert_id: str
    body: dict[str, Any]


class RetryableFailure(Exception):
    """This attempt failed in a way another attempt may not (timeout, 429, 5xx)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class FinalFailure(Exception):
    """The webhook refused the post for good (4xx other than 429)."""


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _summary(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code}" + (f": {text[:200]}" if text else "")


async def post_once(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    """One attempt: returns on 2xx, raises RetryableFailure or FinalFailure."""
    try:
        response = await client.post(url, json=body)
    except httpx.TimeoutException as error:
        raise RetryableFailure(f"timed out ({type(error).__name__})") from error
    except httpx.TransportError as error:
        raise RetryableFailure(f"cannot connect: {error}") from error
    if response.is_success:
        return
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableFailure(_summary(response), _retry_after(response))
    raise FinalFailure(_summary(response))


class Destination:
    """One webhook URL: its queue, its client, its task."""

    def __init__(
        self, url: str, policy: DeliveryPolicy, on_outcome: Callable[[Outcome], None]
    ) -> None:
        self.url = url
        self.name = Webhook.redacted_for(url)
        self.policy = policy
        self.on_outcome = on_outcome
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.unfinished = 0  # queued or being delivered

    def _wait(self, state: RetryCallState) -> float:
        backoff = wait_exponential(multiplier=self.policy.backoff_s, max=self.policy.backoff_max_s)
        error = state.outcome.exception() if state.outcome else None
        asked = error.retry_after_s if isinstance(error, RetryableFailure) else None
        return min(max(backoff(state), asked or 0.0), self.policy.backoff_max_s)

    async def deliver(self, client: httpx.AsyncClient, delivery: Delivery) -> Outcome:
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableFailure),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    await post_once(client, self.url, delivery.body)
        except (RetryableFailure, FinalFailure) as error:
            log.warning(
                "alert %s to %s failed after %d attempt(s): %s",
                delivery.alert_id,
                self.name,
                attempts,
                error,
            )
            return Outcome(delivery.alert_id, FAILED, attempts, str(error), datetime.now(UTC))
        return Outcome(delivery.alert_id, DELIVERED, attempts, None, datetime.now(UTC))

    async def run(self) -> None:
        timeout = httpx.Timeout(self.policy.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while True:
                delivery = await self.queue.get()
                try:
                    self.on_outcome(await self.deliver(client, delivery))
                finally:
                    self.unfinished -= 1
                    self.queue.task_done()


class Dispatcher:
    """The destinations by URL, each started on its first delivery."""

    def __init__(self, policy: DeliveryPolicy, on_outcome: Callable[[Outcome], None]) -> None:
        self.policy = policy
        self.on_outcome = on_outcome
        self.destinations: dict[str, Destination] = {}

    def submit(self, url: str, delivery: Delivery) -> None:
        """Queue a delivery; returns at once."""
        destination = self.destinations.get(url)
        if destination is None:
            destination = self.destinations[url] = Destination(url, self.policy, self.on_outcome)
            destination.task = asyncio.create_task(destination.run(), name=destination.name)
        destination.unfinished += 1
        destination.queue.put_nowait(delivery)

    @property
    def queued(self) -> int:
        return sum(destination.unfinished for destination in self.destinations.values())

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued delivery ended (True) or ``timeout_s`` passed (False)."""
        waits = [d.queue.join() for d in self.destinations.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for destination in self.destinations.values():
            if destination.task is not None:
                destination.task.cancel()
        await asyncio.gather(
            *(d.task for d in self.destinations.values() if d.task is not None),
            return_exceptions=True,
        )
