"""Dead letters stay small whatever arrives: the raw is cut to its first RAW_PREFIX_CHARS
characters, the detail says so with the whole size, and the DLQ value stays under
MAX_VALUE_BYTES, through the helper and through every adapter and the dump replay."""

from __future__ import annotations

import io

import orjson
import pytest

from cryptolake.common.timeutil import us_to_rfc3339
from cryptolake.common.trade import MAX_VALUE_BYTES, RAW_PREFIX_CHARS, RejectReason
from cryptolake.producer.dead_letters import DETAIL_CHARS, MAX_DEAD_LETTER_BYTES, dead_letter
from cryptolake.producer.exchanges.base import ExchangeAdapter, FrameKind
from cryptolake.producer.exchanges.binance import BinanceAdapter
from cryptolake.producer.exchanges.coinbase import CoinbaseAdapter
from cryptolake.producer.exchanges.kraken import KrakenAdapter
from cryptolake.producer.replay import MAX_LINE_BYTES, dump_items

NOW_US = 1_700_000_000_000_000
TWO_MB = 2 * 1024 * 1024


def test_a_short_raw_is_kept_whole() -> None:
    letter = dead_letter("kraken", RejectReason.BAD_PRICE, "price -1", b'{"price":-1}', NOW_US)
    assert (letter.raw, letter.detail, letter.raw_length) == ('{"price":-1}', "price -1", 12)


def test_a_long_raw_keeps_its_prefix_and_its_whole_size() -> None:
    raw = "é" * (RAW_PREFIX_CHARS + 1)
    letter = dead_letter("binance", RejectReason.BAD_SYMBOL, "symbol", raw, NOW_US)
    assert letter.raw == "é" * RAW_PREFIX_CHARS
    assert (letter.detail, letter.raw_length) == ("symbol", 2 * len(raw))


def test_a_prefix_passed_with_its_whole_size_says_so() -> None:
    letter = dead_letter(
        "binance", RejectReason.TOO_LARGE, "long", b"1" * 5000, NOW_US, raw_size=TWO_MB
    )
    assert letter.raw == "1" * RAW_PREFIX_CHARS
    assert letter.raw_length == TWO_MB


def test_a_long_detail_is_cut() -> None:
    letter = dead_letter("coinbase", RejectReason.BAD_SIDE, "x" * TWO_MB, "{}", NOW_US)
    assert letter.detail == "x" * DETAIL_CHARS


def test_invalid_utf8_and_lone_surrogates_still_serialize() -> None:
    from_bytes = dead_letter("kraken", RejectReason.MALFORMED_JSON, "bad", b"{\xff\xfe}", NOW_US)
    assert from_bytes.raw == "{\ufffd\ufffd}"
    from_text = dead_letter("kraken", RejectReason.MALFORMED_JSON, "\udc80", "{\ud800}", NOW_US)
    assert orjson.loads(from_text.to_json())["raw"] == "{?}"


def test_the_largest_dead_letter_fits_in_one_trade_message() -> None:
    # Every character escaped by JSON as \u00XX: the worst case for the serialized size.
    letter = dead_letter(
        "simulator", RejectReason.MALFORMED_JSON, "\x01" * TWO_MB, "\x01" * TWO_MB, NOW_US
    )
    assert len(letter.to_json()) <= MAX_DEAD_LETTER_BYTES <= MAX_VALUE_BYTES


PAD = "A" * TWO_MB
HUGE_FRAMES = [
    pytest.param(BinanceAdapter, f'{{"e":"trade","s":"{PAD}","t":1}}', id="binance-trade"),
    pytest.param(BinanceAdapter, f'{{"stream":"x","data":"{PAD}"}}', id="binance-envelope"),
    pytest.param(KrakenAdapter, f'{{"channel":"{PAD}"}}', id="kraken-channel"),
    pytest.param(
        KrakenAdapter,
        '{"channel":"trade","data":[{"symbol":"XBT/USD","side":"buy","price":1,"qty":1,'
        f'"trade_id":1,"timestamp":"{us_to_rfc3339(NOW_US)}","extra":"{PAD}"}},'
        f'{{"symbol":"{PAD}"}}]}}',
        id="kraken-element",
    ),
    pytest.param(
        CoinbaseAdapter, f'{{"channel":"market_trades","events":"{PAD}"}}', id="coinbase-events"
    ),
    pytest.param(
        CoinbaseAdapter,
        f'{{"channel":"market_trades","events":[{{"trades":[{{"trade_id":"{PAD}"}}]}}]}}',
        id="coinbase-element",
    ),
]


@pytest.mark.parametrize(("adapter_class", "frame"), HUGE_FRAMES)
def test_a_2mb_frame_becomes_a_bounded_dead_letter(
    adapter_class: type[ExchangeAdapter], frame: str
) -> None:
    adapter = adapter_class(["BTC-USDT", "BTC-USD"])
    for raw in (frame, frame.encode()):
        parsed = adapter.parse(raw, NOW_US)
        assert parsed.dead_letters
        for letter in parsed.dead_letters:
            assert len(letter.raw) <= RAW_PREFIX_CHARS
            assert letter.raw_length is not None and letter.raw_length > RAW_PREFIX_CHARS
            assert len(letter.to_json()) <= MAX_VALUE_BYTES


def test_a_2mb_dump_line_becomes_a_too_large_dead_letter_between_good_rows() -> None:
    good = b"1,42000.1,0.1,4200.01,1700000000000,true,true\n"
    huge = b"2," + b"9" * TWO_MB + b",0.1,1,1700000000000,true,true"
    dump = io.BytesIO(good + huge + b"\r\n" + good)
    items = list(dump_items(dump, "BTCUSDT-trades-2023-11-14.csv", "BTC-USDT"))
    assert [item.trade is not None for item in items] == [True, False, True]
    letter = items[1].dead_letter
    assert letter is not None
    assert letter.reason is RejectReason.TOO_LARGE
    assert f"line 2: the line is over {MAX_LINE_BYTES} bytes" in letter.detail
    assert letter.raw_length == len(huge)
    assert letter.raw == huge[:RAW_PREFIX_CHARS].decode()


def test_a_rejected_frame_is_still_one_dead_letter() -> None:
    parsed = KrakenAdapter(["BTC-USD"]).parse("[" * TWO_MB, NOW_US)
    assert parsed.kind is FrameKind.REJECTED
    [letter] = parsed.dead_letters
    assert letter.raw == "[" * RAW_PREFIX_CHARS
