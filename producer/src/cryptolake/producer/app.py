"""The streaming producer: pick the source (live exchanges or the simulator), run one feed per
exchange into Kafka, report progress, and on stop flush everything the broker has not yet
acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from cryptolake.common.s3 import trust_ca_file
from cryptolake.common.trade import SIMULATOR
from cryptolake.producer.exchanges import adapter_class, markets
from cryptolake.producer.exchanges.base import ExchangeAdapter
from cryptolake.producer.feed import Backoff, Feed, probe_reachable
from cryptolake.producer.kafka_sink import KafkaSink, SinkError, ensure_topics
from cryptolake.producer.markets import MarketsPoller
from cryptolake.producer.metrics import MetricsServer, ProducerMetrics
from cryptolake.producer.reconcile import KlineSource, Reconciler, ReconcileSettings
from cryptolake.producer.recovery import RecoverySettings
from cryptolake.producer.settings import ProducerSettings
from cryptolake.producer.simulator.server import SimulatorConfig, SimulatorServer

log = logging.getLogger(__name__)


@dataclass
class StreamSummary:
    source: str
    received: int
    delivered: int
    dlq: int
    failed: int
    undelivered: int


def live_adapters(settings: ProducerSettings) -> list[ExchangeAdapter]:
    """One adapter per exchange and protocol: Binance's perpetual contracts on their own."""
    urls = settings.urls_by_exchange()
    key = settings.binance_api_key.get_secret_value() if settings.binance_api_key else None
    return [
        cls(part, url=urls.get(cls.name), api_key=key if name == "binance" else None)
        for name, symbols in settings.symbols_by_exchange().items()
        for cls, part in markets(name, symbols)
    ]


def simulator_adapter(settings: ProducerSettings, base_url: str) -> ExchangeAdapter:
    """One feed on the simulator, labelled ``simulator`` so it never passes for market data."""
    cls = adapter_class(settings.simulator_protocol)
    # The simulator serves each exchange's REST history beside its WebSocket, same path.
    rest_url = base_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    key = settings.binance_api_key.get_secret_value() if settings.binance_api_key else None
    return cls(settings.simulator_symbols(), label=SIMULATOR, url=base_url, rest_url=rest_url,
               api_key=key)  # fmt: skip


async def _reachable_live(settings: ProducerSettings) -> list[ExchangeAdapter]:
    adapters = live_adapters(settings)
    answers = await asyncio.gather(
        *(probe_reachable(adapter, settings.live_timeout_s) for adapter in adapters)
    )
    for adapter, problem in zip(adapters, answers, strict=True):
        if problem is not None:
            log.info("live %s not reachable: %s", adapter.name, problem)
    return [adapter for adapter, problem in zip(adapters, answers, strict=True) if not problem]


@contextlib.asynccontextmanager
async def open_source(settings: ProducerSettings) -> AsyncIterator[list[ExchangeAdapter]]:
    """The adapters to stream from, starting the simulator when the source calls for it."""
    if settings.source == "live":
        yield live_adapters(settings)
        return
    if settings.source == "auto":
        reachable = await _reachable_live(settings)
        if reachable:
            log.info(
                "source auto: streaming live from %s",
                ", ".join(adapter.name for adapter in reachable),
            )
            yield live_adapters(settings)
            return
        log.warning(
            "source auto: no live exchange answered within %.0f s (this machine may have no "
            "internet access). Streaming the market SIMULATOR instead: synthetic trades, "
            "labelled exchange=simulator everywhere. Set SOURCE=live to insist on live data.",
            settings.live_timeout_s,
        )
    if settings.simulator_url:
        log.info("simulator: using the one at %s", settings.simulator_url)
        yield [simulator_adapter(settings, settings.simulator_url)]
        return
    config = SimulatorConfig(
        seed=settings.simulator_seed,
        rate_per_s=settings.simulator_rate,
        symbols=settings.simulator_symbols(),
    )
    async with SimulatorServer(config) as simulator:
        log.info(
            "simulator: synthetic %s-format trades for %s at ~%.0f trades/s on %s",
            settings.simulator_protocol,
            ", ".join(config.symbols),
            config.rate_per_s,
            simulator.url(settings.simulator_protocol),
        )
        yield [simulator_adapter(settings, simulator.url(settings.simulator_protocol))]


