"""The lakehouse's pure core: DataFrame in, DataFrame out, the same in batch and streaming.

Sources, sinks and MERGEs live in ``streams.py``; everything here is tested on small batch
DataFrames. Columns and rules follow the shared DESIGN.md (trade v1, Delta table contract).
"""

from __future__ import annotations

from typing import Final, Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cryptolake.common.trade import EXCHANGES, MIN_EVENT_TIME_US, SIDES, RejectReason
from cryptolake.jobs.tables import DECIMAL

TRADE_FIELDS: Final = (
    "schema_version", "exchange", "symbol", "trade_id", "price", "qty", "side", "event_time",
    "ingest_time",
)  # fmt: skip
_CORRUPT = "_corrupt_record"
# Every field read as text, so the rules below classify types instead of from_json nulling them.
_TRADE_TEXT_SCHEMA: Final = T.StructType(
    [T.StructField(name, T.StringType()) for name in TRADE_FIELDS]
    + [T.StructField(_CORRUPT, T.StringType())]
)
_INTEGER = r"^-?[0-9]{1,18}$"
_DECIMAL_TEXT = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"
_SYMBOL = r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$"
# Reasons in the order they are checked; the first that applies is recorded.
SILVER_REASONS: Final = (
    RejectReason.MALFORMED_JSON, RejectReason.UNKNOWN_SCHEMA_VERSION, RejectReason.MISSING_FIELD,
    RejectReason.BAD_TYPE, RejectReason.BAD_SYMBOL, RejectReason.BAD_PRICE, RejectReason.BAD_QTY,
    RejectReason.BAD_SIDE, RejectReason.BAD_TIMESTAMP,
)  # fmt: skip
DEDUP_KEY: Final = ["exchange", "symbol", "trade_id"]
CANDLE_KEY: Final = ["exchange", "symbol", "minute"]

Period = Literal["hour", "day"]


# --- bronze -----------------------------------------------------------------------------


