"""The pure core: resampling against bars built straight from trades, ranges, KPIs, params."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pytest

from cryptolake.api import queries
from cryptolake.api.errors import ApiError
from cryptolake.api.params import parse_exchange, parse_range, parse_symbol, parse_time
from cryptolake.api.sample import (
    CANDLES_SCHEMA,
    SampleTrade,
    bars_from_trades,
    generate_trades,
    rounded,
)

START = datetime(2026, 11, 24, tzinfo=UTC)
BAR_FIELDS = (
    "exchange", "symbol", "open", "high", "low", "close", "volume", "quote_volume", "vwap",
    "trades", "buy_volume", "sell_volume", "first_trade_time", "last_trade_time", "complete",
)  # fmt: skip


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    result = pl.from_arrow(pa.Table.from_pylist(rows, schema=CANDLES_SCHEMA))
    assert isinstance(result, pl.DataFrame)
    return result


@pytest.fixture(scope="module")
def trades() -> list[SampleTrade]:
    return generate_trades([("simulator", "BTC-USDT", Decimal("42000"))], START, 6 * 60, 3)


@pytest.fixture(scope="module")
def fine_trades() -> list[SampleTrade]:
    """Prices with 2 to 8 decimals, quantities with 8: quote volumes with up to 16 decimals and
    vwaps with more significant digits than a float holds."""
    return generate_trades(
        [("binance", "ETH-BTC", Decimal("0.05123456")), ("kraken", "BTC-EUR", Decimal("38000"))],
        START, 6 * 60, 3, price_decimals=range(2, 9), qty_decimals=8,
    )  # fmt: skip


def float_vwap(bar: dict[str, Any]) -> Decimal:
    return Decimal(float(bar["quote_volume"]) / float(bar["volume"]))


def six_decimals(value: Decimal) -> Decimal:
    return value.quantize(Decimal("1e-6"))


def assert_same_bars(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [bar["minute"] for bar in got] == [bar["minute"] for bar in want]
    for bar, expected in zip(got, want, strict=True):
        for name in BAR_FIELDS:
            assert bar[name] == expected[name], (bar["minute"], name)


@pytest.mark.parametrize("interval", ["5m", "15m", "1h", "4h", "1d"])
def test_resample_equals_bars_built_from_the_trades(
    trades: list[SampleTrade], interval: str
) -> None:
    expected = bars_from_trades(trades, queries.INTERVALS[interval])
    got = queries.resample(frame(bars_from_trades(trades)), interval)
    assert_same_bars(got.to_dicts(), expected)


@pytest.mark.parametrize("interval", ["5m", "1h", "1d"])
def test_resampled_volumes_and_vwap_are_exact_with_fine_decimals(
    fine_trades: list[SampleTrade], interval: str
) -> None:
    for market in (("binance", "ETH-BTC"), ("kraken", "BTC-EUR")):
        mine = [t for t in fine_trades if (t.exchange, t.symbol) == market]
        expected = bars_from_trades(mine, queries.INTERVALS[interval])
        # The premise: float vwaps, or quote volumes cut to 6 decimals, would not pass.
        assert any(bar["vwap"] != float_vwap(bar) for bar in expected)
        assert any(bar["quote_volume"] != six_decimals(bar["quote_volume"]) for bar in expected)
        got = queries.resample(frame(bars_from_trades(mine)), interval)
        assert got.schema["quote_volume"] == pl.Decimal(38, 18)
        assert got.schema["volume"] == pl.Decimal(38, 8)
        assert got.schema["vwap"] == pl.Decimal(38, 18)
        assert_same_bars(got.to_dicts(), expected)


@pytest.mark.parametrize("interval", ["5m", "1h"])
def test_a_resampled_bar_is_complete_when_each_of_its_minutes_is(
    trades: list[SampleTrade], interval: str
) -> None:
    """Trades missing inside a minute and at an interval's edge: the bars built straight from
    the remaining trades say which are incomplete; resampling the 1-minute bars agrees."""
    edge = next(i for i, t in enumerate(trades) if t.event_time >= START + timedelta(hours=1))
    holed = [t for i, t in enumerate(trades) if i not in (40, 41, 200, edge)]
    expected = bars_from_trades(holed, queries.INTERVALS[interval])
    got = queries.resample(frame(bars_from_trades(holed)), interval)
    assert [bar["complete"] for bar in got.to_dicts()] == [bar["complete"] for bar in expected]
    assert [bar["complete"] for bar in expected].count(False) >= 2  # the first bar, the holes


def test_bars_from_before_completeness_are_unknown(trades: list[SampleTrade]) -> None:
    old = frame(bars_from_trades(trades[:30])).drop("min_trade_id", "max_trade_id", "complete")
    assert set(queries.resample(old, "5m")["complete"].to_list()) == {None}
    assert {bar["complete"] for bar in orjson.loads(queries.bars_json(old))} == {None}


def big_bars(column: str, values: list[str]) -> pl.DataFrame:
    """One-minute bars of one trade each, with ``column`` set to ``values`` in turn."""
    one = SampleTrade("x", "BTC-USDT", "1", Decimal(1), Decimal(1), "buy", START)
    bars = []
    for minute, value in enumerate(values):
        (bar,) = bars_from_trades([replace(one, event_time=START + timedelta(minutes=minute))])
        bars.append({**bar, column: Decimal(value)})
    return frame(bars)


def test_a_sum_that_overflows_its_column_is_null_never_wrapped() -> None:
    # DECIMAL(38,18) holds < 1e20: 6e19 + 6e19 does not fit.
    over = queries.resample(big_bars("quote_volume", ["6e19", "6e19", "1"]), "5m")
    assert over["quote_volume"].to_list() == [None]
    assert over["vwap"].to_list() == [None]
    assert over["volume"].to_list() == [Decimal(3)]
    largest = "99999999999999999999.999999999999999999"
    at_the_limit = queries.resample(big_bars("quote_volume", [largest, "0"]), "5m")
    assert at_the_limit["quote_volume"].to_list() == [Decimal(largest)]
    # Far past Int128 (where polars' own group sum wraps around): still null.
    wrapped = queries.resample(big_bars("volume", ["9e29"] * 250), "1d")
    assert wrapped["volume"].to_list() == [None]


@pytest.mark.parametrize(
    ("quotes", "vwap"),
    [
        (["1e-18", "2e-18"], "2e-18"),  # 1.5e-18 rounds up to the even 2
        (["2e-18", "3e-18"], "2e-18"),  # 2.5e-18 rounds down to the even 2
        (["7", "1e-18"], "3.500000000000000000"),  # 3.5000000000000000005: down to the even 0
    ],
)
def test_resampled_vwap_rounds_half_even(quotes: list[str], vwap: str) -> None:
    bars = big_bars("quote_volume", quotes)  # two bars of volume 1
    (got,) = queries.resample(bars, "5m")["vwap"].to_list()
    assert got == Decimal(vwap) == rounded(sum(map(Decimal, quotes), Decimal(0)), 2)


def test_a_null_quote_volume_makes_its_bar_null() -> None:
    bars = big_bars("quote_volume", ["1", "2"]).with_columns(
        quote_volume=pl.when(pl.col("minute") == START).then(None).otherwise(pl.col("quote_volume"))
    )
    got = queries.resample(bars, "5m")
    assert got["quote_volume"].to_list() == [None]
    assert got["vwap"].to_list() == [None]


def test_daily_bars_start_at_midnight_utc() -> None:
    hour = timedelta(hours=1)
    late = [
        SampleTrade("x", "BTC-USDT", "1", Decimal(10), Decimal(1), "buy", START - hour),
        SampleTrade("x", "BTC-USDT", "2", Decimal(12), Decimal(1), "sell", START + hour),
    ]
    got = queries.resample(frame(bars_from_trades(late)), "1d")
    assert got["minute"].to_list() == [START - timedelta(days=1), START]
    assert got["open"].cast(pl.Float64).to_list() == [10.0, 12.0]


def test_open_and_close_follow_trade_id_when_event_times_tie() -> None:
    tie = START + timedelta(seconds=5)
    same_time = [
        SampleTrade("x", "BTC-USDT", "10", Decimal(2), Decimal(1), "buy", tie),
        SampleTrade("x", "BTC-USDT", "9", Decimal(1), Decimal(1), "buy", tie),
        SampleTrade("x", "BTC-USDT", "11", Decimal(3), Decimal(1), "sell", tie),
    ]
    bars = queries.resample(frame(bars_from_trades(same_time)), "5m").to_dicts()
    # Ids order by length first: 9 < 10 < 11.
    assert (bars[0]["open"], bars[0]["close"]) == (Decimal(1), Decimal(3))


def test_select_range_takes_the_first_from_start_and_the_last_before_end(
    trades: list[SampleTrade],
) -> None:
    bars = frame(bars_from_trades(trades))
    minutes = bars.sort("minute")["minute"].to_list()
    from_start = queries.select_range(bars, "minute", minutes[10], None, 3)
    assert from_start["minute"].to_list() == minutes[10:13]
    before_end = queries.select_range(bars, "minute", None, minutes[10], 3)
    assert before_end["minute"].to_list() == minutes[7:10]
    latest = queries.select_range(bars, "minute", None, None, 2)
    assert latest["minute"].to_list() == minutes[-2:]


def test_bars_json_gives_numbers_and_both_time_forms(trades: list[SampleTrade]) -> None:
    bars = frame(bars_from_trades(trades[:5]))
    first = orjson.loads(queries.bars_json(bars))[0]
    assert first["time"].endswith("Z")
    assert first["time_ms"] == int(bars["minute"][0].timestamp() * 1000)
    assert isinstance(first["open"], float)
    assert isinstance(first["trades"], int)
    # The market's first bar: the trades before it were not seen.
    assert [bar["complete"] for bar in orjson.loads(queries.bars_json(bars))][:2] == [False, True]


def test_json_numbers_carry_every_digit(fine_trades: list[SampleTrade]) -> None:
    bars = queries.resample(frame(bars_from_trades(fine_trades)), "1h")
    rendered = queries.bars_json(bars)
    assert b'"vwap":"' not in rendered  # numbers, not strings
    for got, want in zip(json.loads(rendered, parse_float=Decimal), bars.to_dicts(), strict=True):
        for name in ("open", "high", "low", "close", "volume", "quote_volume", "vwap"):
            assert got[name] == want[name], name
    # Trailing zeros are dropped, one decimal kept: 42000.0, not 42000.0000000000.
    round_numbers = SampleTrade("x", "A-B", "1", Decimal(42000), Decimal(2), "buy", START)
    rendered = queries.bars_json(frame(bars_from_trades([round_numbers])))
    assert b'"open":42000.0,' in rendered
    assert b'"quote_volume":84000.0,' in rendered


def test_a_string_that_looks_like_a_key_stays_a_string() -> None:
    trade = pl.DataFrame(
        {
            "exchange": ['x","price":"1'], "symbol": ["A-B"], "trade_id": ["7"],
            "price": pl.Series([Decimal("2.50")], dtype=pl.Decimal(19, 10)),
            "qty": pl.Series([Decimal("0.1")], dtype=pl.Decimal(18, 8)),
            "side": ["buy"], "event_time": [START],
        }
    )  # fmt: skip
    (row,) = orjson.loads(queries.trades_json(trade))
    assert (row["exchange"], row["trade_id"], row["price"], row["qty"]) == (
        'x","price":"1', "7", 2.5, 0.1,
    )  # fmt: skip


def test_kpis_compare_with_the_bar_an_hour_and_a_day_before() -> None:
    def trade(minutes: int, price: int) -> SampleTrade:
        at = START + timedelta(minutes=minutes)
        return SampleTrade("x", "BTC-USDT", str(minutes), Decimal(price), Decimal(2), "buy", at)

    bars = frame(bars_from_trades([trade(0, 100), trade(24 * 60 - 60, 200), trade(24 * 60, 250)]))
    (row,) = queries.kpis(bars).to_dicts()
    assert row["last_price"] == Decimal(250)
    assert row["change_1h_pct"] == 25.0
    assert row["change_24h_pct"] == 150.0
    # The bar at minute 0 is exactly 24 h old: outside the (last - 24 h, last] volume window.
    assert row["volume_24h"] == Decimal(4)


def test_kpi_volume_is_null_when_it_overflows() -> None:
    (row,) = queries.kpis(big_bars("volume", ["6e29", "6e29"])).to_dicts()
    assert row["volume_24h"] is None


def test_kpis_have_no_change_without_history() -> None:
    one = SampleTrade("x", "ETH-USDT", "1", Decimal(5), Decimal(1), "buy", START)
    (row,) = queries.kpis(frame(bars_from_trades([one]))).to_dicts()
    assert row["change_1h_pct"] is None
    assert row["change_24h_pct"] is None


def test_latest_trades_keeps_the_newest_per_symbol() -> None:
    rows = pl.DataFrame(
        {
            "exchange": ["x"] * 4,
            "symbol": ["A-B", "A-B", "A-B", "C-D"],
            "trade_id": ["1", "2", "3", "1"],
            "event_time": [START + timedelta(seconds=s) for s in (1, 3, 2, 0)],
        }
    )
    got = queries.latest_trades(rows, 2)
    assert got.filter(pl.col("symbol") == "A-B")["trade_id"].to_list() == ["2", "3"]
    assert got.filter(pl.col("symbol") == "C-D")["trade_id"].to_list() == ["1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24T11:00:00+01:00", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24T10:00:00", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("1795514400000", datetime(2026, 11, 24, 10, tzinfo=UTC)),
    ],
)
def test_parse_time_accepts_iso_and_epoch_ms(text: str, expected: datetime) -> None:
    assert parse_time("start", text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "99999999999999999", "1000"])
def test_parse_time_names_the_parameter(text: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_time("end", text)
    assert raised.value.status == 422
    assert raised.value.parameter == "end"
    assert "end" in raised.value.message


def test_inverted_range_is_rejected() -> None:
    with pytest.raises(ApiError) as raised:
        parse_range("2026-11-24T10:00:00Z", "2026-11-24T09:00:00Z")
    assert raised.value.parameter == "end"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BTC-USDT", "BTC-USDT"),
        ("btc-usdt", "BTC-USDT"),
        ("btc/usdt", "BTC-USDT"),
        (" ETH_BTC ", "ETH-BTC"),
        ("BTCUSDT", "BTC-USDT"),
        ("XBT-EUR", "BTC-EUR"),
        ("1INCH-USDT", "1INCH-USDT"),
        ("A" * 20 + "-" + "B" * 20, "A" * 20 + "-" + "B" * 20),
        ("BTC-USDT-PERP", "BTC-USDT-PERP"),  # Binance USD-M perpetual contract
        ("btcusdt-perp", "BTC-USDT-PERP"),
        ("btc/usdt-PERP", "BTC-USDT-PERP"),
    ],
)
def test_parse_symbol_normalizes_the_usual_spellings(text: str, expected: str) -> None:
    assert parse_symbol(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "BT\u0421-USDT",  # a Cyrillic Es for the C
        "BTC\u200b-USDT",  # a zero-width space
        "\u017fol-usdt",  # long s: its upper() is 'S', but this is not SOL-USDT
        "\uff22\uff34\uff23-USDT",  # full-width BTC
        "BTC-USDT\n",
        "BTC\x00-USDT",
        "\tBTC-USDT",
        "A" * 21 + "-USDT",
        "BTC-" + "U" * 21,
        "BTC-",
        "-USDT",
        "-",
        "",
        "BTC--USDT",
        "BTC-USDT-X",
        "BTC-USDT-PERP-PERP",
        "BTC-PERP",
        "-PERP",
        "BTC USDT",
        "BTC.USDT",
        "DOGE",
    ],
)
def test_parse_symbol_rejects_what_cannot_be_a_symbol(text: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_symbol(text)
    assert raised.value.status == 422
    assert raised.value.parameter == "symbol"
    assert "BASE-QUOTE" in raised.value.message or "ASCII" in raised.value.message


def test_parse_exchange_takes_the_known_ones_in_any_case() -> None:
    assert parse_exchange("binance") == "binance"
    assert parse_exchange(" Kraken ") == "kraken"
    for text in ("ftx", "", "binance2", "\u212araken", "coin base"):  # \u212a: Kelvin sign
        with pytest.raises(ApiError) as raised:
            parse_exchange(text)
        assert (raised.value.status, raised.value.parameter) == (422, "exchange")
