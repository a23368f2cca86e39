"""Exchange klines: each adapter's request and its reading of the documented answer, hostile
answers refused with a reason, and a Gold candle held against a kline (``check_bar``)."""

from decimal import Decimal as D  # noqa: N817

import pytest

from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.klines import MINUTE_US, CheckStatus, Kline, KlineError, check_bar

BINANCE_DOCS = (
    b'[[1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", '
    b'"148976.11427815", 1499644799999, "2434.19055334", 308, "1756.87402397", '
    b'"28.46694368", "0"]]'
)
KRAKEN_DOCS = (
    b'{"error": [], "result": {"XXBTZUSD": [[1688671200, "30306.1", "30306.2", "30305.7", '
    b'"30305.7", "30306.1", "3.39243896", 23]], "last": 1688672160}}'
)
COINBASE_DOCS = b"[[1415398800, 0.32, 4.2, 0.35, 4.2, 12.30000001]]"


def adapter(name: str):
    return adapter_class(name)(["BTC-USD"], rest_url="http://rest.invalid")


def test_binance_reads_every_published_field_exactly():
    (kline,) = adapter("binance").parse_klines("BTC-USD", BINANCE_DOCS)
    assert kline == Kline(
        minute_us=1499040000000 * 1000, open=D("0.01634790"), high=D("0.8"), low=D("0.015758"),
        close=D("0.015771"), volume=D("148976.11427815"), quote_volume=D("2434.19055334"),
        trades=308, buy_volume=D("1756.87402397"),
    )  # fmt: skip


def test_kraken_reads_ohlc_and_count_but_not_its_rounded_vwap():
    (kline,) = adapter("kraken").parse_klines("BTC-USD", KRAKEN_DOCS)
    assert kline.published() == {
        "open": D("30306.1"), "high": D("30306.2"), "low": D("30305.7"), "close": D("30305.7"),
        "volume": D("3.39243896"), "trades": 23,
    }  # fmt: skip


def test_coinbase_numbers_keep_their_digits_and_its_order_is_low_high_open_close():
    (kline,) = adapter("coinbase").parse_klines("BTC-USD", COINBASE_DOCS)
    assert (kline.minute_us, kline.low, kline.high, kline.open, kline.close) == (
        1415398800 * 1_000_000, D("0.32"), D("4.2"), D("0.35"), D("4.2"))  # fmt: skip
    assert kline.volume == D("12.30000001")  # a float would read 12.300000010000001 or so
    assert kline.published().keys() == {"open", "high", "low", "close", "volume"}


@pytest.mark.parametrize(
    ("name", "start", "expected"),
    [
        ("binance", "/api/v3/klines", {"symbol": "BTCUSD", "interval": "1m",
                                       "startTime": "1800000000000", "endTime": "1800000119999",
                                       "limit": "1000"}),
        ("kraken", "/0/public/OHLC", {"pair": "XBTUSD", "interval": "1", "since": "1799999940"}),
        ("coinbase", "/products/BTC-USD/candles", {"granularity": "60",
                                                   "start": "2027-01-15T08:00:00.000000Z",
                                                   "end": "2027-01-15T08:01:00.000000Z"}),
    ],
)  # fmt: skip
def test_requests_ask_for_the_minutes_of_the_range(name, start, expected):
    begin = 1_800_000_000 * 1_000_000
    request = adapter(name).kline_request("BTC-USD", begin, begin + 2 * MINUTE_US)
    assert request is not None
    assert request.url == "http://rest.invalid" + start
    assert request.params == expected


def _binance(row: str) -> bytes:
    return f"[{row}]".encode()


