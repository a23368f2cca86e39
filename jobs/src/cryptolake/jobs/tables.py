"""The Delta tables of the lakehouse (docs/design.md): names, schemas, partition columns."""

from __future__ import annotations

from typing import Final

from pyspark.sql import types as T

from cryptolake.common.tables import (
    ALL_TABLES,
    BRONZE_TRADES,
    GOLD_CANDLES_1M,
    GOLD_SMA_5M,
    GOLD_STATS_DAILY,
    GOLD_STATS_HOURLY,
    SILVER_QUARANTINE,
    SILVER_TRADES,
)
from cryptolake.common.trade import (
    PRICE_INTEGER_DIGITS,
    PRICE_SCALE,
    QTY_INTEGER_DIGITS,
    QTY_SCALE,
    QUOTE_SCALE,
    VWAP_SCALE,
)

__all__ = [
    "ALL_TABLES", "BRONZE_TRADES", "GOLD_CANDLES_1M", "GOLD_SMA_5M", "GOLD_STATS_DAILY",
    "GOLD_STATS_HOURLY", "SILVER_QUARANTINE", "SILVER_TRADES",
]  # fmt: skip

# Exact decimals, sized by the contract's bounds (cryptolake.common.trade): price * qty is
# DECIMAL(19,10) * DECIMAL(18,8) = DECIMAL(38,18), inside Spark's 38 digits, so no scale is cut.
PRICE: Final = T.DecimalType(PRICE_INTEGER_DIGITS + PRICE_SCALE, PRICE_SCALE)
QTY: Final = T.DecimalType(QTY_INTEGER_DIGITS + QTY_SCALE, QTY_SCALE)
# Sums of quantities and of price * qty: the widest decimals at the same scales (room for
# 10^20 maximal trades; a quote volume past 10^20 would be null, never cut).
VOLUME: Final = T.DecimalType(38, QTY_SCALE)
QUOTE: Final = T.DecimalType(38, QUOTE_SCALE)
# quote volume / volume, half-even: between the bar's low and high, so a price's integer digits.
VWAP: Final = T.DecimalType(PRICE_INTEGER_DIGITS + VWAP_SCALE, VWAP_SCALE)

BRONZE_SCHEMA: Final = T.StructType(
    [
        T.StructField("key", T.StringType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("kafka_timestamp", T.TimestampType()),
        T.StructField("ingest_time", T.TimestampType()),
        T.StructField("ingest_date", T.DateType()),
    ]
)

SILVER_SCHEMA: Final = T.StructType(
    [
        T.StructField("exchange", T.StringType(), False),
        T.StructField("symbol", T.StringType(), False),
        T.StructField("trade_id", T.StringType(), False),
        T.StructField("price", PRICE, False),
        T.StructField("qty", QTY, False),
        T.StructField("side", T.StringType(), False),
        T.StructField("event_time", T.TimestampType(), False),
        T.StructField("ingest_time", T.TimestampType(), False),
        T.StructField("trade_date", T.DateType(), False),
        T.StructField("year", T.IntegerType(), False),
        T.StructField("month", T.IntegerType(), False),
        T.StructField("day", T.IntegerType(), False),
        T.StructField("hour", T.IntegerType(), False),
        T.StructField("kafka_topic", T.StringType()),
        T.StructField("kafka_partition", T.IntegerType()),
        T.StructField("kafka_offset", T.LongType()),
    ]
)

QUARANTINE_SCHEMA: Final = T.StructType(
    [
        T.StructField("raw_value", T.StringType()),
        T.StructField("kafka_topic", T.StringType()),
        T.StructField("kafka_partition", T.IntegerType()),
        T.StructField("kafka_offset", T.LongType()),
        T.StructField("reason", T.StringType(), False),
        T.StructField("detail", T.StringType()),
        T.StructField("layer", T.StringType(), False),
        T.StructField("quarantined_at", T.TimestampType(), False),
        T.StructField("ingest_date", T.DateType(), False),
    ]
)

PARTITION_COLUMNS: Final = {
    BRONZE_TRADES: ["ingest_date"],
    SILVER_TRADES: ["trade_date"],
    SILVER_QUARANTINE: ["ingest_date"],
    GOLD_CANDLES_1M: ["trade_date"],
    GOLD_SMA_5M: ["trade_date"],
    GOLD_STATS_HOURLY: ["trade_date"],
    GOLD_STATS_DAILY: ["trade_date"],
}
