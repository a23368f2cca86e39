"""OPTIMIZE and VACUUM. Compaction only touches closed date partitions (before today, UTC),
VACUUM keeps every file younger than the retention (default 7 days).

One writer per table holds for maintenance too: a streaming query maintains the tables it
writes itself, between two of its batches (``MaintenanceSchedule``), so OPTIMIZE never races
its appends and MERGEs. ``python -m cryptolake.jobs maintenance`` does every table at once,
for a lakehouse whose streams are stopped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from cryptolake.jobs.files import read_text, write_text
from cryptolake.jobs.settings import JobSettings, duration_us
from cryptolake.jobs.tables import ALL_TABLES, PARTITION_COLUMNS

log = logging.getLogger(__name__)


def maintain(
    spark: SparkSession, settings: JobSettings, names: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Compact and vacuum the named tables that exist; returns per-table file counts."""
    if settings.vacuum_retention_hours < 168:
        # Delta refuses short retention unless told: a reader may still need older files.
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    report: dict[str, dict[str, int]] = {}
    for name in names:
        path = settings.table_path(name)
        if not DeltaTable.isDeltaTable(spark, path):
            log.info("maintenance: %s does not exist yet, skipped", name)
            continue
        table = DeltaTable.forPath(spark, path)
        (date_column,) = PARTITION_COLUMNS[name]
        metrics = (
            table.optimize().where(f"{date_column} < current_date()").executeCompaction().first()
        )
        stats = metrics["metrics"] if metrics is not None else None
        added = int(stats["numFilesAdded"]) if stats else 0
        removed = int(stats["numFilesRemoved"]) if stats else 0
        table.vacuum(float(settings.vacuum_retention_hours))
        report[name] = {"files_added": added, "files_removed": removed}
        log.info("maintenance: %s compacted %d files into %d; vacuumed files older than %d h",
                 name, removed, added, settings.vacuum_retention_hours)  # fmt: skip
    return report


def run_maintenance(spark: SparkSession, settings: JobSettings) -> dict[str, dict[str, int]]:
    """Every table (the streams must be stopped: they maintain their own tables)."""
    return maintain(spark, settings, ALL_TABLES)


@dataclass
class MaintenanceSchedule:
    """A query's own tables maintained by that query, between two batches: every
    ``CRYPTOLAKE_MAINTENANCE_INTERVAL`` a round starts, and each batch after it maintains one
    table, so no batch waits for all of them. The last round's end is kept beside the query's
    checkpoint, so restarts neither repeat nor postpone it."""

    settings: JobSettings
    query: str
    tables: list[str]
    _due: float | None = field(default=None, repr=False)
    _round: list[str] = field(default_factory=list, repr=False)

    @property
    def marker(self) -> str:
        return self.settings.checkpoint_path(f"{self.query}-maintained-at")

    def run_if_due(
        self, spark: SparkSession, before: Callable[[], None] | None = None
    ) -> str | None:
        """Maintain the next table of a due round (calling ``before`` first: other writers
        of the query to wait for); returns its name (None: nothing due)."""
        if self._due is None:
            last = read_text(spark, self.marker)
            if last is None:  # a new lakehouse: nothing to compact before one interval
                last = str(time.time())
                write_text(spark, self.marker, last)
            self._due = float(last) + self._interval_s
        if not self._round and time.time() >= self._due:
            self._round = list(self.tables)
        if not self._round:
            return None
        if before is not None:
            before()
        table = self._round.pop(0)
        started = time.monotonic()
        maintain(spark, self.settings, [table])
        log.info("%s: maintained %s in %.1f s", self.query, table, time.monotonic() - started)
        if not self._round:
            now = time.time()
            write_text(spark, self.marker, str(now))
            self._due = now + self._interval_s
        return table

    @property
    def _interval_s(self) -> float:
        return duration_us(self.settings.maintenance_interval) / 1e6
