"""The table monitor: per table, row count, Delta version, latest event time and freshness."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Final

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cryptolake.jobs import tables
from cryptolake.jobs.settings import JobSettings

# The column that says how recent each table's data is: the newest trade where rows are trades
# or bars of trades, the last update for windows and periods (whose bounds lie ahead).
LATEST_COLUMN: Final = {
    tables.BRONZE_TRADES: "ingest_time",
    tables.SILVER_TRADES: "event_time",
    tables.SILVER_QUARANTINE: "quarantined_at",
    tables.GOLD_CANDLES_1M: "last_trade_time",
    tables.GOLD_SMA_5M: "updated_at",
    tables.GOLD_STATS_HOURLY: "updated_at",
    tables.GOLD_STATS_DAILY: "updated_at",
}


@dataclass
class TableStatus:
    table: str
    exists: bool
    rows: int = 0
    version: int | None = None
    latest: str | None = None
    freshness_s: float | None = None


def table_status(spark: SparkSession, settings: JobSettings, name: str) -> TableStatus:
    path = settings.table_path(name)
    if not DeltaTable.isDeltaTable(spark, path):
        return TableStatus(name, exists=False)
    version = DeltaTable.forPath(spark, path).history(1).select("version").first()
    row = (
        spark.read.format("delta").load(path)
        .agg(F.count(F.lit(1)).alias("rows"), F.max(LATEST_COLUMN[name]).alias("latest"))
        .first()
    )  # fmt: skip
    latest: dt.datetime | None = row["latest"] if row else None
    freshness = None
    if latest is not None:
        freshness = round(
            (dt.datetime.now(dt.UTC).replace(tzinfo=None) - latest).total_seconds(), 1
        )
    return TableStatus(
        table=name,
        exists=True,
        rows=int(row["rows"]) if row else 0,
        version=int(version["version"]) if version else None,
        latest=latest.isoformat(timespec="milliseconds") + "Z" if latest else None,
        freshness_s=freshness,
    )


def all_status(spark: SparkSession, settings: JobSettings) -> list[TableStatus]:
    return [table_status(spark, settings, name) for name in tables.ALL_TABLES]


def render_text(statuses: list[TableStatus]) -> str:
    lines = [f"{'table':<20} {'rows':>12} {'version':>8} {'newest (UTC)':<25} {'freshness':>10}"]
    for s in statuses:
        if not s.exists:
            lines.append(f"{s.table:<20} {'(missing)':>12}")
            continue
        fresh = "" if s.freshness_s is None else f"{s.freshness_s:.1f} s"
        lines.append(f"{s.table:<20} {s.rows:>12,} {s.version!s:>8} {s.latest or '-':<25} "
                     f"{fresh:>10}")  # fmt: skip
    return "\n".join(lines)


def render_json(statuses: list[TableStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], indent=2)