class Producer:
    """Owns the metrics endpoint, the Kafka sink and the feeds of one producer process."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings
        self.metrics = ProducerMetrics()
        self.sink = KafkaSink(settings, self.metrics)
        self.feeds: list[Feed] = []
        self.source: str = settings.source
        self.reconciler: Reconciler | None = None
        self.markets: MarketsPoller | None = None

    async def run(self, stop: asyncio.Event) -> StreamSummary:
        """Feed until ``stop`` (or a feed's unexpected error, re-raised); on every way out,
        what the broker has not acknowledged is flushed first."""
        try:
            await self._feed(stop)
        finally:
            summary = self._finish()
        return summary

    async def _feed(self, stop: asyncio.Event) -> None:
        settings = self.settings
        if settings.s3_ca_file is not None:
            trust_ca_file(settings.s3_ca_file)  # before any TLS client exists
        async with open_source(settings) as adapters:
            self.source = adapters[0].label if adapters else settings.source
            self.feeds = [
                Feed(
                    adapter,
                    self.sink,
                    self.metrics,
                    Backoff(settings.reconnect_min_s, settings.reconnect_max_s),
                    gap_grace_s=settings.gap_grace_s,
                    recovery=RecoverySettings(max_attempts=settings.recovery_attempts),
                )
                for adapter in adapters
            ]
            tasks = [asyncio.create_task(feed.run(stop), name=feed.name) for feed in self.feeds]
            tasks.append(asyncio.create_task(self._serve_and_report(stop), name="reporter"))
            if settings.reconcile_interval_s > 0:
                self.reconciler = Reconciler(
                    [
                        KlineSource(feed.adapter, feed.recovery.rest, feed.gaps)
                        for feed in self.feeds
                    ],
                    settings,
                    self.metrics,
                    ReconcileSettings(settings.reconcile_interval_s, settings.reconcile_delay_s),
                )
                tasks.append(asyncio.create_task(self.reconciler.run(stop), name="klines"))
            if settings.markets_interval_s > 0:
                self.markets = MarketsPoller.for_source(settings, adapters, self.sink,
                                                        self.metrics)  # fmt: skip
                tasks.append(asyncio.create_task(self.markets.run(stop), name="markets"))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # re-raise a feed's unexpected error instead of hiding it
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_and_report(self, stop: asyncio.Event) -> None:
        """Run delivery reports while idle and log one progress line per interval."""
        last_time, last_delivered = time.monotonic(), 0
        next_report = last_time + self.settings.status_interval_s
        while not stop.is_set():
            self.sink.serve()
            now = time.monotonic()
            if now >= next_report:
                rate = (self.sink.delivered - last_delivered) / (now - last_time)
                connected = [feed.name for feed in self.feeds if feed.state.connected]
                log.info(
                    "status: %d trades produced (%.0f/s), %d to DLQ, %d failed, %d recovered "
                    "from gaps, %d gaps unrecoverable, %d market snapshots; connected: %s",
                    self.sink.delivered,
                    rate,
                    self.sink.dlq_delivered,
                    self.sink.failed,
                    sum(feed.recovery.recovered for feed in self.feeds),
                    sum(len(feed.recovery.unrecoverable) for feed in self.feeds),
                    self.sink.snapshots_delivered,
                    ", ".join(connected) or "none",
                )
                last_time, last_delivered = now, self.sink.delivered
                next_report = now + self.settings.status_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)

    def _finish(self) -> StreamSummary:
        log.info(
            "stopping: flushing up to %.0f s of unacknowledged messages…",
            self.settings.flush_timeout_s,
        )
        undelivered = self.sink.flush(self.settings.flush_timeout_s)
        summary = StreamSummary(
            source=self.source,
            received=sum(feed.state.trades for feed in self.feeds),
            delivered=self.sink.delivered,
            dlq=self.sink.dlq_delivered,
            failed=self.sink.failed,
            undelivered=undelivered,
        )
        if undelivered:
            log.error(
                "%d messages were never acknowledged by %s",
                undelivered,
                self.settings.bootstrap_servers,
            )
        log.info(
            "stopped: %d trades produced, %d to DLQ, %d failed, %d undelivered",
            summary.delivered,
            summary.dlq,
            summary.failed,
            summary.undelivered,
        )
        return summary


async def run_until(
    settings: ProducerSettings, condition: Callable[[Producer], bool], timeout_s: float = 60.0
) -> tuple[Producer, StreamSummary]:
    """Run a producer until ``condition(producer)`` holds (or the timeout), then stop it as
    SIGTERM would: feeds closed, everything flushed. For tests and scripted loads."""
    producer = Producer(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(producer.run(stop))
    deadline = time.monotonic() + timeout_s
    while not condition(producer) and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.05)
    stop.set()
    return producer, await task


def start_metrics(settings: ProducerSettings, metrics: ProducerMetrics) -> MetricsServer | None:
    if settings.metrics_port == 0:
        return None
    try:
        return MetricsServer(metrics, settings.metrics_port).start()
    except OSError as exc:
        raise SinkError(
            f"metrics port {settings.metrics_port} is taken ({exc.strerror}): set "
            "--metrics-port / CRYPTOLAKE_METRICS_PORT to a free port, or 0 to disable"
        ) from exc


def run_stream(settings: ProducerSettings, stop: asyncio.Event | None = None) -> StreamSummary:
    """Blocking entry point: topics, metrics, feeds until SIGINT/SIGTERM (or ``stop``)."""
    ensure_topics(settings)
    producer = Producer(settings)
    server = start_metrics(settings, producer.metrics)

    async def main() -> StreamSummary:
        stop_event = stop or asyncio.Event()
        install_stop_signals(stop_event)
        return await producer.run(stop_event)

    try:
        return asyncio.run(main())
    finally:
        if server is not None:
            server.stop()


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` (a second one is handled the same: flush still runs)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Off the main thread (tests run the producer in a thread) signals cannot be installed.
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
