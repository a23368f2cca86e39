"""Gold from trades in the format Binance publishes (daily trade CSVs: prices with 2, 6 and 8
decimals, quantities with 8), through the real path: dump replay → trade v1 JSON → silver parse
→ 1-minute candles. Every field equals a Decimal recomputation read straight from the CSV, and
each bar's quote volume equals the sum of the exchange's own ``quote_qty`` column.

The fixtures (``fixtures/binance``) are synthetic, made once in Binance's column layout:
``id,price,qty,quote_qty,time(ms),is_buyer_maker,is_best_match``."""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from cryptolake.common.candles import reference_bars
from cryptolake.jobs.tables import BRONZE_SCHEMA
from cryptolake.jobs.transforms import candles_1m, parse_trades, valid_trades
from cryptolake.producer.replay import read_dump

DUMPS = sorted((Path(__file__).parent / "fixtures" / "binance").glob("*.csv"))
FIELDS = (
    "open", "high", "low", "close", "volume", "quote_volume", "vwap", "trades", "buy_volume",
    "sell_volume", "first_trade_id", "first_trade_time_us", "last_trade_id", "last_trade_time_us",
)  # fmt: skip


def csv_trades(path: Path, symbol: str) -> list[dict]:
    """The dump read plainly (not by the replay code): the taker bought when the buyer was not
    the maker; times in ms."""
    with path.open(newline="") as handle:
        return [
            {"symbol": symbol, "trade_id": row[0], "price": row[1], "qty": row[2],
             "quote_qty": row[3], "event_time": int(row[4]) * 1000,
             "side": "sell" if row[5] == "True" else "buy"}
            for row in csv.reader(handle)
        ]  # fmt: skip


@pytest.mark.parametrize("dump", DUMPS, ids=lambda path: path.name.split("-")[0])
def test_gold_equals_the_exchange_minute_to_the_last_decimal(spark, dump: Path) -> None:
    items = list(read_dump(dump))
    assert all(item.dead_letter is None for item in items)
    trades = [item.trade for item in items if item.trade is not None]
    symbol = trades[0].symbol
    # The broker's append time comes after the replay stamped each trade's ingest time.
    broker_time = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    bronze = spark.createDataFrame(
        [(None, t.to_json(), "crypto.trades.v1", 0, offset, broker_time, broker_time,
          broker_time.date()) for offset, t in enumerate(trades)],
        BRONZE_SCHEMA,
    )  # fmt: skip
    candles = (
        candles_1m(valid_trades(parse_trades(bronze)))
        .withColumn("minute_us", F.unix_micros("minute"))
        .withColumn("first_trade_time_us", F.unix_micros("first_trade_time"))
        .withColumn("last_trade_time_us", F.unix_micros("last_trade_time"))
        .collect()
    )
    actual = {(row.symbol, row.minute_us // 60_000_000): {f: row[f] for f in FIELDS}
              for row in candles}  # fmt: skip
    plain = csv_trades(dump, symbol)
    expected = reference_bars(plain)
    assert len(expected) >= 5
    assert actual == expected
    # The exchange's own figure: quote volume is the sum of its quote_qty, to the last digit.
    for (_, minute), bar in actual.items():
        exchange_quote = sum(
            (Decimal(t["quote_qty"]) for t in plain if t["event_time"] // 60_000_000 == minute),
            Decimal(0),
        )
        assert bar["quote_volume"] == exchange_quote, minute
