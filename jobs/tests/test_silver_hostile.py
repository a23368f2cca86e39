"""Hostile Kafka records through the real Spark parse: no record can raise, each ends in exactly
one of silver or quarantine, and valid rows come out unchanged.

The expected verdict per record comes from the trade contract's rules as Python applies them
(``cryptolake.common.trade``), so Spark's reading of the same rules (Java regex, ``from_json``
text of every JSON type, casts) is held to Python's on every generated value."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cryptolake.common.trade import (
    EXCHANGES,
    MAX_FUTURE_SKEW_US,
    MAX_VALUE_BYTES,
    MIN_EVENT_TIME_US,
    PRICE_PATTERN,
    QTY_PATTERN,
    SIDES,
    SYMBOL_PATTERN,
    TRADE_ID_PATTERN,
    RejectReason,
)
from cryptolake.jobs.tables import BRONZE_SCHEMA
from cryptolake.jobs.transforms import parse_trades, rejected_rows, valid_trades

T0 = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z in µs
BROKER_TIME = dt.datetime(2025, 1, 1, 0, 1, tzinfo=dt.UTC)  # the record's Kafka append time
BROKER_US = T0 + 60_000_000
GOOD: dict[str, Any] = {
    "schema_version": 1, "exchange": "binance", "symbol": "BTC-USDT", "trade_id": "1001",
    "price": "94000.12", "qty": "0.00150000", "side": "buy", "event_time": T0 + 1_500,
    "ingest_time": T0 + 90_000,
}  # fmt: skip

# What a broken exchange or an attacker puts in a field.
HOSTILE_TEXT = [
    "abc", "", " ", "1e5", "1E-3", "NaN", "nan", "Infinity", "-Infinity", "-0", "-0.0", "0",
    "0.000", "+1", ".5", "5.", "1.5.5", "1,5", "0x10", "1_000", "١٢٣", "\uff11\uff12\uff13", "²",
    "1\u200b", "\u200b1", "1\n", " 1", "1 ", "\t1", "1\x00", "9" * 39, "0." + "9" * 40, "1" * 10,
    "999999999.9999999999", "1000000000", "0.00000000001", "0.000000001", "0.100000000000",
    "12345678901", "9999999999.99999999", "BTC-USDT", "btc-usdt", "BTC-USDT\n", "BT\u0421-USDT",
    "BTC_USDT", "BTC-", "-USDT", "A" * 21 + "-USD", "buy", "sell", "BUY", "binance",
    "Binance", "kraken\u200b", "simulator", "1001", "x" * 64, "x" * 65, "id with space",
    "ab:cd.ef_gh-ij", "\ud7ff", "true", "null", "[]", "{}",
]  # fmt: skip
json_scalars = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=24),
    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,25})?", fullmatch=True),
)
json_values = st.one_of(
    json_scalars,
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([T0, BROKER_US + MAX_FUTURE_SKEW_US, BROKER_US + MAX_FUTURE_SKEW_US + 1,
                     MIN_EVENT_TIME_US, MIN_EVENT_TIME_US - 1, 10**18 - 1, 10**18, 1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip


def _fullmatch(pattern: str, value: Any) -> bool:
    import re  # noqa: PLC0415

    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _positive(value: str) -> bool:
    return Decimal(value) > 0


def _json_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18


def field_is_valid(field: str, value: Any) -> bool:
    """The contract's rule for one field, as a JSON value (what silver must decide)."""
    if field == "schema_version":
        return _json_integer(value) and value == 1
    if field == "exchange":
        return isinstance(value, str) and value in EXCHANGES
    if field == "symbol":
        return _fullmatch(SYMBOL_PATTERN, value)
    if field == "trade_id":
        # A JSON integer of any length is an id (1-64 characters as text), unlike a time.
        integer = isinstance(value, int) and not isinstance(value, bool)
        return _fullmatch(TRADE_ID_PATTERN, str(value) if integer else value)
    if field == "price":
        return _fullmatch(PRICE_PATTERN, value) and _positive(value)
    if field == "qty":
        return _fullmatch(QTY_PATTERN, value) and _positive(value)
    if field == "side":
        return isinstance(value, str) and value in SIDES
    if field in ("event_time", "ingest_time"):
        limit = BROKER_US + MAX_FUTURE_SKEW_US
        return _json_integer(value) and MIN_EVENT_TIME_US <= value <= limit
    raise AssertionError(field)


