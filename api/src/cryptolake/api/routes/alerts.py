"""Alerts that fired (``gold/alerts``, written by the alerts worker), newest first."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from cryptolake.api.deps import ExchangeQuery, OptionalSymbolQuery, StoreDep, TimeQuery
from cryptolake.api.errors import GUARD_RESPONSES, ApiError, bad_parameter
from cryptolake.api.lake import StorageUnavailable, TableUnreadable
from cryptolake.api.params import parse_range
from cryptolake.api.security import require_api_key
from cryptolake.api.store import LakeStore

MAX_ALERTS = 1000
# Without a start, alerts of the last day.
DEFAULT_SPAN = timedelta(days=1)

router = APIRouter(
    prefix="/v1", tags=["alerts"], dependencies=[Depends(require_api_key)],
    responses=GUARD_RESPONSES,
)  # fmt: skip


class Alert(BaseModel):
    alert_id: str = Field(description="rule/exchange/symbol/window end: fires once")
    rule: str
    kind: Literal["volatility", "price_change", "price_cross"]
    exchange: str
    symbol: str
    window_minutes: int
    window_end: datetime
    window_end_ms: int
    value: str = Field(description="percent, or the close for price_cross; exact decimal")
    threshold: str = Field(description="exact decimal")
    fired_at: datetime
    delivery: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    delivered_at: datetime | None


class AlertsPage(BaseModel):
    alerts: list[Alert]


def alert_records(rows: pl.DataFrame) -> list[dict[str, object]]:
    """gold/alerts rows as the API's fields (decimals as exact strings), newest first."""
    if rows.is_empty():
        return []
    ordered = rows.sort(["window_end", "alert_id"], descending=[True, False])
    return (
        ordered.with_columns(
            pl.col("value").cast(pl.String),
            pl.col("threshold").cast(pl.String),
            (pl.col("window_end").dt.epoch("ms")).alias("window_end_ms"),
        )
        .select(list(Alert.model_fields))
        .to_dicts()
    )


def _select(store: LakeStore, rule: str | None, exchange: str | None, symbol: str | None,
            lo: datetime, hi: datetime, limit: int) -> list[dict[str, object]]:  # fmt: skip
    rows = store.alert_rows(rule=rule, exchange=exchange, symbol=symbol, lo=lo, hi=hi)
    return alert_records(rows)[:limit]


@router.get("/alerts", summary="Alerts that fired, newest window end first",
            response_model=AlertsPage)  # fmt: skip
async def alerts(
    store: StoreDep,
    rule: Annotated[str | None, Query(max_length=63, description="a rule's name")] = None,
    symbol: OptionalSymbolQuery = None,
    exchange: ExchangeQuery = None,
    start: TimeQuery = None,
    end: TimeQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ALERTS)] = 100,
) -> dict[str, object]:
    """Firings whose window ended in [start, end) (default: the last day), with their
    delivery state; empty while no alerts worker has written gold/alerts."""
    start_at, end_at = parse_range(start, end)
    hi = end_at or datetime.now(UTC) + timedelta(hours=1)
    lo = start_at or hi - DEFAULT_SPAN
    if hi - lo > timedelta(days=store.settings.max_range_days):
        raise bad_parameter("end", f"the range exceeds {store.settings.max_range_days} days")
    try:
        store.check_available()
        records = await asyncio.to_thread(_select, store, rule, exchange, symbol, lo, hi, limit)
    except (StorageUnavailable, TableUnreadable) as error:
        raise ApiError(503, "storage_unavailable", str(error)) from error
    return {"alerts": records}
