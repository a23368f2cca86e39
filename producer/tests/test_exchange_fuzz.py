"""Properties every exchange adapter and the dump replay keep whatever arrives: nothing
raises, and everything they return is a valid trade (it passes ``make_trade`` again) or a
bounded dead letter with a reason code."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptolake.common.timeutil import us_to_rfc3339
from cryptolake.common.trade import (
    MAX_VALUE_BYTES,
    RAW_PREFIX_CHARS,
    DeadLetter,
    RejectReason,
    Trade,
)
from cryptolake.producer.exchanges import ADAPTERS, adapter_class
from cryptolake.producer.exchanges.base import ExchangeAdapter, FrameKind, ParsedFrame
from cryptolake.producer.exchanges.binance import BinanceAdapter
from cryptolake.producer.exchanges.coinbase import CoinbaseAdapter
from cryptolake.producer.exchanges.kraken import KrakenAdapter
from cryptolake.producer.replay import dump_items

NOW_US = 1_700_000_000_000_000
FUZZ = settings(max_examples=300, deadline=None)

# Values JSON can carry; integers stay within 64 bits so orjson can write the frames.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, one time in eight any JSON value at all."""
    return st.integers(min_value=0, max_value=7).flatmap(
        lambda pick: json_values if pick == 0 else plausible
    )


decimal_texts = st.from_regex(r"[0-9]{1,8}(\.[0-9]{1,8})?", fullmatch=True) | st.sampled_from(
    ["0", "0.000", "-1", "", "1e-3", "1,5", "x"]
)
near_now_us = st.integers(min_value=NOW_US - 10**12, max_value=NOW_US + 10**9)
rfc3339_near_now = st.builds(us_to_rfc3339, near_now_us, st.integers(min_value=0, max_value=9))
rfc3339_texts = (
    rfc3339_near_now
    | rfc3339_near_now
    | st.sampled_from(["2023-09-25T07:48:36Z", "2023-09-25 07:48:36", "2023-02-30T00:00:00Z"])
    | st.text(max_size=30)
)


def adapters(cls: type[ExchangeAdapter]) -> list[ExchangeAdapter]:
    return [cls(["BTC-USDT", "BTC-USD"]), cls(["BTC-USD"], label="simulator")]


def adapter_id(adapter: ExchangeAdapter) -> str:
    return f"{adapter.name}-as-{adapter.label}"


ALL_ADAPTERS = [adapter for cls in ADAPTERS.values() for adapter in adapters(cls)]


def assert_valid_trade(trade: Trade) -> None:
    """The trade's fields pass make_trade again (from_json validates through it)."""
    assert Trade.from_json(trade.to_json()) == trade


def assert_bounded_dead_letter(letter: DeadLetter) -> None:
    assert isinstance(letter.reason, RejectReason)
    assert len(letter.raw) <= RAW_PREFIX_CHARS
    value = letter.to_json()
    assert len(value) <= MAX_VALUE_BYTES
    assert orjson.loads(value)["reason"] == letter.reason


def assert_well_formed(adapter: ExchangeAdapter, parsed: ParsedFrame) -> None:
    assert isinstance(parsed, ParsedFrame)
    assert parsed.kind in FrameKind
    for trade in parsed.trades:
        assert trade.exchange == adapter.label
        assert trade.ingest_time == NOW_US
        assert_valid_trade(trade)
    for letter in parsed.dead_letters:
        assert letter.source == adapter.label
        assert_bounded_dead_letter(letter)
    if parsed.kind is FrameKind.REJECTED:
        assert (len(parsed.dead_letters), parsed.trades) == (1, [])


def as_number(value: Decimal) -> orjson.Fragment:
    return orjson.Fragment(str(value))


def dump(frame: object) -> str:
    """JSON text; Decimals are written as numbers with exactly their digits."""
    return orjson.dumps(frame, default=as_number).decode()


