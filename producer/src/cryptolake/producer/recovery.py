"""Closing a feed's gaps from the exchange's REST trade history, off the live path.

One task per feed takes the gaps that stayed open past their grace period (``gaps.py``), asks
the exchange for the missing ids page by page at the exchange's pace, and publishes what comes
back as ordinary trade v1 records: same ids, so silver's dedup drops anything also streamed.
Rate limits (429, Binance's 418) wait as long as ``Retry-After`` says; 5xx and network errors
back off exponentially with jitter (tenacity); after the last attempt, or when the history has
no such trades (too old), the rest of the gap is recorded as unrecoverable, in a log line and
``unrecoverable_gaps_total``. The live stream never waits for any of it: the sink's produce is
non-blocking and this task only shares the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from cryptolake.common.timeutil import now_us
from cryptolake.producer.exchanges.base import ExchangeAdapter, HistoryRequest
from cryptolake.producer.gaps import Gap, GapTracker
from cryptolake.producer.kafka_sink import KafkaSink
from cryptolake.producer.metrics import ProducerMetrics

log = logging.getLogger(__name__)

# Statuses that mean "later": rate limited (Binance answers 418 to a client that ignored its
# 429s) or the exchange is unwell.
RETRY_STATUSES = frozenset({418, 429, 500, 502, 503, 504})
POLL_S = 0.25


class RetryLater(Exception):
    """The exchange asked to retry (``retry_after_s`` when it said how long to wait)."""

    def __init__(self, status: int, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.retry_after_s = retry_after_s


class Unrecoverable(Exception):
    """The history cannot give these trades; the message says why."""


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the exchanges send a number), capped at 5 minutes."""
    value = response.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), 300.0)
    except ValueError:
        return None


@dataclass
class RecoverySettings:
    max_attempts: int = 6  # per request
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    timeout_s: float = 10.0


class Recovery:
    """Runs until ``stop``: takes due gaps from ``tracker`` and closes them, one request at a
    time, ``adapter.history_interval_s`` apart."""

    def __init__(
        self,
        adapter: ExchangeAdapter,
        tracker: GapTracker,
        sink: KafkaSink,
        metrics: ProducerMetrics,
        settings: RecoverySettings | None = None,
    ) -> None:
        self.adapter = adapter
        self.tracker = tracker
        self.sink = sink
        self.settings = settings or RecoverySettings()
        labels = {"exchange": adapter.label, "protocol": adapter.name}
        self._recovered = metrics.recovered_trades.labels(**labels)
        self._unrecoverable = metrics.unrecoverable_gaps.labels(**labels)
        self._open = metrics.open_gap_trades.labels(**labels)
        self._missing = metrics.gap_trades.labels(**labels)
        self._closed = metrics.gap_close.labels(**labels)
        self._dlq = metrics.dlq
        self._labels = labels
        self.rest = PacedRest(adapter, self.settings, self.name)
        self._busy = False
        self.recovered = 0
        self.unrecoverable: list[tuple[Gap, str]] = []

    @property
    def name(self) -> str:
        return f"{self.adapter.label}/{self.adapter.name}"

    @property
    def idle(self) -> bool:
        """No gap open or being recovered."""
        return not self._busy and self.tracker.open_trades == 0

    async def run(self, stop: asyncio.Event) -> None:
        timeout = httpx.Timeout(self.settings.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while not stop.is_set():
                due = self.tracker.due(time.monotonic())
                self._busy = bool(due)
                by_symbol: dict[str, list[Gap]] = {}
                for gap in due:
                    self._missing.inc(gap.size)
                    by_symbol.setdefault(gap.symbol, []).append(gap)
                for symbol, gaps in by_symbol.items():
                    await self._close(client, symbol, sorted(gaps, key=lambda g: g.first_id))
                self._busy = False
                self._open.set(self.tracker.open_trades)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=POLL_S)
                except TimeoutError:
                    continue

    async def _close(self, client: httpx.AsyncClient, symbol: str, gaps: list[Gap]) -> None:
        """Every missing id of ``gaps`` (one symbol's, in id order), page by page: one page may
        cover many small gaps of a reconnect storm. Ids a page passes without holding are not
        in the history (too old): they stay missing."""
        missing = sum(gap.size for gap in gaps)
        log.info(
            "%s: recovering %d missing %s trades (%d gaps, ids %d-%d) from the REST history",
            self.name, missing, symbol, len(gaps), gaps[0].first_id, gaps[-1].last_id,
        )  # fmt: skip
        span = Gap(symbol, gaps[0].first_id, gaps[-1].last_id, gaps[0].opened_at,
                   gaps[0].after_time_us)  # fmt: skip
        ascending = self.adapter.history_ascending
        pending, cursor, recovered = list(gaps), None, 0
        try:
            while pending:
                request = self.adapter.history_request(symbol, span, cursor)
                if request is None:
                    raise Unrecoverable(f"{self.adapter.name} has no REST trade history")
                body = await self.rest.get(client, request)
                page = self.adapter.parse_history(symbol, body, now_us())
                for letter in page.parsed.dead_letters:
                    self._dlq.labels(**self._labels, reason=str(letter.reason)).inc()
                self.sink.publish_dead_letters(page.parsed.dead_letters)
                found = {int(t.trade_id): t for t in page.parsed.trades if t.trade_id.isdigit()}
                if not found:
                    raise Unrecoverable("the history has no more trades")
                low, high = min(found), max(found)
                passed, pending = _split(pending, high if ascending else low, ascending)
                wanted = [found[i] for gap in passed
                          for i in range(gap.first_id, gap.last_id + 1) if i in found]  # fmt: skip
                self.sink.publish_trades(wanted)
                recovered += len(wanted)
                self._recovered.inc(len(wanted))
                now = time.monotonic()
                for gap in passed:
                    absent = [i for i in range(gap.first_id, gap.last_id + 1) if i not in found]
                    if absent:
                        self._record_unrecoverable(
                            Gap(symbol, absent[0], absent[-1], gap.opened_at),
                            f"the history has no trade {absent[0]} ({len(absent)} absent)",
                        )
                    else:
                        self._closed.observe(now - gap.opened_at)
                if pending and page.next_cursor in (None, cursor):
                    raise Unrecoverable("the history ends before them")
                cursor = page.next_cursor
        except (Unrecoverable, RestFailed) as reason:
            for gap in pending:
                self._record_unrecoverable(gap, str(reason))
        finally:
            self.recovered += recovered
            self.sink.serve()
        log.info(
            "%s: %d of %d missing %s trades recovered, %.1f s after the first gap opened",
            self.name, recovered, missing, symbol, time.monotonic() - gaps[0].opened_at,
        )  # fmt: skip

    def _record_unrecoverable(self, gap: Gap, reason: str) -> None:
        self._unrecoverable.inc()
        self.unrecoverable.append((gap, reason))
        log.warning(
            "%s: GAP UNRECOVERABLE — %d %s trades (ids %d-%d) stay missing: %s",
            self.name, gap.size, gap.symbol, gap.first_id, gap.last_id, reason,
        )  # fmt: skip


