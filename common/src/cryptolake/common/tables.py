"""The lakehouse's Delta table names (docs/design.md), relative to the table root.

The jobs write them (their Spark schemas live in ``cryptolake.jobs.tables``); the API reads them.
"""

from __future__ import annotations

from typing import Final

BRONZE_TRADES: Final = "bronze/trades"
SILVER_TRADES: Final = "silver/trades"
SILVER_QUARANTINE: Final = "silver/quarantine"
GOLD_CANDLES_1M: Final = "gold/candles_1m"
GOLD_SMA_5M: Final = "gold/sma_5m"
GOLD_STATS_HOURLY: Final = "gold/stats_hourly"
GOLD_STATS_DAILY: Final = "gold/stats_daily"
# The producer's checks of Gold against the exchanges' klines (written by the producer with
# delta-rs, not by the jobs: not in ALL_TABLES, which the jobs own and maintain).
GOLD_KLINE_CHECKS: Final = "gold/kline_checks"
# Every alert that fired, with its delivery state (written by the alerts worker with delta-rs).
GOLD_ALERTS: Final = "gold/alerts"
ALL_TABLES: Final = (
    BRONZE_TRADES, SILVER_TRADES, SILVER_QUARANTINE, GOLD_CANDLES_1M, GOLD_SMA_5M,
    GOLD_STATS_HOURLY, GOLD_STATS_DAILY,
)  # fmt: skip