@pytest.mark.parametrize("adapter", ALL_ADAPTERS, ids=adapter_id)
@FUZZ
@given(frame=st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_bytes_and_text_never_raise(adapter: ExchangeAdapter, frame: str | bytes) -> None:
    assert_well_formed(adapter, adapter.parse(frame, NOW_US))


@pytest.mark.parametrize("adapter", ALL_ADAPTERS, ids=adapter_id)
@FUZZ
@given(value=json_values)
def test_arbitrary_json_never_raises(adapter: ExchangeAdapter, value: object) -> None:
    assert_well_formed(adapter, adapter.parse(dump(value), NOW_US))


@pytest.mark.parametrize("adapter", ALL_ADAPTERS, ids=adapter_id)
@FUZZ
@given(
    body=st.binary(max_size=300)
    | json_values.map(lambda v: dump(v).encode())
    | st.lists(json_values, max_size=5).map(lambda v: dump(v).encode())
    | st.lists(json_values, max_size=5).map(
        lambda v: dump({"error": [], "result": {"X": v, "last": "1"}}).encode())
)  # fmt: skip
def test_arbitrary_history_answers_never_raise(adapter: ExchangeAdapter, body: bytes) -> None:
    """The REST history's answers are as hostile as frames: bytes, any JSON, lists of junk."""
    page = adapter.parse_history(adapter.symbols[0], body, NOW_US)
    assert_well_formed(adapter, page.parsed)
    assert page.next_cursor is None or isinstance(page.next_cursor, str)


binance_payloads = st.fixed_dictionaries(
    {
        "e": mostly(st.sampled_from(["trade", "trade", "serverShutdown", "aggTrade"])),
        "s": mostly(st.sampled_from(["BTCUSDT", "ETHBTC", "btcusdt", "BNBXYZ", "USDT", ""])),
        "t": mostly(st.integers(min_value=0, max_value=2**63)),
        "p": mostly(decimal_texts),
        "q": mostly(decimal_texts),
        "T": mostly(near_now_us.map(lambda us: us // 1000)),
        "m": mostly(st.booleans()),
    },
    optional={"E": st.integers(min_value=0, max_value=2**53), "M": st.booleans()},
)
binance_frames = (
    binance_payloads
    | binance_payloads.map(lambda payload: {"stream": "btcusdt@trade", "data": payload})
    | st.fixed_dictionaries({"result": json_values, "id": json_values})
    | st.fixed_dictionaries({"event": st.fixed_dictionaries({"e": st.just("serverShutdown")})})
)


@pytest.mark.parametrize("adapter", adapters(BinanceAdapter), ids=adapter_id)
@FUZZ
@given(frame=binance_frames, drop=st.sampled_from(["", "s", "t", "p", "q", "T", "m"]))
def test_plausible_binance_frames_never_raise(
    adapter: ExchangeAdapter, frame: dict[str, Any], drop: str
) -> None:
    frame.pop(drop, None)
    assert_well_formed(adapter, adapter.parse(dump(frame), NOW_US))


kraken_numbers = st.decimals(allow_nan=False, allow_infinity=False) | st.integers(
    min_value=-(2**63), max_value=2**64 - 1
)
kraken_trades = st.fixed_dictionaries(
    {
        "symbol": mostly(st.sampled_from(["XBT/USD", "BTC/USD", "MATIC/USD", "BTCUSD", "/"])),
        "side": mostly(st.sampled_from(["buy", "sell", "hold"])),
        "price": mostly(kraken_numbers),
        "qty": mostly(kraken_numbers),
        "trade_id": mostly(st.integers(min_value=0, max_value=2**64 - 1)),
        "timestamp": mostly(rfc3339_texts),
    },
    optional={"ord_type": st.sampled_from(["market", "limit"])},
)
kraken_frames = (
    st.fixed_dictionaries(
        {
            "channel": mostly(st.sampled_from(["trade", "trade", "heartbeat", "book"])),
            "type": st.sampled_from(["update", "snapshot"]),
            "data": mostly(st.lists(mostly(kraken_trades), max_size=4)),
        }
    )
    | st.fixed_dictionaries(
        {
            "channel": st.just("status"),
            "data": st.lists(
                mostly(
                    st.fixed_dictionaries(
                        {"system": st.sampled_from(["online", "maintenance", "post_only"])}
                    )
                ),
                max_size=2,
            ),
        }
    )
    | st.fixed_dictionaries(
        {
            "method": mostly(st.sampled_from(["subscribe", "unsubscribe", "pong", "add_order"])),
            "success": mostly(st.booleans()),
            "error": json_values,
        }
    )
)


@pytest.mark.parametrize("adapter", adapters(KrakenAdapter), ids=adapter_id)
@FUZZ
@given(frame=kraken_frames)
def test_plausible_kraken_frames_never_raise(adapter: ExchangeAdapter, frame: object) -> None:
    assert_well_formed(adapter, adapter.parse(dump(frame), NOW_US))


coinbase_trades = st.fixed_dictionaries(
    {
        "trade_id": mostly(st.text(min_size=1, max_size=10) | st.integers(0, 2**64 - 1)),
        "product_id": mostly(st.sampled_from(["BTC-USD", "ETH-USD", "ETHUSD", "btc-usd"])),
        "price": mostly(decimal_texts),
        "size": mostly(decimal_texts),
        "side": mostly(st.sampled_from(["BUY", "SELL", "buy"])),
        "time": mostly(rfc3339_texts),
    }
)
coinbase_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["snapshot", "update"]),
        "trades": mostly(st.lists(mostly(coinbase_trades), max_size=4)),
    }
)
coinbase_frames = st.fixed_dictionaries(
    {
        "channel": mostly(
            st.sampled_from(["market_trades", "market_trades", "heartbeats", "subscriptions"])
        ),
        "client_id": st.just(""),
        "timestamp": rfc3339_texts,
        "sequence_num": mostly(st.integers(min_value=0, max_value=2**63)),
        "events": mostly(st.lists(mostly(coinbase_events), max_size=3)),
    }
) | st.fixed_dictionaries({"type": st.just("error"), "message": json_values})


