"""The lakehouse's pure core: DataFrame in, DataFrame out, the same in batch and streaming.

Sources, sinks and MERGEs live in ``streams.py`` and ``refine.py``; everything here is tested
on small batch DataFrames. Columns and rules follow the design (trade v1, Delta table
contract).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cryptolake.common.completeness import COUNTED_ID
from cryptolake.common.dumps import MAX_LINE_BYTES, MICROS_THRESHOLD, MIN_COLUMNS, TIME_DIGITS
from cryptolake.common.trade import (
    EXCHANGES,
    MAX_FUTURE_SKEW_US,
    MAX_VALUE_BYTES,
    MIN_EVENT_TIME_US,
    PRICE_PATTERN,
    PRICE_RULE,
    QTY_PATTERN,
    QTY_RULE,
    RAW_PREFIX_CHARS,
    SIDES,
    SYMBOL_PATTERN,
    TIME_PATTERN,
    TRADE_ID_PATTERN,
    RejectReason,
    exact_vwap,
)
from cryptolake.jobs.tables import PRICE, QTY, QUOTE, VOLUME, VWAP

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
DEDUP_KEY: Final = ["exchange", "symbol", "trade_id"]
CANDLE_KEY: Final = ["exchange", "symbol", "minute"]

Period = Literal["hour", "day"]


def _full(pattern: str) -> str:
    """The contract's unanchored pattern as a whole-string Java regex (``\\z``: the very end;
    ``$`` would also match before a final newline)."""
    return f"^(?:{pattern})\\z"


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


# --- backfill: dump lines → bronze records ------------------------------------------------


def _stripped(text: Column) -> Column:
    """``str.strip()`` of a field (Unicode whitespace at both ends)."""
    return F.regexp_replace(text, r"(?U)^\s+|\s+\z", "")


def dump_records(lines: DataFrame, received: datetime) -> DataFrame:
    """Lines of Binance trade dumps (``source``, ``part``, ``line_no``, ``size``, ``symbol``,
    ``line`` bytes cut past the limit) → records in bronze's shape, the ``value`` rendered as
    the producer's ``replay`` publishes it (trade v1 JSON, ``exchange=binance``, the taker's
    side), received at ``received`` (the run's start, in the broker time's place). A line the
    producer would dead-letter before rendering has a null ``value`` and ``dump_reason`` and
    ``dump_detail`` as ``replay.parse_dump_row`` words them; the values themselves are left to
    silver's rules, as for any record. Coordinates: topic ``backfill/<file>``, the archive
    member as partition, the line number as offset."""
    text = F.col("line").cast("string")
    fields = F.split(text, ",")
    columns = F.size(fields)

    # Binance writes no whitespace: one scan of the line spares six regex replacements.
    padded = text.rlike(r"(?U)\s")

    def field(index: int) -> Column:
        value = F.get(fields, index)
        return F.when(padded, _stripped(value)).otherwise(value)

    raw_time, maker = field(4), F.lower(field(5))
    digits = raw_time.rlike(_full(TIME_DIGITS))
    micros = raw_time.try_cast("long")
    r = RejectReason
    rules = [
        (r.TOO_LARGE, F.col("size") > MAX_LINE_BYTES,
         F.lit(f"the line is over {MAX_LINE_BYTES} bytes")),
        (r.BAD_ENCODING, ~F.is_valid_utf8(text), F.lit("not UTF-8")),
        (r.MISSING_FIELD, columns < MIN_COLUMNS,
         F.concat(columns.cast("string"), F.lit(f" columns, need at least {MIN_COLUMNS}"))),
        (r.BAD_TIMESTAMP, ~digits,
         F.concat(F.lit("time "), _shown(raw_time), F.lit(" is not an integer of 1-18 digits"))),
        (r.BAD_SIDE, ~maker.isin("true", "false"),
         F.concat(F.lit("is_buyer_maker "), _shown(field(5)))),
    ]  # fmt: skip
    rule = _first_match([(broken, F.lit(n)) for n, (_, broken, _) in enumerate(rules)])
    received_us = int(received.timestamp() * 1_000_000)
    trade = F.struct(
        F.lit(1).alias("schema_version"),
        F.lit("binance").alias("exchange"),
        F.col("symbol").alias("symbol"),
        field(0).alias("trade_id"),
        field(1).alias("price"),
        field(2).alias("qty"),
        # The buyer was the resting order, so the taker sold.
        F.when(maker == "true", "sell").otherwise("buy").alias("side"),
        F.when(micros >= MICROS_THRESHOLD, micros).otherwise(micros * 1000).alias("event_time"),
        F.lit(received_us).alias("ingest_time"),
    )
    at = F.lit(received)
    return lines.withColumn("_rule", rule).select(
        F.concat(F.lit("binance:"), F.col("symbol")).alias("key"),
        F.when(F.col("_rule").isNull(), F.to_json(trade).cast("binary")).alias("value"),
        F.concat(F.lit("backfill/"), F.col("source")).alias("topic"),
        F.col("part").cast("int").alias("partition"),
        F.col("line_no").alias("offset"),
        at.alias("kafka_timestamp"),
        at.alias("ingest_time"),
        F.to_date(at).alias("ingest_date"),
        _first_match([(F.col("_rule") == n, F.lit(str(code)))
                      for n, (code, _, _) in enumerate(rules)]).alias("dump_reason"),
        _first_match([(F.col("_rule") == n, detail)
                      for n, (_, _, detail) in enumerate(rules)]).alias("dump_detail"),
        F.when(F.col("_rule").isNotNull(),
               F.substring(F.make_valid_utf8(text), 1, RAW_PREFIX_CHARS)).alias("raw_value"),
    )  # fmt: skip


def dump_rejects(records: DataFrame, parsed: T.StructType) -> DataFrame:
    """The lines ``dump_records`` turned down as rows of ``parsed`` (``parse_trades``' output
    schema), so refine's writer quarantines them with silver's rejects."""
    known = {
        "kafka_topic": F.col("topic"), "kafka_partition": F.col("partition"),
        "kafka_offset": F.col("offset"), "kafka_timestamp": F.col("kafka_timestamp"),
        "raw_value": F.col("raw_value"), "ingest_date": F.col("ingest_date"),
        "reason": F.col("dump_reason"), "detail": F.col("dump_detail"),
    }  # fmt: skip
    return records.where(F.col("dump_reason").isNotNull()).select(
        *(known.get(f.name, F.lit(None)).cast(f.dataType).alias(f.name) for f in parsed.fields)
    )


# --- silver -----------------------------------------------------------------------------


def _is_json_string(raw: Column, field: str) -> Column:
    """The field's JSON value is a quoted string (from_json reads every JSON type as text).
    In compact JSON (what the producer writes) the character after the first ``"field":`` says
    it, found by plain substring search; the regex, which allows whitespace, runs only when
    that key is missing or followed by whitespace (regex scans cost a quarter of silver's CPU).
    An unescaped ``"field":`` can only be a key (quotes inside strings are escaped)."""
    key = f'"{field}":'
    at = F.instr(raw, key)
    after = F.substr(raw, at + len(key), F.lit(1))
    return (
        F.when(at == 0, raw.rlike(rf'"{field}"\s*:\s*"'))
        .when(after == F.lit('"'), F.lit(True))
        .when(~after.isin(" ", "\t", "\n", "\r"), F.lit(False))
        .otherwise(raw.rlike(rf'"{field}"\s*:\s*"'))
    )


def _shown(text: Column) -> Column:
    """A field's text as quoted in a detail (a bounded prefix)."""
    return F.concat(F.lit("'"), F.substring(text, 1, 80), F.lit("'"))


# Rules about a field's own value; the fast path checks these, the rendering all the others.
_VALUE_REASONS: Final = (
    RejectReason.BAD_EXCHANGE, RejectReason.BAD_SYMBOL, RejectReason.BAD_TRADE_ID,
    RejectReason.BAD_PRICE, RejectReason.BAD_QTY, RejectReason.BAD_SIDE,
    RejectReason.BAD_TIMESTAMP,
)  # fmt: skip


def _canonical_and_valid(
    t: dict[str, Column], *, raw: Column, rules: list[tuple[RejectReason, Column, Column]]
) -> Column:
    """The fast path for what our producer writes. A value equal, byte for byte, to the compact
    rendering of the fields from_json read (contract order, strings quoted, numbers bare) has
    every field present, of the right JSON type, without escapes or spaces; then only the
    fields' own values are left to check (``_VALUE_REASONS``' rules, on short strings).
    Anything else goes through every rule in order (same verdicts; whole-value regexes cost
    3 µs a row)."""
    quoted = {"exchange", "symbol", "trade_id", "price", "qty", "side"}
    rendering = F.concat(
        F.lit("{"),
        *(
            part
            for index, name in enumerate(TRADE_FIELDS)
            for part in (
                F.lit(("," if index else "") + f'"{name}":' + ('"' if name in quoted else "")),
                t[name],
                F.lit('"' if name in quoted else ""),
            )
        ),
        F.lit("}"),
    )
    valid = (
        (raw == rendering)
        & (t["schema_version"] == "1")
        & t["event_time"].rlike(_full(TIME_PATTERN))
        & t["ingest_time"].rlike(_full(TIME_PATTERN))
    )
    for reason, broken, _ in rules:
        if reason in _VALUE_REASONS:
            valid = valid & F.coalesce(~broken, F.lit(False))  # unknown counts as broken
    return valid


def _rules(
    t: dict[str, Column],
    *,
    raw: Column,
    size: Column,
    utf8: Column,
    broker_us: Column,
    skew_us: int,
) -> list[tuple[RejectReason, Column, Column]]:
    """(reason, the row breaks the rule, detail) in the order they are checked; the first rule
    a row breaks is its reason. Conditions only compare text (regex, membership) or try_cast
    values, so no row's content can make one raise."""
    missing = [name for name in TRADE_FIELDS if name != "schema_version"]
    missing_names = F.concat_ws(", ", *(F.when(t[name].isNull(), F.lit(name)) for name in missing))

    def json_integer(field: str) -> Column:
        return t[field].rlike(_full(TIME_PATTERN)) & ~_is_json_string(raw, field)

    def time_out_of_range(field: str) -> tuple[Column, Column]:
        micros = t[field].try_cast("long")
        broken = (micros < MIN_EVENT_TIME_US) | (micros > broker_us + skew_us)
        detail = F.concat(
            F.lit(f"{field} "), t[field],
            F.lit(f" is before 2010 or more than {skew_us // 1_000_000} s ahead of the broker's "
                  "append time "), broker_us.cast("string"),
        )  # fmt: skip
        return broken, detail

    def decimal_rule(field: str, pattern: str) -> Column:
        return ~t[field].rlike(_full(pattern)) | (t[field].try_cast("decimal(38,10)") <= 0)

    blank = t["schema_version"].isNull() & raw.rlike(r"^\s*$")
    event_broken, event_detail = time_out_of_range("event_time")
    ingest_broken, ingest_detail = time_out_of_range("ingest_time")
    r = RejectReason
    return [
        (r.TOO_LARGE, size > MAX_VALUE_BYTES,
         F.concat(F.lit("value has "), size.cast("string"),
                  F.lit(f" bytes, over the limit of {MAX_VALUE_BYTES}; raw_value keeps its first "
                        f"{RAW_PREFIX_CHARS} characters (bronze keeps every byte)"))),
        (r.BAD_ENCODING, ~utf8,
         F.lit("value is not valid UTF-8; raw_value shows U+FFFD for the bad bytes (bronze "
               "keeps them)")),
        (r.MALFORMED_JSON, t[_CORRUPT].isNotNull() | blank, F.lit("value is not a JSON object")),
        (r.MISSING_FIELD, t["schema_version"].isNull(), F.lit("missing: schema_version")),
        (r.BAD_TYPE, _is_json_string(raw, "schema_version"),
         F.lit("schema_version is a JSON string, not the number 1")),
        (r.UNKNOWN_SCHEMA_VERSION, t["schema_version"] != "1",
         F.concat(F.lit("schema_version "), _shown(t["schema_version"]), F.lit(" is not 1"))),
        (r.MISSING_FIELD, F.greatest(*(t[name].isNull() for name in missing)),
         F.concat(F.lit("missing (or null): "), missing_names)),
        (r.BAD_TYPE, ~json_integer("event_time"),
         F.lit("event_time is not a JSON integer of at most 18 digits (epoch µs)")),
        (r.BAD_TYPE, ~json_integer("ingest_time"),
         F.lit("ingest_time is not a JSON integer of at most 18 digits (epoch µs)")),
        (r.BAD_TYPE, ~_is_json_string(raw, "price"),
         F.lit("price is not a JSON string (a JSON number would not be exact)")),
        (r.BAD_TYPE, ~_is_json_string(raw, "qty"),
         F.lit("qty is not a JSON string (a JSON number would not be exact)")),
        (r.BAD_TYPE, ~_is_json_string(raw, "trade_id") & ~t["trade_id"].rlike(_full("-?[0-9]+")),
         F.lit("trade_id is neither a JSON string nor a JSON integer")),
        (r.BAD_EXCHANGE, ~t["exchange"].isin(*EXCHANGES),
         F.concat(F.lit("exchange "), _shown(t["exchange"]),
                  F.lit(f" is not one of {', '.join(EXCHANGES)}"))),
        (r.BAD_SYMBOL, ~t["symbol"].rlike(_full(SYMBOL_PATTERN)),
         F.concat(F.lit("symbol "), _shown(t["symbol"]),
                  F.lit(" is not BASE-QUOTE of ASCII upper-case letters and digits"))),
        (r.BAD_TRADE_ID, ~t["trade_id"].rlike(_full(TRADE_ID_PATTERN)),
         F.concat(F.lit("trade_id "), _shown(t["trade_id"]),
                  F.lit(" is not 1-64 ASCII letters, digits or . _ : -"))),
        (r.BAD_PRICE, decimal_rule("price", PRICE_PATTERN),
         F.concat(F.lit("price "), _shown(t["price"]), F.lit(f" {PRICE_RULE}"))),
        (r.BAD_QTY, decimal_rule("qty", QTY_PATTERN),
         F.concat(F.lit("qty "), _shown(t["qty"]), F.lit(f" {QTY_RULE}"))),
        (r.BAD_SIDE, ~t["side"].isin(*SIDES),
         F.concat(F.lit("side "), _shown(t["side"]), F.lit(" is not buy or sell"))),
        (r.BAD_TIMESTAMP, event_broken, event_detail),
        (r.BAD_TIMESTAMP, ingest_broken, ingest_detail),
    ]  # fmt: skip


# Reasons silver can record (the producer's unknown_message and gold's late are not its own).
SILVER_REASONS: Final = tuple(
    r for r in RejectReason if r not in (RejectReason.UNKNOWN_MESSAGE, RejectReason.LATE)
)


def _first_match(cases: Iterable[tuple[Column, Column]]) -> Column:
    """CASE WHEN c1 THEN v1 WHEN c2 THEN v2 … END (null when none holds)."""
    result: Column | None = None
    for condition, value in cases:
        result = F.when(condition, value) if result is None else result.when(condition, value)
    assert result is not None, "no cases"
    return result


def parse_trades(
    bronze: DataFrame, *, max_future_skew_s: int = MAX_FUTURE_SKEW_US // 1_000_000
) -> DataFrame:
    """Bronze rows → typed trade columns plus ``reason``/``detail`` (null when the row is valid).

    Whatever the bytes of a record, it gets a reason or typed values, never an exception: the
    rules (``_rules``) look at text only, casts are ``try_cast`` (exact for every value the
    rules accept). Too large values are not parsed at all. Event and ingest times
    are judged against the broker's append time (the Kafka timestamp), which no producer can
    set, not against the record's own ``ingest_time``.
    """
    value = F.col("value")
    text = value.cast("string")
    size = F.octet_length(value)
    # Kafka stamps every record. No current_timestamp() fallback: its value is a literal in the
    # generated code, so each micro-batch would compile the whole parse anew (seconds).
    broker_us = F.unix_micros(F.col("kafka_timestamp"))
    parsed = bronze.select(
        text.alias("_text"),
        size.alias("_size"),
        broker_us.alias("_broker_us"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("kafka_timestamp"),
        F.col("ingest_date"),
        # Invalid UTF-8 reads as a corrupt record (and is quarantined as bad_encoding first).
        F.from_json(F.when(size <= MAX_VALUE_BYTES, text), _TRADE_TEXT_SCHEMA,
                    {"columnNameOfCorruptRecord": _CORRUPT}).alias("t"),
    )  # fmt: skip
    t = {name: F.col(f"t.{name}") for name in (*TRADE_FIELDS, _CORRUPT)}
    raw, skew_us = F.col("_text"), max_future_skew_s * 1_000_000
    rules = _rules(
        t, raw=raw, size=F.col("_size"), utf8=F.is_valid_utf8(raw),
        broker_us=F.col("_broker_us"), skew_us=skew_us,
    )  # fmt: skip
    fast = _canonical_and_valid(t, raw=raw, rules=rules)
    # The number of the first broken rule (null: valid), computed once; reason and detail are
    # looked up by it. Flat CASEs (one WHEN per rule): Spark splits their generated code into
    # small methods, where nested ones made one method too large for the JIT.
    with_rule = parsed.withColumn(
        "_rule",
        _first_match([(fast, F.lit(None).cast("int")),
                      *((broken, F.lit(n)) for n, (_, broken, _) in enumerate(rules, start=1))]),
    )  # fmt: skip
    rule, nothing = F.col("_rule"), F.lit(None).cast("string")
    reason = _first_match([(rule.isNull(), nothing), *((rule == n, F.lit(str(code))) for n, (
        code, _, _) in enumerate(rules, start=1))])  # fmt: skip
    detail = _first_match([(rule.isNull(), nothing), *((rule == n, text) for n, (_, _, text) in
                                                       enumerate(rules, start=1))])  # fmt: skip
    # A quarantined value stays readable text of bounded size; bronze keeps the bytes. Valid
    # rows carry none: silver has no such column, and each shuffle or cache of a batch would
    # move the whole JSON text of every trade.
    unreadable = [n for n, (code, _, _) in enumerate(rules, start=1)
                  if code in (RejectReason.TOO_LARGE, RejectReason.BAD_ENCODING)]  # fmt: skip
    raw_value = (
        F.when(rule.isNull(), nothing)
        .when(~rule.isin(*unreadable), raw)
        .otherwise(F.substring(F.make_valid_utf8(raw), 1, RAW_PREFIX_CHARS))
    )
    event_time = F.timestamp_micros(t["event_time"].try_cast("long"))
    return with_rule.select(
        t["exchange"].alias("exchange"),
        t["symbol"].alias("symbol"),
        t["trade_id"].alias("trade_id"),
        t["price"].try_cast(PRICE).alias("price"),
        t["qty"].try_cast(QTY).alias("qty"),
        t["side"].alias("side"),
        event_time.alias("event_time"),
        F.timestamp_micros(t["ingest_time"].try_cast("long")).alias("ingest_time"),
        F.to_date(event_time).alias("trade_date"),
        F.year(event_time).alias("year"),
        F.month(event_time).alias("month"),
        F.dayofmonth(event_time).alias("day"),
        F.hour(event_time).alias("hour"),
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        raw_value.alias("raw_value"),
        "ingest_date",
        reason.alias("reason"),
        detail.alias("detail"),
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


DEDUP_COLUMN: Final = "_dedup_key"


def with_dedup_key(parsed: DataFrame) -> DataFrame:
    """Parsed rows with the key they are deduplicated by: a valid trade's (exchange, symbol,
    trade_id); a rejected row's Kafka coordinates (every rejected record is kept)."""
    valid = F.col("reason").isNull()
    key = F.when(valid, F.concat_ws("|", F.lit("trade"), *DEDUP_KEY)).otherwise(
        F.concat_ws("|", F.lit("kafka"), "kafka_topic", "kafka_partition", "kafka_offset")
    )
    # One pass with a key, no filter: a filter on ``reason`` would be pushed below the parse and
    # copy the rules' whole expression tree into it.
    return parsed.withColumn(DEDUP_COLUMN, key)


def deduplicate(parsed: DataFrame, watermark: str) -> DataFrame:
    """Parsed rows with each valid trade kept once per (exchange, symbol, trade_id); every
    rejected row passes (keyed by its Kafka coordinates), so one query writes every output
    from one parse. A stream keeps each key for ``watermark`` of Kafka time (when the
    record reached the broker), not event time: a valid trade whose event time is far behind
    the newest is never dropped here unseen: it reaches silver, and Gold upserts its bar or
    quarantines it as ``late``; so bronze = silver + quarantine + duplicates, always. Rejected
    rows have no watermark time (never dropped, never kept as state)."""
    keyed = with_dedup_key(parsed)
    if not parsed.isStreaming:
        return keyed.dropDuplicates([DEDUP_COLUMN]).drop(DEDUP_COLUMN)
    valid = F.col("reason").isNull()
    arrival = F.coalesce(F.col("kafka_timestamp"), F.col("event_time"))
    keyed = keyed.withColumn("_dedup_time", F.when(valid, arrival))
    return (
        keyed.withWatermark("_dedup_time", watermark)
        .dropDuplicatesWithinWatermark([DEDUP_COLUMN])
        .drop(DEDUP_COLUMN, "_dedup_time")
    )


# --- gold: candles ----------------------------------------------------------------------


def _trade_order(time: Column, trade_id: Column) -> Column:
    """Kline order: event time, then trade id numerically (shorter id first, then text)."""
    return F.struct(time.alias("t"), F.length(trade_id).alias("n"), trade_id.alias("id"))


def _exact_vwap(quote_volume: Decimal | None, volume: Decimal | None) -> Decimal | None:
    if quote_volume is None or volume is None or volume <= 0:
        return None
    return exact_vwap(quote_volume, volume)


# A Python UDF on bars (a handful of rows per batch): Spark's decimal division of these widths
# keeps only ~10 decimals, and rounds half-up.
_vwap_udf = F.udf(_exact_vwap, VWAP, useArrow=False)


def vwap(quote_volume: Column, volume: Column) -> Column:
    """quote volume / volume rounded half-even at VWAP_SCALE decimals, exactly."""
    return _vwap_udf(quote_volume, volume)


def _trade_bars(trades: DataFrame) -> DataFrame:
    """Each silver trade as a bar of one trade (the candle rule's unit, see ``combine_bars``)."""
    qty = F.col("qty").cast(VOLUME)
    order = _trade_order(F.col("event_time"), F.col("trade_id"))
    minute = F.date_trunc("minute", "event_time")
    return trades.select(
        "exchange", "symbol", minute.alias("minute"),
        F.col("price").alias("open"), F.col("price").alias("high"), F.col("price").alias("low"),
        F.col("price").alias("close"), qty.alias("volume"),
        # DECIMAL(19,10) * DECIMAL(18,8) = DECIMAL(38,18): exact, no scale cut.
        (F.col("price") * F.col("qty")).cast(QUOTE).alias("quote_volume"),
        F.lit(1).cast("long").alias("trades"),
        F.when(F.col("side") == "buy", qty).otherwise(F.lit(0).cast(VOLUME)).alias("buy_volume"),
        F.when(F.col("side") == "sell", qty).otherwise(F.lit(0).cast(VOLUME)).alias("sell_volume"),
        order.alias("first"), order.alias("last"),
        _id_number(F.col("trade_id")).alias("min_trade_id"),
        _id_number(F.col("trade_id")).alias("max_trade_id"),
    )  # fmt: skip


def _id_number(trade_id: Column) -> Column:
    """The trade id as a number, null if it does not count (``COUNTED_ID``)."""
    return F.when(trade_id.rlike(COUNTED_ID), trade_id.cast("long"))


def _unless_unknown(bound: Column, column: str) -> Column:
    """``bound`` of the partial bars' ``column``, or null when one of them is null (unknown)."""
    return F.when(F.count_if(F.col(column).isNull()) == 0, bound)


def combine_bars(bars: DataFrame) -> DataFrame:
    """Partial bars of one (exchange, symbol, minute) folded into the 1-minute candle: the
    candle rule, in one place. Open/close are the first/last trade by (event_time, trade_id),
    high/low the extremes, sums added exactly (quote volume null past 10^20, never cut), vwap
    = quote volume / volume half-even, the trade id bounds numeric (null when an id is not a
    number). Bars of single trades give ``candles_1m``; ``fold_bar``
    is the same rule for two bars on the driver."""
    combined = bars.groupBy(*CANDLE_KEY).agg(
        F.min_by("open", "first").alias("open"),
        F.max("high").alias("high"),
        F.min("low").alias("low"),
        F.max_by("close", "last").alias("close"),
        F.sum("volume").alias("volume"),
        F.try_sum("quote_volume").alias("quote_volume"),
        F.sum("trades").alias("trades"),
        F.sum("buy_volume").alias("buy_volume"),
        F.sum("sell_volume").alias("sell_volume"),
        F.min("first").alias("first"),
        F.max("last").alias("last"),
        _unless_unknown(F.min("min_trade_id"), "min_trade_id").alias("min_trade_id"),
        _unless_unknown(F.max("max_trade_id"), "max_trade_id").alias("max_trade_id"),
    )
    volume, quote = F.col("volume").cast(VOLUME), F.col("quote_volume").cast(QUOTE)
    return combined.select(
        *CANDLE_KEY,
        F.to_date("minute").alias("trade_date"),
        *(F.col(name).cast(PRICE).alias(name) for name in ("open", "high", "low", "close")),
        volume.alias("volume"),
        quote.alias("quote_volume"),
        vwap(quote, volume).alias("vwap"),
        F.col("trades").cast("long").alias("trades"),
        F.col("buy_volume").cast(VOLUME).alias("buy_volume"),
        F.col("sell_volume").cast(VOLUME).alias("sell_volume"),
        F.col("first.t").alias("first_trade_time"),
        F.col("first.id").alias("first_trade_id"),
        F.col("last.t").alias("last_trade_time"),
        F.col("last.id").alias("last_trade_id"),
        F.col("min_trade_id").cast("long").alias("min_trade_id"),
        F.col("max_trade_id").cast("long").alias("max_trade_id"),
        # Decided by the writer, which sees the neighbouring bars: ``mark_complete``.
        F.lit(None).cast("boolean").alias("complete"),
        F.current_timestamp().alias("updated_at"),
    )


def candles_1m(trades: DataFrame) -> DataFrame:
    """Silver trades → 1-minute bars per (exchange, symbol): a trade at t belongs to
    [floor(t), floor(t) + 60 s); see ``combine_bars`` for every column."""
    return combine_bars(_trade_bars(trades))


# Sums at or past this are null in Spark's try_sum over a DECIMAL(38, 18): 20 integer digits.
_QUOTE_LIMIT: Final = Decimal(10) ** (QUOTE.precision - QUOTE.scale)


def fold_bar(stored: dict[str, Any] | None, increment: dict[str, Any]) -> dict[str, Any]:
    """A stored candle (None: the minute is new) with a batch's bar of the same minute folded
    in, on the driver (refine keeps the open minutes' bars), by the rule of ``combine_bars``:
    open and close of the first and last trade by (time, id length, id), extremes, exact
    sums, quote volume null past its type, vwap half-even. Bars are dicts of candle columns."""
    if stored is None:
        return {**increment, "vwap": _exact_vwap(increment["quote_volume"], increment["volume"])}

    def order(bar: dict[str, Any], end: str) -> tuple[Any, int, str]:
        trade_id = bar[f"{end}_trade_id"]
        return (bar[f"{end}_trade_time"], len(trade_id), trade_id)

    first = min(stored, increment, key=lambda bar: order(bar, "first"))
    last = max(stored, increment, key=lambda bar: order(bar, "last"))
    quote = None
    if stored["quote_volume"] is not None and increment["quote_volume"] is not None:
        quote = stored["quote_volume"] + increment["quote_volume"]
        quote = quote if abs(quote) < _QUOTE_LIMIT else None
    volume = stored["volume"] + increment["volume"]
    return {
        **increment,
        "open": first["open"],
        "high": max(stored["high"], increment["high"]),
        "low": min(stored["low"], increment["low"]),
        "close": last["close"],
        "volume": volume,
        "quote_volume": quote,
        "vwap": _exact_vwap(quote, volume),
        "trades": stored["trades"] + increment["trades"],
        "buy_volume": stored["buy_volume"] + increment["buy_volume"],
        "sell_volume": stored["sell_volume"] + increment["sell_volume"],
        "first_trade_time": first["first_trade_time"],
        "first_trade_id": first["first_trade_id"],
        "last_trade_time": last["last_trade_time"],
        "last_trade_id": last["last_trade_id"],
        "min_trade_id": _known(min, stored["min_trade_id"], increment["min_trade_id"]),
        "max_trade_id": _known(max, stored["max_trade_id"], increment["max_trade_id"]),
        "complete": None,
    }


def _known(bound: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else bound(a, b)


# Validated exchanges and symbols hold no "|".
MARKET_SEPARATOR: Final = "|"


def market_id(exchange: str, symbol: str) -> str:
    """One string per market (``market_key`` computes the same in a DataFrame)."""
    return f"{exchange}{MARKET_SEPARATOR}{symbol}"


def market_key(exchange: Column, symbol: Column) -> Column:
    return F.concat_ws(MARKET_SEPARATOR, exchange, symbol)


def _market_watermark(watermarks: dict[str, int]) -> Column:
    """This row's market's watermark in µs (null: the market is new, nothing is late)."""
    if not watermarks:
        return F.lit(None).cast("long")
    lookup = F.create_map(*(F.lit(v) for pair in watermarks.items() for v in pair))
    return F.element_at(lookup, market_key(F.col("exchange"), F.col("symbol")))


def _on_time(watermarks: dict[str, int]) -> Column:
    """Gold's lateness test, per market: at or after the market's watermark (its newest trade
    minus the allowed delay). One market's clock never makes another's trades late."""
    watermark = _market_watermark(watermarks)
    return watermark.isNull() | (F.unix_micros("event_time") >= watermark)


def split_late(trades: DataFrame, watermarks: dict[str, int]) -> tuple[DataFrame, DataFrame]:
    """(on time, late), judged per (exchange, symbol) by ``watermarks`` (market key → µs)."""
    on_time = _on_time(watermarks)
    return trades.where(on_time), trades.where(~on_time)


def batch_summary(parsed: DataFrame, watermarks: dict[str, int]) -> DataFrame:
    """One pass over a refine batch, everything it needs to know before writing: per outcome
    (``reason``, null when valid) the rows; for valid rows, per (exchange, symbol), also the
    newest event time (µs), the late trades and the first and last minute of the on-time ones
    (null when all are late). Rejected rows are grouped by reason alone (their exchange and
    symbol are whatever text came)."""
    valid = F.col("reason").isNull()
    on_time = valid & _on_time(watermarks)
    minute = F.date_trunc("minute", "event_time")
    return parsed.groupBy(
        "reason",
        F.when(valid, F.col("exchange")).alias("exchange"),
        F.when(valid, F.col("symbol")).alias("symbol"),
    ).agg(
        F.count(F.lit(1)).alias("rows"),
        F.unix_micros(F.max(F.when(valid, F.col("event_time")))).alias("newest"),
        F.count(F.when(valid & ~on_time, 1)).alias("late"),
        F.min(F.when(on_time, minute)).alias("lo"),
        F.max(F.when(on_time, minute)).alias("hi"),
    )


def late_rows(late: DataFrame, watermarks: dict[str, int]) -> DataFrame:
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
            F.lit("event_time before the gold watermark of its market "),
            F.timestamp_micros(_market_watermark(watermarks)).cast("string"),
        ).alias("detail"),
        F.lit("gold").alias("layer"),
        F.current_timestamp().alias("quarantined_at"),
        F.to_date("ingest_time").alias("ingest_date"),
    )


# --- gold: indicators and period statistics ----------------------------------------------


def sma_5m(candles: DataFrame) -> DataFrame:
    """5-minute simple moving average of the 1-minute closes (Spark's decimal mean: half-up
    at 14 decimals), sliding by 1 minute, with the window's exact vwap. A window is
    [window_start, window_end)."""
    windows = candles.groupBy(
        "exchange", "symbol", F.window("minute", "5 minutes", "1 minute").alias("w")
    ).agg(
        F.avg("close").alias("sma"),
        F.try_sum("quote_volume").alias("quote_volume"),
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
        F.col("sma").cast(VWAP).alias("sma"),
        vwap(F.col("quote_volume").cast(QUOTE), F.col("volume").cast(VOLUME)).alias("vwap"),
        F.col("bars").cast("int").alias("bars"),
        F.col("trades").cast("long").alias("trades"),
        F.current_timestamp().alias("updated_at"),
    )


# (close - open) / open * 100 of two prices: at most 10^21, 14 decimals (Spark's division).
CHANGE_PCT: Final = T.DecimalType(38, 14)


def period_stats(candles: DataFrame, period: Period) -> DataFrame:
    """Hourly or daily open, close, high, low, % change, volume and vwap from 1-minute bars."""
    start = F.date_trunc(period, "minute")
    stats = candles.groupBy("exchange", "symbol", start.alias("period_start")).agg(
        F.min_by("open", "minute").alias("open"),
        F.max_by("close", "minute").alias("close"),
        F.max("high").alias("high"),
        F.min("low").alias("low"),
        F.sum("volume").alias("volume"),
        F.try_sum("quote_volume").alias("quote_volume"),
        F.sum("trades").alias("trades"),
    )
    length = F.expr("INTERVAL 1 HOUR") if period == "hour" else F.expr("INTERVAL 1 DAY")
    volume, quote = F.col("volume").cast(VOLUME), F.col("quote_volume").cast(QUOTE)
    return stats.select(
        "exchange",
        "symbol",
        "period_start",
        (F.col("period_start") + length).alias("period_end"),
        F.to_date("period_start").alias("trade_date"),
        F.col("open").cast(PRICE).alias("open"),
        F.col("close").cast(PRICE).alias("close"),
        F.col("high").cast(PRICE).alias("high"),
        F.col("low").cast(PRICE).alias("low"),
        ((F.col("close") - F.col("open")) / F.col("open") * 100)
        .cast(CHANGE_PCT)
        .alias("change_pct"),
        volume.alias("volume"),
        quote.alias("quote_volume"),
        vwap(quote, volume).alias("vwap"),
        F.col("trades").cast("long").alias("trades"),
        F.current_timestamp().alias("updated_at"),
    )
