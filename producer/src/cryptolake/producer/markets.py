"""Coin market snapshots: CoinGecko's ``/api/v3/coins/markets`` (or the simulator's copy of it)
polled every ``markets_interval_s`` into ``crypto.markets.v1`` (``common/market_snapshot.py``).

The poll keeps CoinGecko's free-tier pace (at most one request per ``COINGECKO_INTERVAL_S``),
waits out 429s as ``Retry-After`` says and backs off on 5xx and network errors (``PacedRest``,
shared with the gap recovery); a poll that still fails is logged and counted, and the next one
comes at its time. Rows that cannot be normalized go to the DLQ with their reason, the body
whole when it is not a JSON array of objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

from cryptolake.common.market_snapshot import (
    COINGECKO,
    SnapshotRejected,
    decode_exact,
    snapshot_from_coingecko,
)
from cryptolake.common.timeutil import now_us
from cryptolake.common.trade import SIMULATOR, RejectReason
from cryptolake.producer.dead_letters import dead_letter
from cryptolake.producer.exchanges.base import ExchangeAdapter, HistoryRequest
from cryptolake.producer.kafka_sink import KafkaSink
from cryptolake.producer.metrics import ProducerMetrics
from cryptolake.producer.recovery import PacedRest, RecoverySettings, RestFailed
from cryptolake.producer.settings import ProducerSettings

log = logging.getLogger(__name__)

# CoinGecko's public API: about 30 calls a minute.
COINGECKO_INTERVAL_S: Final = 2.0
MARKETS_PATH: Final = "/api/v3/coins/markets"


@dataclass(frozen=True)
class CoinGeckoPace:
    """CoinGecko as PacedRest sees it: its pace, and no "busy" inside a 200."""

    history_interval_s: float = COINGECKO_INTERVAL_S

    def history_busy(self, body: bytes) -> bool:
        return False


class MarketsPoller:
    def __init__(self, settings: ProducerSettings, base_url: str, source: str, sink: KafkaSink,
                 metrics: ProducerMetrics) -> None:  # fmt: skip
        self.settings = settings
        self.source = source  # "coingecko", or "simulator" for the simulator's markets
        self.sink = sink
        self.metrics = metrics
        self.rest = PacedRest(CoinGeckoPace(), RecoverySettings(
            max_attempts=settings.recovery_attempts), f"{source}/markets")  # fmt: skip
        headers = {}
        if settings.coingecko_api_key is not None:
            headers["x-cg-demo-api-key"] = settings.coingecko_api_key.get_secret_value()
        params = {"vs_currency": "usd", "order": "market_cap_desc",
                  "per_page": str(settings.markets_top), "page": "1"}  # fmt: skip
        if settings.markets_coins:
            params["ids"] = settings.markets_coins
        self.request = HistoryRequest(base_url.rstrip("/") + MARKETS_PATH, params, headers)
        self.polls = self.published = self.rejected = 0

    @classmethod
    def for_source(cls, settings: ProducerSettings, adapters: list[ExchangeAdapter],
                   sink: KafkaSink, metrics: ProducerMetrics) -> MarketsPoller:  # fmt: skip
        """CoinGecko itself, or the simulator's copy (at its root: ``/coingecko/…``) when the
        producer streams the simulator, labelled ``simulator``."""
        if adapters and adapters[0].label == SIMULATOR:
            root = urlsplit(adapters[0].base_url)
            scheme = "https" if root.scheme in ("wss", "https") else "http"
            base = f"{scheme}://{root.netloc}/coingecko"
            return cls(settings, base, SIMULATOR, sink, metrics)
        return cls(settings, settings.coingecko_url, COINGECKO, sink, metrics)

    async def poll_once(self, client: httpx.AsyncClient) -> int:
        """One request; publishes its snapshots and dead letters. Returns the snapshots
        published; raises RestFailed when no attempt gave an answer."""
        body = await self.rest.get(client, self.request)
        received = now_us()
        self.polls += 1
        letters = []
        snapshots = []
        try:
            rows = decode_exact(body)
            if not isinstance(rows, list):
                raise SnapshotRejected(RejectReason.BAD_TYPE, "the body is not a JSON array")
        except SnapshotRejected as error:
            rows = []
            letters.append(dead_letter(f"{self.source}:markets", error.reason, error.detail,
                                       body, received))  # fmt: skip
        for row in rows:
            try:
                snapshots.append(snapshot_from_coingecko(row, self.source, received))
            except SnapshotRejected as error:
                letters.append(dead_letter(f"{self.source}:markets", error.reason,
                                           error.detail, repr(row), received))  # fmt: skip
        self.sink.publish_snapshots(snapshots)
        self.sink.publish_dead_letters(letters)
        self.published += len(snapshots)
        self.rejected += len(letters)
        self.metrics.market_snapshots.labels(self.source).inc(len(snapshots))
        return len(snapshots)

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.markets_interval_s
        log.info("markets: %s every %.0f s (%s)", self.request.url, interval,
                 self.request.params.get("ids") or f"top {self.settings.markets_top}")  # fmt: skip
        async with httpx.AsyncClient(timeout=15.0) as client:
            while not stop.is_set():
                try:
                    await self.poll_once(client)
                    self.metrics.market_polls.labels(self.source, "ok").inc()
                except RestFailed as error:
                    self.metrics.market_polls.labels(self.source, "failed").inc()
                    log.warning("markets: %s (next poll in %.0f s)", error, interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