@pytest.mark.parametrize("adapter", adapters(CoinbaseAdapter), ids=adapter_id)
@FUZZ
@given(frame=coinbase_frames)
def test_plausible_coinbase_frames_never_raise(adapter: ExchangeAdapter, frame: object) -> None:
    assert_well_formed(adapter, adapter.parse(dump(frame), NOW_US))


@FUZZ
@given(
    price=st.decimals(
        min_value=Decimal("1e-10"), max_value=Decimal("999999999.9999999999"), places=10
    )
)
def test_kraken_prices_survive_with_their_exact_value(price: Decimal) -> None:
    trade = {
        "symbol": "XBT/USD",
        "side": "buy",
        "price": price,
        "qty": Decimal("1"),
        "trade_id": 1,
        "timestamp": us_to_rfc3339(NOW_US),
    }
    parsed = KrakenAdapter(["BTC-USD"]).parse(dump({"channel": "trade", "data": [trade]}), NOW_US)
    [normalized] = parsed.trades
    assert Decimal(normalized.price) == price


@FUZZ
@given(price=st.from_regex(r"[1-9][0-9]{0,8}\.[0-9]{1,10}", fullmatch=True))
def test_binance_and_coinbase_price_strings_pass_through_unchanged(price: str) -> None:
    time_ms = NOW_US // 1000
    binance = {"e": "trade", "s": "BTCUSDT", "t": 1, "p": price, "q": "1", "T": time_ms, "m": True}
    [trade] = BinanceAdapter(["BTC-USDT"]).parse(json.dumps(binance), NOW_US).trades
    assert trade.price == price
    coinbase_trade = {
        "trade_id": "1",
        "product_id": "BTC-USD",
        "price": price,
        "size": "1",
        "side": "SELL",
        "time": us_to_rfc3339(NOW_US),
    }
    coinbase = {"channel": "market_trades", "events": [{"trades": [coinbase_trade]}]}
    [trade] = CoinbaseAdapter(["BTC-USD"]).parse(json.dumps(coinbase), NOW_US).trades
    assert trade.price == price


def test_adapter_class_names_the_choices_for_an_unknown_exchange() -> None:
    choices = "binance, binance-futures, coinbase, kraken"
    with pytest.raises(ValueError, match=f"unknown exchange 'x': choose one of {choices}"):
        adapter_class("x")


# --- Hostile values: what a broken or malicious feed could put in any field, inside otherwise
# valid frames (one field or a few changed, or added), then the frame itself mangled.

BIG = 200_000  # a 200 KB value

