"""Properties every exchange adapter keeps whatever arrives: ``parse`` never raises, and
everything it returns is a valid trade or a dead letter with a reason code."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptolake.common.timeutil import us_to_rfc3339
from cryptolake.common.trade import RejectReason, Trade
from cryptolake.producer.exchanges import ADAPTERS, adapter_class
from cryptolake.producer.exchanges.base import ExchangeAdapter, FrameKind, ParsedFrame
from cryptolake.producer.exchanges.binance import BinanceAdapter
from cryptolake.producer.exchanges.coinbase import CoinbaseAdapter
from cryptolake.producer.exchanges.kraken import KrakenAdapter

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


def assert_well_formed(adapter: ExchangeAdapter, parsed: ParsedFrame) -> None:
    assert isinstance(parsed, ParsedFrame)
    assert parsed.kind in FrameKind
    for trade in parsed.trades:
        assert trade.exchange == adapter.label
        assert trade.ingest_time == NOW_US
        assert Trade.from_json(trade.to_json()) == trade
    for letter in parsed.dead_letters:
        assert isinstance(letter.reason, RejectReason)
        assert letter.source == adapter.label
        assert orjson.loads(letter.to_json())["reason"] == letter.reason
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
@given(price=st.decimals(min_value=Decimal("1e-12"), max_value=Decimal("1e15"), places=12))
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
@given(price=st.from_regex(r"[1-9][0-9]{0,9}\.[0-9]{1,10}", fullmatch=True))
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
    with pytest.raises(ValueError, match="unknown exchange 'x': choose one of binance, coinbase"):
        adapter_class("x")
