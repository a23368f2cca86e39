"""The pure core: resampling against bars built straight from trades, ranges, KPIs, params."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import polars as pl
import pyarrow as pa
import pytest

from cryptolake.api import queries
from cryptolake.api.errors import ApiError
from cryptolake.api.params import parse_range, parse_time
from cryptolake.api.sample import (
    CANDLES_SCHEMA,
    SampleTrade,
    bars_from_trades,
    generate_trades,
)

START = datetime(2026, 11, 24, tzinfo=UTC)


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    result = pl.from_arrow(pa.Table.from_pylist(rows, schema=CANDLES_SCHEMA))
    assert isinstance(result, pl.DataFrame)
    return result


@pytest.fixture(scope="module")
def trades() -> list[SampleTrade]:
    return generate_trades([("simulator", "BTC-USDT", Decimal("42000"))], START, 6 * 60, 3)


@pytest.mark.parametrize("interval", ["5m", "15m", "1h", "4h"])
def test_resample_equals_bars_built_from_the_trades(
    trades: list[SampleTrade], interval: str
) -> None:
    expected = bars_from_trades(trades, queries.INTERVALS[interval])
    got = queries.resample(frame(bars_from_trades(trades)), interval).to_dicts()
    assert len(got) == len(expected)
    for bar, want in zip(got, expected, strict=True):
        assert bar["minute"] == want["minute"]
        for name in ("open", "high", "low", "close", "volume", "quote_volume", "trades"):
            assert bar[name] == want[name], (interval, bar["minute"], name)
        assert bar["buy_volume"] == want["buy_volume"]
        assert bar["vwap"] == pytest.approx(float(want["vwap"]), rel=1e-12)


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


def test_kpis_compare_with_the_bar_an_hour_and_a_day_before() -> None:
    def trade(minutes: int, price: int) -> SampleTrade:
        at = START + timedelta(minutes=minutes)
        return SampleTrade("x", "BTC-USDT", str(minutes), Decimal(price), Decimal(2), "buy", at)

    bars = frame(bars_from_trades([trade(0, 100), trade(24 * 60 - 60, 200), trade(24 * 60, 250)]))
    (row,) = queries.kpis(bars).to_dicts()
    assert row["last_price"] == Decimal(250)
    assert row["change_1h_pct"] == pytest.approx(25.0)
    assert row["change_24h_pct"] == pytest.approx(150.0)
    # The bar at minute 0 is exactly 24 h old: outside the (last - 24 h, last] volume window.
    assert row["volume_24h"] == Decimal(4)


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
