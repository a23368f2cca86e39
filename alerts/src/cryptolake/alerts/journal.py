"""``gold/alerts``: one row per firing, its delivery state kept up to date (delta-rs MERGE on
``alert_id``; the alerts worker is its only writer).

A firing is committed (``pending``) before its delivery starts, so a restart neither fires it
again nor forgets to deliver it: rows still ``pending`` are delivered again (at least once).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from cryptolake.alerts.evaluate import Firing
from cryptolake.common.alert_rules import MAX_WINDOW_MINUTES, AlertKind
from cryptolake.common.settings import LakeSettings
from cryptolake.common.tables import GOLD_ALERTS

_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
_FIGURE: Final = pa.decimal128(38, 12)
ALERTS_SCHEMA: Final = pa.schema(
    [
        ("alert_id", pa.string()),
        ("rule", pa.string()),
        ("kind", pa.string()),
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("window_minutes", pa.int32()),
        ("window_end", _TIMESTAMP),
        ("value", _FIGURE),
        ("threshold", _FIGURE),
        ("fired_at", _TIMESTAMP),
        ("fired_date", pa.date32()),
        # The payload format and the webhook's scheme and host (never its secret path).
        ("destination", pa.string()),
        ("delivery", pa.string()),
        ("attempts", pa.int32()),
        ("last_error", pa.string()),
        ("delivered_at", _TIMESTAMP),
    ]
)
PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended."""

    alert_id: str
    delivery: str  # DELIVERED or FAILED
    attempts: int
    last_error: str | None
    finished_at: datetime


def firing_row(firing: Firing, destination: str, fired_at: datetime) -> dict[str, Any]:
    return {
        "alert_id": firing.alert_id,
        "rule": firing.rule,
        "kind": str(firing.kind),
        "exchange": firing.exchange,
        "symbol": firing.symbol,
        "window_minutes": firing.window_minutes,
        "window_end": firing.window_end,
        "value": firing.value,
        "threshold": firing.threshold,
        "fired_at": fired_at,
        "fired_date": fired_at.date(),
        "destination": destination,
        "delivery": PENDING,
        "attempts": 0,
        "last_error": None,
        "delivered_at": None,
    }


def firing_from_row(row: dict[str, Any]) -> Firing:
    """The firing a row records (to deliver a pending one after a restart)."""
    return Firing(
        row["rule"],
        AlertKind(row["kind"]),
        row["exchange"],
        row["symbol"],
        row["window_minutes"],
        row["window_end"],
        row["value"],
        row["threshold"],
    )


class Journal:
    def __init__(self, lake: LakeSettings) -> None:
        self.uri = lake.table_uri(GOLD_ALERTS)
        self.options = lake.storage_options()

    def _table(self) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri, storage_options=self.options or None)
        except TableNotFoundError:
            return None

    def record_firings(self, rows: list[dict[str, Any]]) -> None:
        """One commit adding the firings not yet in the table (a replayed firing adds nothing)."""
        if not rows:
            return
        source = pa.Table.from_pylist(rows, schema=ALERTS_SCHEMA)
        table = self._table()
        if table is None:
            write_deltalake(
                self.uri,
                source,
                mode="append",
                partition_by=["fired_date"],
                storage_options=self.options or None,
            )
            return
        (
            table.merge(source, "t.alert_id = s.alert_id", source_alias="s", target_alias="t")
            .when_not_matched_insert_all()
            .execute()
        )

    def record_outcomes(self, outcomes: list[Outcome]) -> None:
        """One commit with how these deliveries ended."""
        if not outcomes:
            return
        table = self._table()
        assert table is not None, "outcomes come after their firing's commit"
        source = pa.Table.from_pylist(
            [
                {
                    "alert_id": o.alert_id,
                    "delivery": o.delivery,
                    "attempts": o.attempts,
                    "last_error": o.last_error,
                    "delivered_at": o.finished_at if o.delivery == DELIVERED else None,
                }
                for o in outcomes
            ],
            schema=pa.schema(
                [
                    ALERTS_SCHEMA.field(name)
                    for name in ("alert_id", "delivery", "attempts", "last_error", "delivered_at")
                ]
            ),
        )
        (
            table.merge(source, "t.alert_id = s.alert_id", source_alias="s", target_alias="t")
            .when_matched_update(
                {
                    name: f"s.{name}"
                    for name in ("delivery", "attempts", "last_error", "delivered_at")
                }
            )
            .execute()
        )

    def read_since(self, since: datetime) -> list[dict[str, Any]]:
        """The rows of firings whose window ended at or after ``since`` (a restart's memory:
        what fired, what cooldowns run, what still waits for delivery)."""
        table = self._table()
        if table is None:
            return []
        # A firing happens at most a window before its end (the open minute counts).
        earliest_fired = (since - timedelta(minutes=MAX_WINDOW_MINUTES + 1)).astimezone(UTC)
        condition = (ds.field("fired_date") >= earliest_fired.date()) & (
            ds.field("window_end") >= pa.scalar(since, _TIMESTAMP)
        )
        rows: list[dict[str, Any]] = (
            table.to_pyarrow_dataset().to_table(filter=condition).to_pylist()
        )
        return rows

    def read_all(self) -> list[dict[str, Any]]:
        table = self._table()
        return [] if table is None else table.to_pyarrow_dataset().to_table().to_pylist()
