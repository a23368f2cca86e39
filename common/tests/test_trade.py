import re
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptolake.common.trade import (
    MIN_EVENT_TIME_US,
    QTY_PATTERN,
    VWAP_SCALE,
    DeadLetter,
    RejectReason,
    Trade,
    TradeRejected,
    canonical_decimal,
    exact_vwap,
    make_trade,
)

NOW = 1_700_000_000_000_000
GOOD = dict(
    exchange="binance",
    symbol="BTC-USDT",
    trade_id="12345",
    price="42000.10",
    qty="0.00100000",
    side="buy",
    event_time=NOW - 1_000,
    ingest_time=NOW,
)


def test_make_trade_keeps_exchange_strings_exactly():
    trade = make_trade(**GOOD)
    assert trade.price == "42000.10"
    assert trade.qty == "0.00100000"
    assert trade.key == "binance:BTC-USDT"


def test_json_round_trip_is_the_v1_contract():
    trade = make_trade(**GOOD)
    assert Trade.from_json(trade.to_json()) == trade
    assert trade.to_dict() == {
        "schema_version": 1,
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "trade_id": "12345",
        "price": "42000.10",
        "qty": "0.00100000",
        "side": "buy",
        "event_time": NOW - 1_000,
        "ingest_time": NOW,
    }


def test_a_perpetual_contract_is_a_canonical_symbol():
    assert make_trade(**{**GOOD, "symbol": "BTC-USDT-PERP"}).symbol == "BTC-USDT-PERP"


def test_integer_trade_ids_become_strings():
    assert make_trade(**{**GOOD, "trade_id": 7}).trade_id == "7"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("exchange", "bitstamp", RejectReason.BAD_EXCHANGE),
        ("exchange", None, RejectReason.BAD_EXCHANGE),
        ("symbol", "btcusdt", RejectReason.BAD_SYMBOL),
        ("symbol", "BTC-USDT-perp", RejectReason.BAD_SYMBOL),
        ("symbol", "BTC-USDT-PERP-PERP", RejectReason.BAD_SYMBOL),
        ("trade_id", "", RejectReason.BAD_TRADE_ID),
        ("trade_id", 1.5, RejectReason.BAD_TYPE),
        ("trade_id", True, RejectReason.BAD_TYPE),
        ("price", "-1", RejectReason.BAD_PRICE),
        ("price", "0.000", RejectReason.BAD_PRICE),
        ("price", 42000.1, RejectReason.BAD_PRICE),
        ("price", "1e5", RejectReason.BAD_PRICE),
        ("price", "NaN", RejectReason.BAD_PRICE),
        ("qty", "0", RejectReason.BAD_QTY),
        ("side", "BUY", RejectReason.BAD_SIDE),
        ("event_time", MIN_EVENT_TIME_US - 1, RejectReason.BAD_TIMESTAMP),
        ("event_time", NOW + 301_000_000, RejectReason.BAD_TIMESTAMP),
        ("event_time", "1700000000", RejectReason.BAD_TYPE),
        ("event_time", True, RejectReason.BAD_TYPE),
    ],
)
def test_bad_fields_are_rejected_with_a_reason(field, value, reason):
    with pytest.raises(TradeRejected) as caught:
        make_trade(**{**GOOD, field: value})
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", RejectReason.MALFORMED_JSON),
        (b"[1, 2]", RejectReason.BAD_TYPE),
        (b'{"schema_version": 2}', RejectReason.UNKNOWN_SCHEMA_VERSION),
        (b'{"schema_version": 1, "exchange": "binance"}', RejectReason.MISSING_FIELD),
    ],
)
def test_from_json_classifies_bad_values(value, reason):
    with pytest.raises(TradeRejected) as caught:
        Trade.from_json(value)
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", "1"),
        ("0.1", "0.1"),
        ("00.10", "00.10"),
        ("0", None),
        ("0.0", None),
        ("-1", None),
        (".5", None),
        ("1.", None),
        ("1e3", None),
        (" 1", None),
        ("", None),
    ],
)
def test_canonical_decimal(text, expected):
    assert canonical_decimal(text) == expected


# --- Numeric bounds: price < 1e9 with <= 10 decimals, qty < 1e10 with <= 8; never rounded.


@pytest.mark.parametrize(
    "price",
    [
        "999999999.9999999999",  # the largest price: 9 integer digits, 10 decimals
        "0.0000000001",  # the smallest
        "000042000.10",  # leading zeros change no value
        "1.00000000000000000000",  # nor trailing zeros past the scale
    ],
)
def test_prices_within_the_bounds_are_kept_exactly(price):
    assert make_trade(**{**GOOD, "price": price}).price == price