def bronze(spark: Any, values: list[bytes]) -> Any:
    rows = [
        (None, value, "crypto.trades.v1", 0, offset, BROKER_TIME, BROKER_TIME, dt.date(2025, 1, 1))
        for offset, value in enumerate(values)
    ]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def encode(record: Any) -> bytes:
    # json.dumps writes NaN/Infinity tokens for float specials: invalid JSON, as a broken
    # exchange bridge would send it.
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def hostile_records(draw: st.DrawFn) -> tuple[bytes, dict[str, Any] | None]:
    """(value bytes, the record when it must be valid else None)."""
    kind = draw(st.sampled_from(["field", "field", "field", "whole", "extra", "missing"]))
    if kind == "field":
        field = draw(st.sampled_from(list(GOOD)))
        value = draw(json_values)
        record = {**GOOD, field: value}
        return encode(record), record if field_is_valid(field, value) else None
    if kind == "extra":
        extra = draw(st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=3))
        record = {**GOOD, **{k: v for k, v in extra.items() if k not in GOOD}}
        return encode(record), {**GOOD}
    if kind == "missing":
        field = draw(st.sampled_from(list(GOOD)))
        return encode({k: v for k, v in GOOD.items() if k != field}), None
    good = encode(GOOD)
    whole = draw(
        st.sampled_from(["truncated", "utf8", "huge", "not_object", "garbage", "dup_price"])
    )
    if whole == "truncated":
        return good[: draw(st.integers(0, len(good) - 1))], None
    if whole == "utf8":
        at = draw(st.integers(0, len(good)))
        return good[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + good[
            at:
        ], None
    if whole == "huge":
        return encode({**GOOD, "padding": "x" * 200_000}), None
    if whole == "not_object":
        return draw(st.sampled_from([b"[1,2]", b'"trade"', b"42", b"null", b"true", b""])), None
    if whole == "dup_price":
        return good[:-1] + b', "price": "abc"}', None
    return draw(st.binary(max_size=64)), None


# Each example is one Spark job over up to 30 records; no shrinking (each step is a Spark job:
# the failing list itself is printed).
@settings(
    max_examples=20,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(records=st.lists(hostile_records(), min_size=1, max_size=30))
def test_no_record_can_raise_and_each_ends_in_exactly_one_output(spark, records) -> None:
    values = [value for value, _ in records]
    parsed = parse_trades(bronze(spark, values)).persist()
    try:
        silver = {row.kafka_offset: row for row in valid_trades(parsed).collect()}
        quarantine = {row.kafka_offset: row for row in rejected_rows(parsed).collect()}
    finally:
        parsed.unpersist()
    assert not silver.keys() & quarantine.keys()
    assert silver.keys() | quarantine.keys() == set(range(len(values)))
    for offset, (value, expected) in enumerate(records):
        if offset in quarantine:
            row = quarantine[offset]
            assert row.reason in {str(r) for r in RejectReason}
            assert row.detail, (row.reason, value)
            assert len(row.raw_value) <= MAX_VALUE_BYTES
            assert expected is None, (value, row.reason, row.detail)
            continue
        # Valid rows unchanged: every field as sent, decimals exact.
        row = silver[offset]
        assert expected is not None, value
        assert (row.exchange, row.symbol, row.side) == (
            expected["exchange"], expected["symbol"], expected["side"],
        )  # fmt: skip
        assert row.trade_id == str(expected["trade_id"])
        assert row.price == Decimal(expected["price"])
        assert row.qty == Decimal(expected["qty"])
        assert row.event_time == dt.datetime(1970, 1, 1) + dt.timedelta(
            microseconds=expected["event_time"]
        )


def test_a_perpetual_contract_is_a_symbol_of_its_own(spark) -> None:
    """BASE-QUOTE-PERP (Binance USD-M futures) passes silver beside its spot market."""
    values = [encode({**GOOD, "symbol": "BTC-USDT-PERP"}), encode(GOOD)]
    rows = valid_trades(parse_trades(bronze(spark, values))).collect()
    assert sorted(row.symbol for row in rows) == ["BTC-USDT", "BTC-USDT-PERP"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (encode({**GOOD, "price": "abc"}), RejectReason.BAD_PRICE),
        (encode({**GOOD, "qty": "abc"}), RejectReason.BAD_QTY),
        (encode({**GOOD, "event_time": "abc"}), RejectReason.BAD_TYPE),
        (encode({**GOOD, "event_time": str(T0)}), RejectReason.BAD_TYPE),
        (encode({**GOOD, "schema_version": "1"}), RejectReason.BAD_TYPE),
        (encode({**GOOD, "trade_id": True}), RejectReason.BAD_TYPE),
        (encode({**GOOD, "price": "9" * 39}), RejectReason.BAD_PRICE),
        (encode({**GOOD, "price": "1.00000000001"}), RejectReason.BAD_PRICE),  # 11 decimals
        (encode({**GOOD, "qty": "0.000000001"}), RejectReason.BAD_QTY),  # 9 decimals
        (encode({**GOOD, "exchange": "bitstamp"}), RejectReason.BAD_EXCHANGE),
        (encode({**GOOD, "symbol": "BT\u0421-USDT"}), RejectReason.BAD_SYMBOL),  # Cyrillic Es
        (encode({**GOOD, "symbol": "BTC-USDT-PERPX"}), RejectReason.BAD_SYMBOL),
        (encode({**GOOD, "symbol": "BTC-USDT-QUARTER"}), RejectReason.BAD_SYMBOL),
        (encode({**GOOD, "trade_id": "x" * 65}), RejectReason.BAD_TRADE_ID),
        (b'{"schema_version": 1, "price": "\xff"}', RejectReason.BAD_ENCODING),
        (encode({**GOOD, "padding": "x" * 200_000}), RejectReason.TOO_LARGE),
        (encode({**GOOD, "event_time": BROKER_US + MAX_FUTURE_SKEW_US + 1}),
         RejectReason.BAD_TIMESTAMP),
    ],
)  # fmt: skip
def test_each_hostile_value_gets_its_reason(spark, value, reason) -> None:
    parsed = parse_trades(bronze(spark, [value]))
    rows = rejected_rows(parsed).collect()
    assert [(r.reason, r.kafka_offset) for r in rows] == [(str(reason), 0)]
    assert rows[0].detail
    if reason is RejectReason.TOO_LARGE:
        assert str(len(value)) in rows[0].detail
        assert len(rows[0].raw_value) < 2_000
