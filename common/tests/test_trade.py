import pytest

from cryptolake.common.trade import (
    MIN_EVENT_TIME_US,
    DeadLetter,
    RejectReason,
    Trade,
    TradeRejected,
    canonical_decimal,
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


def test_integer_trade_ids_become_strings():
    assert make_trade(**{**GOOD, "trade_id": 7}).trade_id == "7"


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("exchange", "bitstamp", RejectReason.BAD_TYPE),
        ("symbol", "btcusdt", RejectReason.BAD_SYMBOL),
        ("trade_id", "", RejectReason.BAD_TYPE),
        ("trade_id", 1.5, RejectReason.BAD_TYPE),
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


def test_dead_letter_carries_raw_frame_and_reason():
    letter = DeadLetter("kraken", RejectReason.BAD_PRICE, "price -1", '{"price":-1}', NOW)
    assert letter.key == "kraken"
    assert b'"reason":"bad_price"' in letter.to_json()
    assert b'"raw":"{\\"price\\":-1}"' in letter.to_json()