@pytest.mark.parametrize(
    "price",
    [
        "1.00000000001",  # 11 decimals
        "0.00000000001",
        "1000000000",  # 1e9
        "1000000000.0",
        "99999999999999999999999999999999999999.5",  # more than 38 digits
        "-0",
        "-0.0",
        "+1",
        "1e3",
        "1E+3",
        "Infinity",
        "NaN",
        "1\n",  # $ would match before a final newline; fullmatch does not
        " 1",
        "1 ",
        "1_000",
        "0x10",
        "\u0664\u0662",  # Arabic-Indic 42
        "\uff14\uff12",  # full-width 42
        "4\u200b2",  # zero-width space
        "4\x002",
    ],
)
def test_prices_outside_the_bounds_or_not_plain_are_rejected(price):
    with pytest.raises(TradeRejected) as caught:
        make_trade(**{**GOOD, "price": price})
    assert caught.value.reason is RejectReason.BAD_PRICE


@pytest.mark.parametrize(
    ("qty", "accepted"),
    [
        ("9999999999.99999999", True),  # 10 integer digits, 8 decimals
        ("0.00000001", True),
        ("0.100000000000", True),  # 12 decimals, but the last 4 are trailing zeros
        ("0.000000001", False),  # 9 decimals
        ("0.123456789", False),
        ("10000000000", False),  # 1e10
        ("0", False),
        ("-0", False),
        ("1e-8", False),
        ("\u0661", False),  # Arabic-Indic 1
    ],
)
def test_quantities_within_their_bounds_only(qty, accepted):
    if accepted:
        assert make_trade(**{**GOOD, "qty": qty}).qty == qty
        return
    with pytest.raises(TradeRejected) as caught:
        make_trade(**{**GOOD, "qty": qty})
    assert caught.value.reason is RejectReason.BAD_QTY


def test_canonical_decimal_takes_the_qty_bounds_when_given_them():
    qty = re.compile(QTY_PATTERN)
    assert canonical_decimal("0.12345678", qty) == "0.12345678"
    assert canonical_decimal("0.123456789", qty) is None
    assert canonical_decimal("0.123456789") == "0.123456789"  # the price bounds by default


@pytest.mark.parametrize(
    ("trade_id", "accepted"),
    [
        ("x" * 64, True),
        ("a.b_c:d-E9", True),
        (2**64, True),  # JSON integers become strings
        ("x" * 65, False),
        ("12 34", False),
        ("1234\n", False),
        ("12\x0034", False),
        ("12\x1b34", False),
        ("12\u200b34", False),  # zero-width space
        ("\ufeff1234", False),  # byte-order mark
        ("\u0661\u0662", False),  # Arabic-Indic digits
        ("12/34", False),
    ],
)
def test_trade_ids_are_1_to_64_plain_ascii_characters(trade_id, accepted):
    if accepted:
        assert make_trade(**{**GOOD, "trade_id": trade_id}).trade_id == str(trade_id)
        return
    with pytest.raises(TradeRejected) as caught:
        make_trade(**{**GOOD, "trade_id": trade_id})
    assert caught.value.reason is RejectReason.BAD_TRADE_ID


# --- exact_vwap: rational arithmetic, half-even to 18 decimals. Expected values come from
# Decimal division at 200 digits, quantized half-even.


def quantized_vwap(quote_volume: Decimal, volume: Decimal) -> Decimal:
    with localcontext() as context:
        context.prec = 200
        return (quote_volume / volume).quantize(
            Decimal(1).scaleb(-VWAP_SCALE), rounding=ROUND_HALF_EVEN
        )


@pytest.mark.parametrize(
    ("quote_volume", "volume", "expected"),
    [
        ("25E-19", "1", "2E-18"),  # a tie goes to the even neighbour: down
        ("35E-19", "1", "4E-18"),  # and here up
        ("15E-19", "1", "2E-18"),
        ("-25E-19", "1", "-2E-18"),
        ("1", "3", "0.333333333333333333"),
        ("2", "3", "0.666666666666666667"),
        ("42000.1", "0.001", "42000100"),
    ],
)
def test_exact_vwap_rounds_half_even(quote_volume, volume, expected):
    got = exact_vwap(Decimal(quote_volume), Decimal(volume))
    assert got == Decimal(expected) == quantized_vwap(Decimal(quote_volume), Decimal(volume))


@given(
    quote_volume=st.decimals(min_value=0, max_value=Decimal("1e20"), places=18),
    volume=st.decimals(min_value=Decimal("1e-8"), max_value=Decimal("1e12"), places=8),
)
def test_exact_vwap_matches_decimal_quantize(quote_volume, volume):
    assert exact_vwap(quote_volume, volume) == quantized_vwap(quote_volume, volume)


def test_dead_letter_carries_raw_frame_and_reason():
    letter = DeadLetter("kraken", RejectReason.BAD_PRICE, "price -1", '{"price":-1}', NOW)
    assert letter.key == "kraken"
    assert b'"reason":"bad_price"' in letter.to_json()
    assert b'"raw":"{\\"price\\":-1}"' in letter.to_json()