hostile_texts = st.sampled_from(
    [
        "",
        "abc",
        "1,5",
        "1e5",
        "1E-8",
        "NaN",
        "Infinity",
        "-Infinity",
        "-0",
        "-0.0",
        "+1",
        "0x1A",
        "1_000",
        "9" * 39,  # more than 38 digits
        "0." + "1" * 39,
        "1.00000000001",  # 11 decimals
        "1000000000",  # 1e9: the first price out of bounds
        "\u0664\u0662",  # Arabic-Indic 42
        "\uff14\uff12",  # full-width 42
        "4\u200b2",  # zero-width space
        "\ufeff42",  # byte-order mark
        "4\x002",
        "42\n",
        " 42",
        "4\u202e2",  # right-to-left override
        "BTC-USDT",
        "buy",
        "2023-09-25T07:49:37.708706Z",
        "A" * BIG,
        "1." + "0" * BIG,  # a valid price: trailing zeros past the scale are allowed
    ]
)
# JSON number tokens written as they are (orjson.Fragment): exponents, -0, more than 38 digits,
# beyond 64 bits, and the non-standard NaN/Infinity that make a frame invalid JSON.
hostile_numbers = st.sampled_from(
    [
        "1e5",
        "1E-8",
        "1e400",
        "-0",
        "-0.0",
        "0",
        "1" * 39,
        "0." + "1" * 39,
        "18446744073709551616",
        "0.30000000000000004",
        "123456789.0000000001",
        "NaN",
        "Infinity",
        "-Infinity",
        "1" + "0" * BIG,
    ]
).map(orjson.Fragment)
# Texts and number tokens weigh most: they reach the value checks past the type checks.
hostile = st.one_of(
    hostile_texts,
    hostile_texts,
    hostile_texts,
    hostile_numbers,
    hostile_numbers,
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.text(max_size=4), scalars, max_size=3),
)
INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with fields replaced or added (a change to a key it lacks is an extra field)."""
    return {**base, **changes}


def changes_to(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """One (mostly: so a value gets past the other fields' checks) to three of ``keys`` or
    extra fields, given hostile values."""
    names = st.sampled_from([*keys, "extra", "ts"])
    return st.one_of(
        st.dictionaries(names, hostile, min_size=1, max_size=1),
        st.dictionaries(names, hostile, min_size=1, max_size=1),
        st.dictionaries(names, hostile, min_size=1, max_size=3),
    )


@st.composite
def on_the_wire(draw: st.DrawFn, body: dict[str, Any]) -> str | bytes:
    """The frame as text or bytes, or truncated, or with invalid UTF-8 spliced in."""
    value = orjson.dumps(body)
    how = draw(st.sampled_from(["text", "text", "text", "bytes", "truncated", "invalid_utf8"]))
    if how == "text":
        return value.decode()
    if how == "bytes":
        return value
    cut = draw(st.integers(min_value=0, max_value=len(value) - 1))
    if how == "truncated":
        return value[:cut]
    return value[:cut] + draw(st.sampled_from(INVALID_UTF8)) + value[cut:]


NEIGHBOUR_ID = 777  # a valid trade next to the hostile one in multi-trade frames

BINANCE_TRADE = {
    "e": "trade",
    "E": NOW_US // 1000,
    "s": "BTCUSDT",
    "t": 1,
    "p": "42000.10",
    "q": "0.00100000",
    "T": NOW_US // 1000,
    "m": True,
    "M": True,
}
# USD-M futures: the order type instead of M.
BINANCE_FUTURES_TRADE = {**{k: v for k, v in BINANCE_TRADE.items() if k != "M"}, "X": "MARKET"}
KRAKEN_TRADE = {
    "symbol": "XBT/USD",
    "side": "sell",
    "price": orjson.Fragment("26571.8"),
    "qty": orjson.Fragment("0.1"),
    "ord_type": "market",
    "trade_id": 1,
    "timestamp": us_to_rfc3339(NOW_US),
}
COINBASE_TRADE = {
    "trade_id": "1",
    "product_id": "BTC-USD",
    "price": "1260.01",
    "size": "0.3",
    "side": "BUY",
    "time": us_to_rfc3339(NOW_US),
}


def binance_hostile(trade: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
    return changed({"stream": "btcusdt@trade", "data": changed(BINANCE_TRADE, trade)}, frame)


def binance_futures_hostile(trade: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
    data = changed(BINANCE_FUTURES_TRADE, trade)
    return changed({"stream": "btcusdt@trade", "data": data}, frame)


def kraken_hostile(trade: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
    data = [changed(KRAKEN_TRADE, trade), {**KRAKEN_TRADE, "trade_id": NEIGHBOUR_ID}]
    return changed({"channel": "trade", "type": "update", "data": data}, frame)


def coinbase_hostile(trade: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
    trades = [changed(COINBASE_TRADE, trade), {**COINBASE_TRADE, "trade_id": str(NEIGHBOUR_ID)}]
    body = {
        "channel": "market_trades",
        "client_id": "",
        "timestamp": us_to_rfc3339(NOW_US),
        "sequence_num": 0,
        "events": [{"type": "update", "trades": trades}],
    }
    return changed(body, frame)


# Per adapter: the hostile frame, the trade fields and the envelope fields it may change.
HOSTILE = {
    "binance": (binance_hostile, list(BINANCE_TRADE), ["stream", "data"]),
    "binance-futures": (binance_futures_hostile, list(BINANCE_FUTURES_TRADE), ["stream", "data"]),
    "kraken": (kraken_hostile, list(KRAKEN_TRADE), ["channel", "type", "data"]),
    "coinbase": (coinbase_hostile, list(COINBASE_TRADE), ["channel", "sequence_num", "events"]),
}


@pytest.mark.parametrize("adapter", ALL_ADAPTERS, ids=adapter_id)
@FUZZ
@given(data=st.data())
def test_hostile_values_in_every_field_never_raise(
    adapter: ExchangeAdapter, data: st.DataObject
) -> None:
    build, trade_keys, frame_keys = HOSTILE[adapter.name]
    trade = data.draw(changes_to(trade_keys), label="trade changes")
    unchanged: st.SearchStrategy[dict[str, Any]] = st.just({})
    frame = data.draw(
        st.one_of(unchanged, unchanged, unchanged, changes_to(frame_keys)), label="frame changes"
    )
    raw = data.draw(on_the_wire(build(trade, frame)), label="wire")
    parsed = adapter.parse(raw, NOW_US)
    assert_well_formed(adapter, parsed)
    if parsed.kind is FrameKind.TRADES and not frame and not adapter.name.startswith("binance"):
        # One bad trade never takes its valid neighbour with it.
        assert str(NEIGHBOUR_ID) in [t.trade_id for t in parsed.trades]


# The dump replay: CSV text, no JSON types, so the hostile values are texts (commas, quotes
# and line breaks included), in a row between two valid ones, the line maybe mangled.
DUMP_ROW = ["2", "42000.01000000", "0.00100000", "42.00001000", str(NOW_US // 1000), "True", "True"]
dump_texts = hostile_texts | st.sampled_from(['"1"', "1,2", "1\r2", "1\n2", "\x1b[31m", "true"])


@FUZZ
@given(
    changes=st.dictionaries(st.integers(min_value=0, max_value=7), dump_texts, max_size=3),
    how=st.sampled_from(["as is", "truncated", "invalid_utf8", "crlf"]),
    cut=st.integers(min_value=0, max_value=60),
    bad=st.sampled_from(INVALID_UTF8),
)
def test_hostile_dump_rows_never_raise(
    changes: dict[int, str], how: str, cut: int, bad: bytes
) -> None:
    row = DUMP_ROW + [""] * (max(changes, default=0) + 1 - len(DUMP_ROW))  # extra columns
    for column, text in changes.items():
        row[column] = text
    line = ",".join(row).encode()
    if how == "truncated":
        line = line[:cut]
    elif how == "invalid_utf8":
        line = line[:cut] + bad + line[cut:]
    elif how == "crlf":
        line += b"\r"
    first, last = (",".join([trade_id, *DUMP_ROW[1:]]).encode() for trade_id in "13")
    dump = b"\n".join([first, line, last]) + b"\n"
    items = list(dump_items(io.BytesIO(dump), "BTCUSDT-trades-2023-11-14.csv", "BTC-USDT"))
    for item in items:
        assert (item.trade is None) != (item.dead_letter is None)
        if item.trade is not None:
            assert (item.trade.exchange, item.trade.symbol) == ("binance", "BTC-USDT")
            assert_valid_trade(item.trade)
        if item.dead_letter is not None:
            assert item.dead_letter.source == "binance"
            assert_bounded_dead_letter(item.dead_letter)
    trade_ids = [item.trade.trade_id for item in items if item.trade is not None]
    assert trade_ids[0] == "1" and trade_ids[-1] == "3"
