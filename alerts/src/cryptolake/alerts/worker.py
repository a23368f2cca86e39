"""The alerts worker: follows ``gold/candles_1m``'s log, evaluates the rules whenever a new
version appears (not on a clock), commits the firings to ``gold/alerts``, then hands them to
the dispatcher. Blocking Delta I/O runs in threads so deliveries go on meanwhile.

At start it reads ``gold/alerts`` back: what fired recently (once per window end, cooldowns)
and what is still ``pending`` (delivered again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cryptolake.alerts.delivery import Delivery, DeliveryPolicy, Dispatcher
from cryptolake.alerts.evaluate import Bar, Firing, Market, evaluate
from cryptolake.alerts.journal import (
    DELIVERED,
    FAILED,
    PENDING,
    Journal,
    Outcome,
    firing_from_row,
    firing_row,
)
from cryptolake.alerts.payloads import body
from cryptolake.alerts.settings import AlertsSettings
from cryptolake.common.alert_rules import AlertRules, RulesError, Webhook
from cryptolake.common.settings import LakeSettings
from cryptolake.common.tables import GOLD_CANDLES_1M

log = logging.getLogger(__name__)
_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")


class AlertsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fired = Counter(
            "cryptolake_alerts_fired",
            "Alerts fired (gold/alerts rows)",
            ["rule"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "cryptolake_alerts_deliveries",
            "Deliveries ended, by outcome (delivered, failed)",
            ["rule", "outcome"],
            registry=self.registry,
        )
        self.evaluations = Histogram(
            "cryptolake_alerts_evaluation_seconds",
            "Read of the recent candles plus rule evaluation",
            registry=self.registry,
        )
        self.gold_version = Gauge(
            "cryptolake_alerts_gold_version",
            "gold/candles_1m version last evaluated",
            registry=self.registry,
        )
        self.queued = Gauge(
            "cryptolake_alerts_deliveries_queued",
            "Deliveries queued or in flight",
            registry=self.registry,
        )


class Candles:
    """gold/candles_1m: its newest version (cheap: the log only) and its recent bars."""

    def __init__(self, lake: LakeSettings) -> None:
        self.uri = lake.table_uri(GOLD_CANDLES_1M)
        self.options = lake.storage_options() or None
        self.table: DeltaTable | None = None

    def version(self) -> int | None:
        """The newest version; None while the jobs have not created the table."""
        if self.table is None:
            try:
                self.table = DeltaTable(self.uri, storage_options=self.options)
            except TableNotFoundError:
                return None
        else:
            self.table.update_incremental()
        return self.table.version()

    def bars_since(self, since: datetime) -> dict[Market, list[Bar]]:
        """Every market's bars from ``since`` on, sorted by minute."""
        assert self.table is not None
        condition = (ds.field("trade_date") >= since.date()) & (
            ds.field("minute") >= pa.scalar(since, _TIMESTAMP)
        )
        columns = ["exchange", "symbol", "minute", "high", "low", "close"]
        frame = self.table.to_pyarrow_dataset().to_table(filter=condition, columns=columns)
        # Files delta-rs rewrote carry string_view: compare and group as plain strings.
        frame = frame.set_column(0, "exchange", pc.cast(frame["exchange"], pa.string()))
        frame = frame.set_column(1, "symbol", pc.cast(frame["symbol"], pa.string()))
        markets: dict[Market, list[Bar]] = defaultdict(list)
        for row in frame.to_pylist():
            markets[(row["exchange"], row["symbol"])].append(
                Bar(row["minute"], row["high"], row["low"], row["close"])
            )
        for bars in markets.values():
            bars.sort(key=lambda bar: bar.minute)
        return dict(markets)


@dataclass
class Tally:
    """Since the last status line."""

    evaluations: int = 0
    fired: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: {DELIVERED: 0, FAILED: 0})