HOSTILE = [
    ("binance", b"<html>502</html>", "not JSON"),
    ("binance", b'{"code": -1121, "msg": "Invalid symbol."}', "JSON list"),
    ("binance", _binance('[1499040000000, "1"]'), "12 values"),
    (
        "binance",
        _binance('[1499040000000, "abc", "1", "1", "1", "1", 0, "1", 1, "1", "1", "0"]'),
        "not a decimal",
    ),
    (
        "binance",
        _binance('[1499040000000, "NaN", "1", "1", "1", "1", 0, "1", 1, "1", "1", "0"]'),
        "not a finite",
    ),
    (
        "binance",
        _binance('[1499040000000, "-1", "1", "1", "1", "1", 0, "1", 1, "1", "1", "0"]'),
        "not a finite",
    ),
    (
        "binance",
        _binance('[1499040000000, "1e999999", "1", "1", "1", "1", 0, "1", 1, "1", "1", "0"]'),
        "not a finite",
    ),
    (
        "binance",
        _binance('[1499040000001, "1", "1", "1", "1", "1", 0, "1", 1, "1", "1", "0"]'),
        "minute boundary",
    ),
    (
        "binance",
        _binance('["1499040000000", "1", "1", "1", "1", "1", 0, "1", 1, "1", "1", "0"]'),
        "epoch time",
    ),
    (
        "binance",
        _binance('[1499040000000, "1", "1", "1", "1", "1", 0, "1", true, "1", "1", "0"]'),
        "not a count",
    ),
    (
        "binance",
        _binance('[1499040000000, "1", "1", "1", "1", "1", 0, "1", -3, "1", "1", "0"]'),
        "not a count",
    ),
    ("kraken", b'{"error": ["EGeneral:Too many requests"]}', "Too many requests"),
    ("kraken", b'{"error": [], "result": {"last": 1}}', "no one list"),
    (
        "kraken",
        b'{"error": [], "result": {"X": [[1688671200, 1.5, "1", "1", "1", "1", "1", 2]]}}',
        "Decimal, not a decimal string",
    ),
    ("kraken", b'{"error": [], "result": {"X": [[1688671200, "1", "1"]]}}', "8 values"),
    ("coinbase", b"[[1415398800, NaN, 4.2, 0.35, 4.2, 12.3]]", "not a JSON number"),
    ("coinbase", b"[[1415398800, 0.32, 4.2, 0.35, 4.2, 12.3]", "not JSON"),
    ("coinbase", b'[[1415398800, "0.32", 4.2, 0.35, 4.2, 12.3, 1]]', "6 numbers"),
    ("coinbase", b'{"message": "NotFound"}', "JSON list"),
    ("coinbase", b"[[1415398800, null, 4.2, 0.35, 4.2, 12.3]]", "NoneType, not a JSON number"),
    ("coinbase", b"[[1.5e9, 0.32, 4.2, 0.35, 4.2, 12.3]]", "epoch time"),
    ("coinbase", b'[[1415398800, "0.32", 4.2, 0.35, 4.2, 12.3]]', "str, not a JSON number"),
    ("coinbase", b"\xff\xfe[]", "not JSON"),
]


@pytest.mark.parametrize(("name", "body", "reason"), HOSTILE)
def test_hostile_answers_are_refused_with_a_reason(name, body, reason):
    with pytest.raises(KlineError, match=reason):
        adapter(name).parse_klines("BTC-USD", body)


def gold(**changes):
    bar = {"open": D(1), "high": D(3), "low": D("0.5"), "close": D(2), "volume": D("1.5"),
           "quote_volume": D("2.25"), "trades": 3, "buy_volume": D(1)}  # fmt: skip
    return {**bar, **changes}


def kline(**changes):
    fields = {"minute_us": 0, "open": D("1.0"), "high": D(3), "low": D("0.50"), "close": D(2),
              "volume": D("1.50000000"), "quote_volume": D("2.25"), "trades": 3,
              "buy_volume": D(1)}  # fmt: skip
    return Kline(**{**fields, **changes})


def test_a_candle_equal_to_the_kline_matches_whatever_the_trailing_zeros():
    check = check_bar(0, gold(), kline())
    assert (check.status, check.mismatched) == (CheckStatus.MATCH, ())


def test_every_differing_field_is_named_even_in_the_last_decimal():
    check = check_bar(0, gold(quote_volume=D("2.250000000000000001"), trades=2), kline())
    assert (check.status, check.mismatched) == (CheckStatus.MISMATCH, ("quote_volume", "trades"))
    assert check.gold is not None and check.exchange is not None
    assert (check.gold["trades"], check.exchange["trades"]) == (2, 3)


def test_only_the_fields_an_exchange_publishes_are_compared():
    coinbase = kline(quote_volume=None, trades=None, buy_volume=None)
    check = check_bar(0, gold(trades=99, buy_volume=D(7)), coinbase)
    assert check.status == CheckStatus.MATCH
    assert check.exchange is not None and set(check.exchange) == {
        "open", "high", "low", "close", "volume"}  # fmt: skip


def test_a_missing_bar_on_either_side_and_empty_minutes():
    assert check_bar(0, None, kline()).status == CheckStatus.MISSING_IN_GOLD
    assert check_bar(0, gold(), None).status == CheckStatus.MISSING_AT_EXCHANGE
    # Binance and Kraken publish minutes without trades (previous close, no volume): no bar.
    empty = kline(volume=D(0), quote_volume=D(0), trades=0, buy_volume=D(0))
    assert check_bar(0, None, empty).status == CheckStatus.MATCH
    assert check_bar(0, gold(), empty).status == CheckStatus.MISSING_AT_EXCHANGE
