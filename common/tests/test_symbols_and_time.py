import pytest

from cryptolake.common.symbols import canonical_symbol, split_concatenated
from cryptolake.common.timeutil import rfc3339_to_us, us_to_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BTCUSDT", "BTC-USDT"),
        ("ethbtc", "ETH-BTC"),
        ("XBTUSD", "BTC-USD"),
        ("BTCFDUSD", "BTC-FDUSD"),
        ("USDT", None),
        ("FOOBAR", None),
    ],
)
def test_split_concatenated(text, expected):
    assert split_concatenated(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("btc-usdt", "BTC-USDT"),
        ("XBT/USD", "BTC-USD"),
        ("ETHUSDT", "ETH-USDT"),
        ("sol_usdc", "SOL-USDC"),
    ],
)
def test_canonical_symbol(text, expected):
    assert canonical_symbol(text) == expected


@pytest.mark.parametrize("text", ["BTC", "BTC-", "BTC-US$D", "-USD"])
def test_canonical_symbol_says_what_form_is_expected(text):
    with pytest.raises(ValueError, match="BASE-QUOTE"):
        canonical_symbol(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-02-09T20:19:35.39625135Z", 1_675_973_975_396_251),
        ("2019-08-14T20:42:27.265Z", 1_565_815_347_265_000),
        ("2023-09-25T07:49:37.708706Z", 1_695_628_177_708_706),
        ("2024-01-01T00:00:00Z", 1_704_067_200_000_000),
        ("2024-01-01T00:00:00.5+00:00", 1_704_067_200_500_000),
    ],
)
def test_rfc3339_to_us(text, expected):
    assert rfc3339_to_us(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00+02:00",
        "2024-13-01T00:00:00Z",
        "2024-01-01T25:00:00Z",
        "garbage",
        "2024-01-01T00:00:00.x1Z",
    ],
)
def test_rfc3339_rejects_what_it_cannot_read_exactly(text):
    with pytest.raises(ValueError):
        rfc3339_to_us(text)


def test_us_to_rfc3339_round_trips():
    us = 1_675_973_975_396_251
    assert us_to_rfc3339(us) == "2023-02-09T20:19:35.396251Z"
    assert rfc3339_to_us(us_to_rfc3339(us)) == us
    assert us_to_rfc3339(us, digits=9) == "2023-02-09T20:19:35.396251000Z"
