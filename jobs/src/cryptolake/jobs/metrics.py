"""Prometheus metrics of the streaming queries, fed by a StreamingQueryListener, and a progress
line per query in the log. Metric names are a contract: Grafana's pipeline dashboard uses them."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pyspark.sql.streaming.listener import StreamingQueryListener

log = logging.getLogger(__name__)


class JobMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batches = Counter("cryptolake_jobs_batches", "Micro-batches completed", ["query"],
                               registry=self.registry)  # fmt: skip
        self.input_rows = Counter("cryptolake_jobs_input_rows", "Rows read by micro-batches",
                                  ["query"], registry=self.registry)  # fmt: skip
        self.batch_seconds = Histogram(
            "cryptolake_jobs_batch_duration_seconds", "Micro-batch wall time", ["query"],
            buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60), registry=self.registry,
        )  # fmt: skip
        self.rule_rows = Counter("cryptolake_jobs_silver_rule_rows",
                                 "Silver rows per validation outcome (valid or reason code)",
                                 ["rule"], registry=self.registry)  # fmt: skip
        self.late_rows = Counter("cryptolake_jobs_gold_late_rows",
                                 "Trades older than the gold watermark, sent to quarantine",
                                 registry=self.registry)  # fmt: skip
        self.offsets_behind = Gauge("cryptolake_jobs_kafka_offsets_behind",
                                    "Kafka records not yet read by the query (max over partitions)",
                                    ["query"], registry=self.registry)  # fmt: skip
        self.last_batch = Gauge("cryptolake_jobs_last_batch_timestamp_seconds",
                                "When the query last finished a batch", ["query"],
                                registry=self.registry)  # fmt: skip

    def count_rules(self, rule_rows: dict[str, int]) -> None:
        """A silver batch's rows per validation outcome (``valid`` or a reason code)."""
        for rule, count in rule_rows.items():
            if count:
                self.rule_rows.labels(rule).inc(count)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)
            log.info("job metrics on http://127.0.0.1:%d/metrics", port)


@dataclass
class _QueryTally:
    batches: int = 0
    rows: int = 0
    seconds: float = 0.0


def kafka_offsets_behind(sources: Any) -> int | None:
    """The largest ``maxOffsetsBehindLatest`` that the query's Kafka sources report (Spark's
    Kafka source puts it in each SourceProgress's metrics); None for a query without one."""
    behind = [
        int(float(source.metrics["maxOffsetsBehindLatest"]))
        for source in sources
        if (source.metrics or {}).get("maxOffsetsBehindLatest") not in (None, "")
    ]
    return max(behind) if behind else None


class ProgressListener(StreamingQueryListener):
    """Counts every batch into the metrics; logs a summary per query every ``interval_s``."""

    def __init__(self, metrics: JobMetrics, interval_s: float = 10.0) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self._tallies: dict[str, _QueryTally] = {}
        self._lock = threading.Lock()
        self._next_log = time.monotonic() + interval_s

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 (Spark's listener API)
        log.info("query %s started (id %s)", event.name, event.id)

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        progress = event.progress
        name = progress.name or str(progress.id)
        rows = int(progress.numInputRows)
        seconds = progress.durationMs.get("triggerExecution", 0) / 1000
        self.metrics.batches.labels(name).inc()
        self.metrics.input_rows.labels(name).inc(rows)
        self.metrics.batch_seconds.labels(name).observe(seconds)
        self.metrics.last_batch.labels(name).set(time.time())
        behind = kafka_offsets_behind(progress.sources)
        if behind is not None:
            self.metrics.offsets_behind.labels(name).set(behind)
        with self._lock:
            tally = self._tallies.setdefault(name, _QueryTally())
            tally.batches += 1
            tally.rows += rows
            tally.seconds += seconds
            if time.monotonic() >= self._next_log:
                self._log_summary()

    def _log_summary(self) -> None:
        for name, tally in sorted(self._tallies.items()):
            if tally.batches:
                log.info("%s: %d batches, %d rows, %.2f s per batch", name, tally.batches,
                         tally.rows, tally.seconds / tally.batches)  # fmt: skip
        self._tallies.clear()
        self._next_log = time.monotonic() + self.interval_s

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception)
        else:
            log.info("query %s stopped", event.id)