class AlertsWorker:
    def __init__(
        self,
        settings: AlertsSettings,
        rules: AlertRules,
        metrics: AlertsMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.rule_by_name = {rule.name: rule for rule in rules.rules}
        self.metrics = metrics or AlertsMetrics()
        self.clock = clock
        self.candles = Candles(settings)
        self.journal = Journal(settings)
        policy = DeliveryPolicy(
            settings.delivery_timeout_s,
            settings.delivery_attempts,
            settings.delivery_backoff_s,
            settings.delivery_backoff_max_s,
        )
        self.dispatcher: Dispatcher | None = None
        self.policy = policy
        self.fired: dict[tuple[str, str, str], list[datetime]] = defaultdict(list)
        self.rule_of: dict[str, str] = {}  # alert_id → rule, for the outcome metrics
        self.outcomes: list[Outcome] = []
        self.evaluated_version: int | None = None
        self.tally = Tally()

    # --- evaluation -----------------------------------------------------------------------

    def _horizon(self) -> datetime:
        return self.clock() - timedelta(seconds=self.settings.max_alert_age_s)

    def evaluate_once(self) -> list[Firing]:
        """If gold/candles_1m has a version not yet evaluated: read the recent bars, find the
        firings and commit them as pending (blocking I/O). Returns the new firings."""
        version = self.candles.version()
        if version is None or version == self.evaluated_version:
            return []
        started = time.perf_counter()
        horizon = self._horizon()
        bars = self.candles.bars_since(horizon - timedelta(minutes=self.rules.lookback_minutes))
        firings = evaluate(self.rules, bars, horizon, self.fired)
        fired_at = self.clock()
        rows = [firing_row(f, self._destination(f.rule), fired_at) for f in firings]
        self.journal.record_firings(rows)
        for firing in firings:
            self.fired[(firing.rule, firing.exchange, firing.symbol)].append(firing.window_end)
            self.metrics.fired.labels(rule=firing.rule).inc()
            log.info(
                "fired %s: value %s, threshold %s",
                firing.alert_id,
                firing.value.normalize(),
                firing.threshold,
            )
        self.evaluated_version = version
        self.metrics.gold_version.set(version)
        self.metrics.evaluations.observe(time.perf_counter() - started)
        self.tally.evaluations += 1
        self.tally.fired += len(firings)
        return firings

    def _destination(self, rule_name: str) -> str:
        webhook = self.rule_by_name[rule_name].webhook
        try:
            where = Webhook.redacted_for(webhook.resolve())
        except RulesError:
            where = f"${webhook.url_env} (unset)"
        return f"{webhook.format}:{where}"

    def remember(self) -> list[dict[str, object]]:
        """Read gold/alerts back after a start: the recent firings (fire once, cooldowns) and
        the rows still pending (returned, to deliver again)."""
        rows = self.journal.read_since(self._horizon() - timedelta(days=1))
        for row in rows:
            key = (str(row["rule"]), str(row["exchange"]), str(row["symbol"]))
            self.fired[key].append(row["window_end"])
        pending = [row for row in rows if row["delivery"] == PENDING]
        if rows:
            log.info(
                "gold/alerts: %d recent firing(s), %d still to deliver", len(rows), len(pending)
            )
        return pending

    # --- delivery -------------------------------------------------------------------------

    def _submit(self, firing: Firing) -> None:
        assert self.dispatcher is not None
        self.rule_of[firing.alert_id] = firing.rule
        rule = self.rule_by_name.get(firing.rule)
        if rule is None:
            self._record(
                Outcome(
                    firing.alert_id, FAILED, 0, "its rule is no longer configured", self.clock()
                )
            )
            return
        try:
            url = rule.webhook.resolve()
        except RulesError as error:
            self._record(Outcome(firing.alert_id, FAILED, 0, str(error), self.clock()))
            return
        self.dispatcher.submit(url, Delivery(firing.alert_id, body(rule.webhook.format, firing)))

    def _record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.tally.outcomes[outcome.delivery] += 1
        rule = self.rule_of.pop(outcome.alert_id, "?")
        self.metrics.deliveries.labels(rule=rule, outcome=outcome.delivery).inc()

    async def flush_outcomes(self) -> None:
        outcomes, self.outcomes = self.outcomes, []
        try:
            await asyncio.to_thread(self.journal.record_outcomes, outcomes)
        except (DeltaError, OSError) as error:
            log.warning(
                "gold/alerts: cannot record %d delivery outcome(s) yet: %s", len(outcomes), error
            )
            self.outcomes[:0] = outcomes

    # --- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.dispatcher = Dispatcher(self.policy, self._record)
        log.info(
            "alerts: %d rule(s) over %s, evaluated on each new version",
            len(self.rules.rules),
            self.candles.uri,
        )
        for row in await asyncio.to_thread(self.remember):
            self._submit(firing_from_row(row))
        next_flush = time.monotonic()
        next_status = next_flush + self.settings.status_interval_s
        waiting_for_gold = False
        try:
            while not stop.is_set():
                try:
                    firings = await asyncio.to_thread(self.evaluate_once)
                except (DeltaError, OSError) as error:
                    log.warning("gold: cannot evaluate this round: %s", error)
                    firings = []
                if self.evaluated_version is None and not waiting_for_gold:
                    log.info("waiting for %s to exist (the jobs create it)", self.candles.uri)
                    waiting_for_gold = True
                for firing in firings:
                    self._submit(firing)
                now = time.monotonic()
                if now >= next_flush:
                    await self.flush_outcomes()
                    next_flush = now + self.settings.journal_flush_s
                if now >= next_status:
                    self._status()
                    next_status = now + self.settings.status_interval_s
                self.metrics.queued.set(self.dispatcher.queued)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_interval_s)
        finally:
            await self.dispatcher.close()
            await self.flush_outcomes()

    def _status(self) -> None:
        tally, self.tally = self.tally, Tally()
        assert self.dispatcher is not None
        log.info(
            "status: gold v%s, %d evaluation(s), %d fired, %d delivered, %d failed, %d queued",
            self.evaluated_version,
            tally.evaluations,
            tally.fired,
            tally.outcomes[DELIVERED],
            tally.outcomes[FAILED],
            self.dispatcher.queued,
        )
