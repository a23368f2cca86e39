import io
import zipfile

import pytest

from cryptolake.common.dumps import DumpError, symbol_from_filename, time_to_us
from cryptolake.common.trade import RejectReason, TradeRejected
from cryptolake.producer.replay import (
    dump_items,
    parse_dump_row,
    read_dump,
)

NOW = 1_800_000_000_000_000
ROWS_MS = (
    "3417891000,42283.58000000,0.00204000,86.25850320,1704067200012,False,True\n"
    "3417891001,42283.57000000,0.00100000,42.28357000,1704067200034,True,True\n"
)
ROWS_US = "5000000001,95000.01,0.5,47500.005,1735689600123456,true,true\n"
HEADER = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"


def test_older_files_carry_milliseconds_and_newer_ones_microseconds():
    assert time_to_us("1704067200012") == 1_704_067_200_012_000
    assert time_to_us("1735689600123456") == 1_735_689_600_123_456


def test_row_becomes_a_binance_trade_with_the_taker_side():
    row = ROWS_MS.splitlines()[1].split(",")
    trade = parse_dump_row(row, "BTC-USDT", NOW)
    assert trade.to_dict() == {
        "schema_version": 1,
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "trade_id": "3417891001",
        "price": "42283.57000000",
        "qty": "0.00100000",
        "side": "sell",  # the buyer was the maker, so the taker sold
        "event_time": 1_704_067_200_034_000,
        "ingest_time": NOW,
    }


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1,42000,0.1,4200", RejectReason.MISSING_FIELD),
        ("1,-5,0.1,1,1704067200012,True,True", RejectReason.BAD_PRICE),
        ("1,42000,0,1,1704067200012,True,True", RejectReason.BAD_QTY),
        ("1,42000,0.1,1,yesterday,True,True", RejectReason.BAD_TIMESTAMP),
        ("1,42000,0.1,1,17040672,True,True", RejectReason.BAD_TIMESTAMP),
        ("1,42000,0.1,1,1704067200012,maybe,True", RejectReason.BAD_SIDE),
        ("1,42000,0.1,1,\u0661704067200012,True,True", RejectReason.BAD_TIMESTAMP),
        ("1,42000,0.1,1,1_704_067_200_012,True,True", RejectReason.BAD_TIMESTAMP),
        ("1,42000,0.1,1,+1704067200012,True,True", RejectReason.BAD_TIMESTAMP),
        ("1 2,42000,0.1,1,1704067200012,True,True", RejectReason.BAD_TRADE_ID),
        ("1,42000.00000000001,0.1,1,1704067200012,True,True", RejectReason.BAD_PRICE),
        ("1,42000,0.000000001,1,1704067200012,True,True", RejectReason.BAD_QTY),
    ],
)
def test_bad_rows_are_rejected_with_a_reason(row, reason):
    with pytest.raises(TradeRejected) as caught:
        parse_dump_row(row.split(","), "BTC-USDT", NOW)
    assert caught.value.reason is reason


def test_symbol_comes_from_the_dump_name(tmp_path):
    assert symbol_from_filename(tmp_path / "ETHBTC-trades-2021-03-01.zip") == "ETH-BTC"
    assert symbol_from_filename(tmp_path / "BTCUSDT-trades-2024-01.csv") == "BTC-USDT"
    with pytest.raises(DumpError, match="--symbol"):
        symbol_from_filename(tmp_path / "trades.csv")


def test_reads_csv_with_header_and_zip_without_and_keeps_bad_rows_as_dead_letters(tmp_path):
    plain = tmp_path / "BTCUSDT-trades-2025-01-01.csv"
    plain.write_text(HEADER + ROWS_US + "5000000002,oops,1,1,1735689600123999,false,true\n")
    zipped = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("BTCUSDT-trades-2024-01-01.csv", ROWS_MS)
    zipped.write_bytes(buffer.getvalue())

    items = list(read_dump(plain))
    assert [item.trade.trade_id for item in items if item.trade] == ["5000000001"]
    letters = [item.dead_letter for item in items if item.dead_letter]
    assert [(letter.reason, letter.raw) for letter in letters] == [
        (RejectReason.BAD_PRICE, "5000000002,oops,1,1,1735689600123999,false,true")
    ]
    assert "line 3" in letters[0].detail

    trades = [item.trade for item in read_dump(zipped) if item.trade]
    assert [(t.trade_id, t.side, t.event_time) for t in trades] == [
        ("3417891000", "buy", 1_704_067_200_012_000),
        ("3417891001", "sell", 1_704_067_200_034_000),
    ]


def test_unreadable_archive_says_so(tmp_path):
    broken = tmp_path / "BTCUSDT-trades-2024-01-01.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(DumpError, match="not a readable zip"):
        list(read_dump(broken))


def test_crlf_lines_parse_and_a_line_that_is_not_utf8_is_a_dead_letter():
    rows = ROWS_MS.replace("\n", "\r\n").encode()
    dump = rows + b"3417891002,42283.5\xff,0.1,1,1704067200034,True,True\r\n" + rows
    items = list(dump_items(io.BytesIO(dump), "BTCUSDT-trades-2024-01-01.csv", "BTC-USDT"))
    assert [item.trade.trade_id for item in items if item.trade] == [
        "3417891000",
        "3417891001",
        "3417891000",
        "3417891001",
    ]
    [letter] = [item.dead_letter for item in items if item.dead_letter]
    assert letter.reason is RejectReason.BAD_ENCODING
    assert letter.detail.startswith("BTCUSDT-trades-2024-01-01.csv line 3: not UTF-8 at byte 18")
    assert letter.raw == "3417891002,42283.5\ufffd,0.1,1,1704067200034,True,True"
