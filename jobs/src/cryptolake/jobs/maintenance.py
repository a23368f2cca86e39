"""OPTIMIZE and VACUUM, safe while the streams run: compaction only touches closed date
partitions (before today, UTC), so it never competes with the live appends and MERGEs, and
VACUUM keeps every file younger than the retention (default 7 days)."""

from __future__ import annotations

import logging

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from cryptolake.jobs.settings import JobSettings
from cryptolake.jobs.tables import ALL_TABLES, PARTITION_COLUMNS

log = logging.getLogger(__name__)


def run_maintenance(spark: SparkSession, settings: JobSettings) -> dict[str, dict[str, int]]:
    """Compact and vacuum every existing table; returns per-table file counts."""
    if settings.vacuum_retention_hours < 168:
        # Delta refuses short retention unless told: a reader may still need older files.
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    report: dict[str, dict[str, int]] = {}
    for name in ALL_TABLES:
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
