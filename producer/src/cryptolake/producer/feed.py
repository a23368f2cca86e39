"""One WebSocket feed per exchange: connect, subscribe, parse, publish, reconnect.

Reconnects use exponential backoff with full jitter and resubscribe. Every reconnect after a
session that carried trades is a *gap*: trades made while we were away may be missing, so it
is logged and counted. Where trade ids are sequential, the missing ids are tracked
(``gaps.py``), in a session as across reconnects, and a recovery task beside the feed fetches
them from the exchange's REST history (``recovery.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from cryptolake.common.timeutil import now_us
from cryptolake.producer.exchanges.base import ExchangeAdapter, FrameKind, ParsedFrame
from cryptolake.producer.gaps import GapTracker
from cryptolake.producer.kafka_sink import KafkaSink
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.recovery import Recovery, RecoverySettings

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation)."""

    minimum_s: float = 0.5
    maximum_s: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.minimum_s * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(self.minimum_s / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class FeedState:
    connected: bool = False
    sessions: int = 0
    trades: int = 0
    dlq: int = 0
    last_frame_at: float = 0.0


class Feed:
    """Runs one adapter until ``stop`` is set."""

    def __init__(
        self,
        adapter: ExchangeAdapter,
        sink: KafkaSink,
        metrics: ProducerMetrics,
        backoff: Backoff,
        *,
        gap_grace_s: float = 2.0,
        recovery: RecoverySettings | None = None,
    ) -> None:
        self.adapter = adapter
        self.sink = sink
        self.metrics = metrics
        self.backoff = backoff
        self.state = FeedState()
        self.gaps = GapTracker(grace_s=gap_grace_s)
        self.recovery = Recovery(adapter, self.gaps, sink, metrics, recovery)
        labels = {"exchange": adapter.label, "protocol": adapter.name}
        self._labels = labels
        self._frame_counters = {
            kind: metrics.frames.labels(**labels, kind=str(kind)) for kind in FrameKind
        }
        self._received = metrics.received.labels(**labels)
        self._connected = metrics.connected.labels(**labels)
        self._last_sequence: int | None = None

    @property
    def name(self) -> str:
        return f"{self.adapter.label}/{self.adapter.name}"

    async def run(self, stop: asyncio.Event) -> None:
        recovery = asyncio.create_task(self.recovery.run(stop), name=f"recovery {self.name}")
        try:
            await self._run(stop)
        finally:
            if not recovery.done():
                await asyncio.wait({recovery}, timeout=5)  # stop is set: it ends between pages
                recovery.cancel()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            disconnected_at = time.time()
            try:
                await self._session(stop)
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                log.warning(
                    "%s: connection lost or refused: %s: %s", self.name, type(exc).__name__, exc
                )
            except InvalidURI as exc:
                log.error("%s: bad URL %s: %s", self.name, self.adapter.connect_url(), exc)
                return
            finally:
                self._connected.set(0)
                self.state.connected = False
            if stop.is_set():
                return
            delay = self.backoff.next_delay()
            self.metrics.reconnects.labels(**self._labels).inc()
            log.info(
                "%s: reconnecting in %.1f s (attempt %d, down since %s)",
                self.name,
                delay,
                self.backoff.attempt,
                time.strftime("%H:%M:%S", time.localtime(disconnected_at)),
            )
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                continue

    async def _session(self, stop: asyncio.Event) -> None:
        url = self.adapter.connect_url()
        async with connect(
            url,
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            max_size=2**24,
            max_queue=64,
        ) as ws:
            for message in self.adapter.subscribe_messages():
                await ws.send(message)
            self.state.sessions += 1
            self.state.connected = True
            self._connected.set(1)
            self._last_sequence = None
            if self.state.sessions > 1:
                self._report_reconnect_gap()
            log.info("%s: connected to %s (session %d)", self.name, url, self.state.sessions)
            await self._receive(ws, stop)

    def _report_reconnect_gap(self) -> None:
        if self.state.trades:
            self.metrics.gaps.labels(**self._labels).inc()
            log.warning(
                "%s: GAP — reconnected; trades made while disconnected may be missing", self.name
            )

    async def _receive(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        idle_timeout = self.adapter.idle_timeout_s
        # Closing the socket on stop ends the `async for` below cleanly.
        closer = asyncio.create_task(self._close_on(stop, ws))
        try:
            async with asyncio.timeout(idle_timeout) as idle:
                async for frame in ws:
                    idle.reschedule(loop.time() + idle_timeout)
                    if self._handle(self.adapter.parse(frame, now_us())) is FrameKind.SHUTDOWN:
                        log.warning("%s: server announced shutdown; reconnecting", self.name)
                        self.backoff.reset()
                        return
        except TimeoutError as exc:
            raise TimeoutError(f"no frame for {idle_timeout:.0f} s") from exc
        finally:
            closer.cancel()

    @staticmethod
    async def _close_on(stop: asyncio.Event, ws: ClientConnection) -> None:
        await stop.wait()
        await ws.close()

    def _handle(self, parsed: ParsedFrame) -> FrameKind:
        self._frame_counters[parsed.kind].inc()
        self.state.last_frame_at = time.monotonic()
        if parsed.sequence is not None:
            self._check_sequence(parsed.sequence)
        if parsed.trades:
            if self.backoff.attempt:
                self.backoff.reset()  # a session that delivers trades is healthy again
            self.state.trades += len(parsed.trades)
            self._received.inc(len(parsed.trades))
            self.sink.publish_trades(parsed.trades)
            now = time.monotonic()
            for trade in parsed.trades:
                gap = self.gaps.observe(trade.symbol, trade.trade_id, now, trade.event_time)
                if gap is not None:
                    log.debug("%s: ids %d-%d of %s not received (yet)",
                              self.name, gap.first_id, gap.last_id, gap.symbol)  # fmt: skip
        if parsed.dead_letters:
            self.state.dlq += len(parsed.dead_letters)
            for letter in parsed.dead_letters:
                self.metrics.dlq.labels(**self._labels, reason=str(letter.reason)).inc()
                log.debug("%s: DLQ %s: %s", self.name, letter.reason, letter.detail)
            self.sink.publish_dead_letters(parsed.dead_letters)
        self.sink.serve()
        return parsed.kind

    def _check_sequence(self, sequence: int) -> None:
        previous, self._last_sequence = self._last_sequence, sequence
        if previous is not None and sequence > previous + 1:
            self.metrics.gaps.labels(**self._labels).inc()
            log.warning(
                "%s: GAP — message sequence jumped from %d to %d", self.name, previous, sequence
            )


async def probe_reachable(adapter: ExchangeAdapter, timeout_s: float) -> str | None:
    """None if the exchange accepts a WebSocket handshake within the timeout, else why not."""
    try:
        async with asyncio.timeout(timeout_s):
            async with connect(adapter.connect_url(), open_timeout=timeout_s):
                return None
    except TimeoutError:
        return f"no answer within {timeout_s:.0f} s"
    except (OSError, InvalidHandshake, WebSocketException) as exc:
        return f"{type(exc).__name__}: {exc}"