class RestFailed(Exception):
    """A REST call that gave no usable answer (the message says what came back)."""


class RestPace(Protocol):
    """How often a REST API may be asked, and how it says "busy" in a 200 (Kraken): what an
    exchange adapter knows of its history API, and what the markets poller knows of CoinGecko."""

    @property
    def history_interval_s(self) -> float: ...

    def history_busy(self, body: bytes) -> bool: ...


class PacedRest:
    """GETs to one REST API, ``pace.history_interval_s`` apart (shared by the recovery and the
    kline checks of a feed, so together they keep the exchange's pace), retried as the API
    asks (429 and 5xx with their ``Retry-After``, else exponential backoff)."""

    def __init__(self, pace: RestPace, settings: RecoverySettings, name: str) -> None:
        self.pace = pace
        self.settings = settings
        self.name = name
        self._next_request_at = 0.0

    async def get(self, client: httpx.AsyncClient, request: HistoryRequest) -> bytes:
        """One GET at the exchange's pace, retried as the exchange asks; raises
        :class:`RestFailed` when no attempt gave a 200."""
        settings = self.settings
        backoff = wait_exponential_jitter(
            multiplier=settings.backoff_initial_s, max=settings.backoff_max_s
        )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, RetryLater) and error.retry_after_s is not None:
                return error.retry_after_s
            return float(backoff(state))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.max_attempts),
            wait=wait,
            retry=retry_if_exception_type((RetryLater, httpx.TransportError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._pace()
                    response = await client.get(
                        request.url, params=request.params, headers=request.headers
                    )
                    if response.status_code in RETRY_STATUSES or (
                        response.status_code == 200 and self.pace.history_busy(response.content)
                    ):
                        log.info("%s: REST answered %d; retrying", self.name,
                                 response.status_code)  # fmt: skip
                        raise RetryLater(response.status_code, retry_after(response))
                    if response.status_code != 200:
                        raise RestFailed(f"HTTP {response.status_code}: {response.text[:200]!r}")
                    return response.content
        except (RetryLater, httpx.TransportError) as error:
            raise RestFailed(
                f"no answer after {settings.max_attempts} attempts: {error}"
            ) from error
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _pace(self) -> None:
        delay = self._next_request_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next_request_at = time.monotonic() + self.pace.history_interval_s


def _split(gaps: list[Gap], edge: int, ascending: bool) -> tuple[list[Gap], list[Gap]]:
    """(the parts of ``gaps`` a page reaching ``edge`` has passed, the parts still ahead):
    ids up to ``edge`` for a page read upwards, from ``edge`` on for one read downwards."""
    passed: list[Gap] = []
    ahead: list[Gap] = []
    for gap in gaps:
        if ascending:
            low_part = (gap.first_id, min(gap.last_id, edge))
            high_part = (max(gap.first_id, edge + 1), gap.last_id)
            done, rest = low_part, high_part
        else:
            done = (max(gap.first_id, edge), gap.last_id)
            rest = (gap.first_id, min(gap.last_id, edge - 1))
        for target, (first, last) in ((passed, done), (ahead, rest)):
            if first <= last:
                target.append(Gap(gap.symbol, first, last, gap.opened_at, gap.after_time_us))
    return passed, ahead