def bronze_from_kafka(kafka: DataFrame) -> DataFrame:
    """Kafka records as they came: value bytes untouched, key, coordinates, ingest time."""
    return kafka.select(
        F.col("key").cast("string").alias("key"),
        F.col("value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.current_timestamp().alias("ingest_time"),
    ).withColumn("ingest_date", F.to_date("ingest_time"))


# --- silver -----------------------------------------------------------------------------


def _is_json_string(raw: Column, field: str) -> Column:
    """The field's JSON value is a quoted string (from_json would turn 1.50 into "1.5").
    Compact JSON (what the producer writes) is found by a plain substring search; the regex,
    which allows whitespace, runs only when that misses (it cost a quarter of silver's CPU)."""
    return F.when(F.instr(raw, f'"{field}":"') > 0, F.lit(True)).otherwise(
        raw.rlike(rf'"{field}"\s*:\s*"')
    )


def _reject_reason(t: dict[str, Column], raw: Column, max_future_skew_us: int) -> Column:
    missing = [name for name in TRADE_FIELDS if name != "schema_version"]
    event_us = t["event_time"].cast("long")
    ingest_us = t["ingest_time"].cast("long")
    return (
        F.when(t[_CORRUPT].isNotNull() | t["schema_version"].isNull() & raw.rlike(r"^\s*$"),
               F.lit(str(RejectReason.MALFORMED_JSON)))
        .when(t["schema_version"].isNull(), F.lit(str(RejectReason.MISSING_FIELD)))
        .when(t["schema_version"] != "1", F.lit(str(RejectReason.UNKNOWN_SCHEMA_VERSION)))
        .when(F.greatest(*(t[name].isNull() for name in missing)),
              F.lit(str(RejectReason.MISSING_FIELD)))
        .when(~t["exchange"].isin(*EXCHANGES) | ~t["event_time"].rlike(_INTEGER)
              | ~t["ingest_time"].rlike(_INTEGER) | ~_is_json_string(raw, "price")
              | ~_is_json_string(raw, "qty"), F.lit(str(RejectReason.BAD_TYPE)))
        .when(~t["symbol"].rlike(_SYMBOL), F.lit(str(RejectReason.BAD_SYMBOL)))
        .when(~t["price"].rlike(_DECIMAL_TEXT) | (t["price"].cast(DECIMAL) <= 0),
              F.lit(str(RejectReason.BAD_PRICE)))
        .when(~t["qty"].rlike(_DECIMAL_TEXT) | (t["qty"].cast(DECIMAL) <= 0),
              F.lit(str(RejectReason.BAD_QTY)))
        .when(~t["side"].isin(*SIDES), F.lit(str(RejectReason.BAD_SIDE)))
        .when((event_us < MIN_EVENT_TIME_US) | (event_us > ingest_us + max_future_skew_us),
              F.lit(str(RejectReason.BAD_TIMESTAMP)))
    )  # fmt: skip


def _reject_detail(reason: Column, t: dict[str, Column]) -> Column:
    """A short human explanation next to the reason code."""
    missing = F.concat_ws(", ", *(F.when(t[name].isNull(), F.lit(name)) for name in TRADE_FIELDS))
    return (
        F.when(reason == str(RejectReason.MALFORMED_JSON), F.lit("value is not a JSON object"))
        .when(reason == str(RejectReason.MISSING_FIELD), F.concat(F.lit("missing: "), missing))
        .when(reason == str(RejectReason.UNKNOWN_SCHEMA_VERSION),
              F.concat(F.lit("schema_version "), t["schema_version"], F.lit(" is not 1")))
        .when(reason == str(RejectReason.BAD_TYPE),
              F.lit("exchange unknown, times not integers, or price/qty not JSON strings"))
        .when(reason == str(RejectReason.BAD_SYMBOL),
              F.concat(F.lit("symbol "), t["symbol"], F.lit(" is not BASE-QUOTE")))
        .when(reason == str(RejectReason.BAD_PRICE),
              F.concat(F.lit("price "), t["price"], F.lit(" is not a decimal > 0 (≤18 decimals)")))
        .when(reason == str(RejectReason.BAD_QTY),
              F.concat(F.lit("qty "), t["qty"], F.lit(" is not a decimal > 0 (≤18 decimals)")))
        .when(reason == str(RejectReason.BAD_SIDE),
              F.concat(F.lit("side "), t["side"], F.lit(" is not buy or sell")))
        .when(reason == str(RejectReason.BAD_TIMESTAMP),
              F.concat(F.lit("event_time "), t["event_time"],
                       F.lit(" is before 2010 or too far ahead of ingest_time")))
    )  # fmt: skip


def parse_trades(bronze: DataFrame, *, max_future_skew_s: int = 300) -> DataFrame:
    """Bronze rows → typed trade columns plus ``reason``/``detail`` (null when the row is valid).

    Rules (first failing wins): malformed JSON, schema version, missing field, types, symbol,
    price > 0, qty > 0, side, event time after 2010 and at most ``max_future_skew_s`` ahead of
    the producer's ingest time.
    """
    raw = F.col("value").cast("string")
    parsed = bronze.select(
        raw.alias("raw_value"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("kafka_timestamp"),
        F.col("ingest_date"),
        F.from_json(raw, _TRADE_TEXT_SCHEMA, {"columnNameOfCorruptRecord": _CORRUPT}).alias("t"),
    )
    t = {name: F.col(f"t.{name}") for name in (*TRADE_FIELDS, _CORRUPT)}
    reason = _reject_reason(t, F.col("raw_value"), max_future_skew_s * 1_000_000)
    event_time = F.timestamp_micros(t["event_time"].cast("long"))
    # The reason is computed once, then referenced by the detail (not inlined twice).
    with_reason = parsed.withColumn("reason", reason)
    t = {name: F.col(f"t.{name}") for name in (*TRADE_FIELDS, _CORRUPT)}
    return with_reason.select(
        t["exchange"].alias("exchange"),
        t["symbol"].alias("symbol"),
        t["trade_id"].alias("trade_id"),
        t["price"].cast(DECIMAL).alias("price"),
        t["qty"].cast(DECIMAL).alias("qty"),
        t["side"].alias("side"),
        event_time.alias("event_time"),
        F.timestamp_micros(t["ingest_time"].cast("long")).alias("ingest_time"),
        F.to_date(event_time).alias("trade_date"),
        F.year(event_time).alias("year"),
        F.month(event_time).alias("month"),
        F.dayofmonth(event_time).alias("day"),
        F.hour(event_time).alias("hour"),
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        "raw_value",
        "ingest_date",
        "reason",
        _reject_detail(F.col("reason"), t).alias("detail"),
    )


SILVER_COLUMNS: Final = (
    "exchange", "symbol", "trade_id", "price", "qty", "side", "event_time", "ingest_time",
    "trade_date", "year", "month", "day", "hour", "kafka_topic", "kafka_partition",
    "kafka_offset",
)  # fmt: skip


def valid_trades(parsed: DataFrame) -> DataFrame:
    return parsed.where(F.col("reason").isNull()).select(*SILVER_COLUMNS)


def rejected_rows(parsed: DataFrame, layer: str = "silver") -> DataFrame:
    """Rows that failed a rule, in the quarantine table's shape."""
    return parsed.where(F.col("reason").isNotNull()).select(
        "raw_value",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "reason",
        "detail",
        F.lit(layer).alias("layer"),
        F.current_timestamp().alias("quarantined_at"),
        "ingest_date",
    )


def reason_counts(parsed: DataFrame) -> list[Column]:
    """Per-rule counters (``DataFrame.observe``), plus ``valid``: DLT-style expectations."""
    counts = [F.count(F.when(F.col("reason") == str(r), 1)).alias(str(r)) for r in SILVER_REASONS]
    return [*counts, F.count(F.when(F.col("reason").isNull(), 1)).alias("valid")]


def deduplicate(parsed: DataFrame, watermark: str) -> DataFrame:
    """Parsed rows with each valid trade kept once per (exchange, symbol, trade_id); every
    rejected row passes (keyed by its Kafka coordinates), so one silver query writes both
    outputs from one parse. A stream keeps each key for ``watermark`` of Kafka time (when the
    record reached the broker), not event time: a valid trade whose event time is far behind
    the newest is never dropped here unseen, it goes on to gold, which upserts its bar or
    quarantines it as ``late``; so bronze = silver + quarantine + duplicates, always. Rejected
    rows have no watermark time (never dropped, never kept as state)."""
    valid = F.col("reason").isNull()
    if not parsed.isStreaming:
        return parsed.where(valid).dropDuplicates(DEDUP_KEY).unionByName(parsed.where(~valid))
    key = F.when(valid, F.concat_ws("|", F.lit("trade"), *DEDUP_KEY)).otherwise(
        F.concat_ws("|", F.lit("kafka"), "kafka_topic", "kafka_partition", "kafka_offset")
    )
    arrival = F.coalesce(F.col("kafka_timestamp"), F.col("event_time"))
    keyed = parsed.withColumn("_dedup_key", key).withColumn("_dedup_time", F.when(valid, arrival))
    return (
        keyed.withWatermark("_dedup_time", watermark)
        .dropDuplicatesWithinWatermark(["_dedup_key"])
        .drop("_dedup_key", "_dedup_time")
    )


# --- gold: candles ----------------------------------------------------------------------


def _trade_order(time: Column, trade_id: Column) -> Column:
    """Kline order: event time, then trade id numerically (shorter id first, then text)."""
    return F.struct(time.alias("t"), F.length(trade_id).alias("n"), trade_id.alias("id"))


def _vwap(quote_volume: Column, volume: Column) -> Column:
    """quote volume / volume. In doubles (~15 significant digits): a DECIMAL(38,18) quotient
    would keep only 6 decimals (Spark trims the scale to fit 38 digits)."""
    return (quote_volume.cast("double") / volume.cast("double")).cast(DECIMAL)


def candles_1m(trades: DataFrame) -> DataFrame:
    """Silver trades → 1-minute bars per (exchange, symbol): a trade at t belongs to
    [floor(t), floor(t) + 60 s); open/close are the first/last trade by (event_time, trade_id)."""
    order = _trade_order(F.col("event_time"), F.col("trade_id"))
    bars = trades.groupBy(
        "exchange", "symbol", F.date_trunc("minute", "event_time").alias("minute")
    ).agg(
        F.min_by("price", order).alias("open"),
        F.max("price").alias("high"),
        F.min("price").alias("low"),
        F.max_by("price", order).alias("close"),
        F.sum("qty").alias("volume"),
        # Exact to 6 decimals of the quote asset: Spark trims a 38-digit product's scale to 6.
        F.sum(F.col("price") * F.col("qty")).alias("quote_volume"),
        F.count(F.lit(1)).alias("trades"),
        F.sum(F.when(F.col("side") == "buy", F.col("qty")).otherwise(F.lit(0))).alias("buy_volume"),
        F.sum(F.when(F.col("side") == "sell", F.col("qty")).otherwise(F.lit(0))).alias(
            "sell_volume"
        ),
        F.min(order).alias("first"),
        F.max(order).alias("last"),
    )
    return bars.select(
        "exchange",
        "symbol",
        "minute",
        F.to_date("minute").alias("trade_date"),
        F.col("open").cast(DECIMAL).alias("open"),
        F.col("high").cast(DECIMAL).alias("high"),
        F.col("low").cast(DECIMAL).alias("low"),
        F.col("close").cast(DECIMAL).alias("close"),
        F.col("volume").cast(DECIMAL).alias("volume"),
        F.col("quote_volume").cast(DECIMAL).alias("quote_volume"),
        _vwap(F.col("quote_volume"), F.col("volume")).alias("vwap"),
        F.col("trades").cast("long").alias("trades"),
        F.col("buy_volume").cast(DECIMAL).alias("buy_volume"),
        F.col("sell_volume").cast(DECIMAL).alias("sell_volume"),
        F.col("first.t").alias("first_trade_time"),
        F.col("first.id").alias("first_trade_id"),
        F.col("last.t").alias("last_trade_time"),
        F.col("last.id").alias("last_trade_id"),
        F.current_timestamp().alias("updated_at"),
    )


def _earlier(prefix_a: str, prefix_b: str) -> str:
    """SQL: bar ``a``'s first trade comes before bar ``b``'s."""
    return (
        f"struct({prefix_a}.first_trade_time, length({prefix_a}.first_trade_id), "
        f"{prefix_a}.first_trade_id) < struct({prefix_b}.first_trade_time, "
        f"length({prefix_b}.first_trade_id), {prefix_b}.first_trade_id)"
    )


def _later(prefix_a: str, prefix_b: str) -> str:
    return (
        f"struct({prefix_a}.last_trade_time, length({prefix_a}.last_trade_id), "
        f"{prefix_a}.last_trade_id) > struct({prefix_b}.last_trade_time, "
        f"length({prefix_b}.last_trade_id), {prefix_b}.last_trade_id)"
    )


def candle_merge_set(target: str = "t", source: str = "s") -> dict[str, str | Column]:
    """SQL assignments that fold bar ``source`` (new trades of a minute) into bar ``target``:
    open/close by trade order, high/low extremes, sums added, vwap re-weighted."""
    t, s = target, source
    first_from_s, last_from_s = _earlier(s, t), _later(s, t)

    def add(column: str) -> str:
        # (37,18) + (37,18) is (38,18); (38,18) + (38,18) would lose a decimal to (38,17).
        return f"CAST({t}.{column} AS DECIMAL(37,18)) + CAST({s}.{column} AS DECIMAL(37,18))"

    volume, quote = add("volume"), add("quote_volume")
    return {
        "open": f"CASE WHEN {first_from_s} THEN {s}.open ELSE {t}.open END",
        "first_trade_time": f"CASE WHEN {first_from_s} THEN {s}.first_trade_time "
        f"ELSE {t}.first_trade_time END",
        "first_trade_id": f"CASE WHEN {first_from_s} THEN {s}.first_trade_id "
        f"ELSE {t}.first_trade_id END",
        "close": f"CASE WHEN {last_from_s} THEN {s}.close ELSE {t}.close END",
        "last_trade_time": f"CASE WHEN {last_from_s} THEN {s}.last_trade_time "
        f"ELSE {t}.last_trade_time END",
        "last_trade_id": f"CASE WHEN {last_from_s} THEN {s}.last_trade_id "
        f"ELSE {t}.last_trade_id END",
        "high": f"greatest({t}.high, {s}.high)",
        "low": f"least({t}.low, {s}.low)",
        "volume": volume,
        "quote_volume": quote,
        "vwap": f"CAST(CAST({quote} AS DOUBLE) / CAST({volume} AS DOUBLE) AS DECIMAL(38,18))",
        "trades": f"{t}.trades + {s}.trades",
        "buy_volume": add("buy_volume"),
        "sell_volume": add("sell_volume"),
        "updated_at": f"{s}.updated_at",
    }


def fold_candles(existing: DataFrame, increment: DataFrame) -> DataFrame:
    """What MERGE does to the candles table, as a DataFrame function (used to test it and to
    fold several increments of one minute inside a batch)."""
    t, s = existing.alias("t"), increment.alias("s")
    joined = t.join(s, on=CANDLE_KEY, how="full_outer")
    columns = []
    merge = candle_merge_set()
    for name in existing.columns:
        if name in CANDLE_KEY:
            columns.append(F.col(name))
            continue
        assignment = merge.get(name, f"t.{name}")
        both = F.expr(assignment) if isinstance(assignment, str) else assignment
        columns.append(
            F.when(F.col("s.first_trade_id").isNull(), F.col(f"t.{name}"))
            .when(F.col("t.first_trade_id").isNull(), F.col(f"s.{name}"))
            .otherwise(both.cast(existing.schema[name].dataType))
            .alias(name)
        )
    return joined.select(*columns)


def split_late(trades: DataFrame, watermark_us: int | None) -> tuple[DataFrame, DataFrame]:
    """(on time, late): late trades are older than the watermark (newest seen minus delay)."""
    if watermark_us is None:
        return trades, trades.limit(0)
    on_time = _on_time(watermark_us)
    return trades.where(on_time), trades.where(~on_time)


def _on_time(watermark_us: int | None) -> Column:
    """Gold's lateness test: at or after the watermark (every trade when there is none yet)."""
    if watermark_us is None:
        return F.lit(True)
    return F.col("event_time") >= F.timestamp_micros(F.lit(watermark_us))


def market_summary(trades: DataFrame, watermark_us: int | None) -> DataFrame:
    """Per (exchange, symbol): trades, newest event time (µs), late trades, and the first and
    last minute of the on-time ones (null when all are late): everything gold needs to know
    of a batch before merging it, in one pass."""
    on_time = _on_time(watermark_us)
    minute = F.date_trunc("minute", "event_time")
    return trades.groupBy("exchange", "symbol").agg(
        F.count(F.lit(1)).alias("rows"),
        F.unix_micros(F.max("event_time")).alias("newest"),
        F.count(F.when(~on_time, 1)).alias("late"),
        F.min(F.when(on_time, minute)).alias("lo"),
        F.max(F.when(on_time, minute)).alias("hi"),
    )


def late_rows(late: DataFrame, watermark_us: int) -> DataFrame:
    """Late silver trades in the quarantine table's shape (reason ``late``)."""
    cols = [
        c for c in SILVER_COLUMNS if c not in ("kafka_topic", "kafka_partition", "kafka_offset")
    ]
    return late.select(
        F.to_json(F.struct(*cols)).alias("raw_value"),
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        F.lit(str(RejectReason.LATE)).alias("reason"),
        F.concat(
            F.lit("event_time before the gold watermark "),
            F.timestamp_micros(F.lit(watermark_us)).cast("string"),
        ).alias("detail"),
        F.lit("gold").alias("layer"),
        F.current_timestamp().alias("quarantined_at"),
        F.to_date("ingest_time").alias("ingest_date"),
    )


# --- gold: indicators and period statistics ----------------------------------------------


def sma_5m(candles: DataFrame) -> DataFrame:
    """5-minute simple moving average of the 1-minute closes, sliding by 1 minute, with the
    window's volume-weighted average price. A window is [window_start, window_end)."""
    windows = candles.groupBy(
        "exchange", "symbol", F.window("minute", "5 minutes", "1 minute").alias("w")
    ).agg(
        F.avg("close").alias("sma"),
        F.sum("quote_volume").alias("quote_volume"),
        F.sum("volume").alias("volume"),
        F.count(F.lit(1)).alias("bars"),
        F.sum("trades").alias("trades"),
    )
    return windows.select(
        "exchange",
        "symbol",
        F.col("w.start").alias("window_start"),
        F.col("w.end").alias("window_end"),
        F.to_date("w.start").alias("trade_date"),
        F.col("sma").cast(DECIMAL).alias("sma"),
        _vwap(F.col("quote_volume"), F.col("volume")).alias("vwap"),
        F.col("bars").cast("int").alias("bars"),
        F.col("trades").cast("long").alias("trades"),
        F.current_timestamp().alias("updated_at"),
    )


def period_stats(candles: DataFrame, period: Period) -> DataFrame:
    """Hourly or daily open, close, high, low, % change, volume and vwap from 1-minute bars."""
    start = F.date_trunc(period, "minute")
    stats = candles.groupBy("exchange", "symbol", start.alias("period_start")).agg(
        F.min_by("open", "minute").alias("open"),
        F.max_by("close", "minute").alias("close"),
        F.max("high").alias("high"),
        F.min("low").alias("low"),
        F.sum("volume").alias("volume"),
        F.sum("quote_volume").alias("quote_volume"),
        F.sum("trades").alias("trades"),
    )
    length = F.expr("INTERVAL 1 HOUR") if period == "hour" else F.expr("INTERVAL 1 DAY")
    return stats.select(
        "exchange",
        "symbol",
        "period_start",
        (F.col("period_start") + length).alias("period_end"),
        F.to_date("period_start").alias("trade_date"),
        F.col("open").cast(DECIMAL).alias("open"),
        F.col("close").cast(DECIMAL).alias("close"),
        F.col("high").cast(DECIMAL).alias("high"),
        F.col("low").cast(DECIMAL).alias("low"),
        ((F.col("close") - F.col("open")) / F.col("open") * 100).cast(DECIMAL).alias("change_pct"),
        F.col("volume").cast(DECIMAL).alias("volume"),
        F.col("quote_volume").cast(DECIMAL).alias("quote_volume"),
        _vwap(F.col("quote_volume"), F.col("volume")).alias("vwap"),
        F.col("trades").cast("long").alias("trades"),
        F.current_timestamp().alias("updated_at"),
    )
