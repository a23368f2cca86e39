"""The simulator's encoders against the exchanges' documented frame shapes, and its malformed
frames against a minimal reference parser built on ``make_trade`` (not the adapters)."""

import json
import re
from typing import Any

import pytest

from cryptolake.common.symbols import split_concatenated
from cryptolake.common.timeutil import rfc3339_to_us
from cryptolake.common.trade import RejectReason, Trade, TradeRejected, make_trade
from cryptolake.producer.simulator import wire
from cryptolake.producer.simulator.market import SimTrade

SELL = SimTrade("BTC-USDT", 4_200_000_123, "60000.10", "0.00001", "sell", 1_695_628_177_708_706)
BUY = SimTrade("ETH-USDT", 77, "3000.00", "1.5000", "buy", 1_695_628_178_000_001)
RFC3339_US = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
RFC3339_NS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


def _loads(frame: bytes) -> Any:
    # Kraken's numbers must be read exactly: floats as their decimal text.
    return json.loads(frame, parse_float=str)


def _number_text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def reference_parse(fmt: str, frame: bytes) -> list[Trade]:
    """What a correct parser makes of one trade frame; raises TradeRejected like an adapter
    classifies (a sketch for the tests, not the producer's adapters)."""
    try:
        obj = _loads(frame)
    except json.JSONDecodeError as exc:
        raise TradeRejected(RejectReason.MALFORMED_JSON, str(exc)) from exc
    try:
        if fmt in wire.BINANCE_FORMATS:
            data = obj["data"]
            if data.get("e") != "trade":
                raise TradeRejected(RejectReason.UNKNOWN_MESSAGE, str(data.get("e")))
            contract = "-PERP" if fmt == "binance-futures" else ""
            rows = [
                (
                    f"{split_concatenated(data['s'])}{contract}",
                    data["t"],
                    data["p"],
                    data["q"],
                    "sell" if data["m"] else "buy",
                    data["T"] * 1000,
                )
            ]
        elif fmt == "kraken":
            if obj.get("channel") != "trade":
                raise TradeRejected(RejectReason.UNKNOWN_MESSAGE, str(obj.get("channel")))
            rows = [
                (
                    item["symbol"].replace("/", "-"),
                    item["trade_id"],
                    _number_text(item["price"]),
                    _number_text(item["qty"]),
                    item["side"],
                    rfc3339_to_us(item["timestamp"]),
                )
                for item in obj["data"]
            ]
        else:
            if obj.get("channel") != "market_trades":
                raise TradeRejected(RejectReason.UNKNOWN_MESSAGE, str(obj.get("channel")))
            rows = [
                (
                    item["product_id"],
                    item["trade_id"],
                    item["price"],
                    item["size"],
                    # The wire carries the maker's side; the taker's is the opposite.
                    {"BUY": "sell", "SELL": "buy"}[item["side"]],
                    rfc3339_to_us(item["time"]),
                )
                for event in obj["events"]
                for item in event["trades"]
            ]
    except KeyError as exc:
        raise TradeRejected(RejectReason.MISSING_FIELD, str(exc)) from exc
    return [
        make_trade(
            exchange="simulator",
            symbol=symbol,
            trade_id=trade_id,
            price=price,
            qty=qty,
            side=side,
            event_time=event_time,
            ingest_time=1_695_628_200_000_000,
        )
        for symbol, trade_id, price, qty, side, event_time in rows
    ]


# --- Binance ------------------------------------------------------------------------------


def test_binance_combined_stream_frame_has_the_documented_shape():
    frame = json.loads(wire.encode_binance_trade(SELL))
    assert frame == {
        "stream": "btcusdt@trade",
        "data": {
            "e": "trade",
            "E": 1_695_628_177_708,
            "s": "BTCUSDT",
            "t": 4_200_000_123,
            "p": "60000.10000000",
            "q": "0.00001000",
            "T": 1_695_628_177_708,
            "m": True,
            "M": True,
        },
    }


def test_binance_m_flag_is_false_when_the_taker_bought_and_ws_form_is_bare():
    frame = json.loads(wire.encode_binance_trade(BUY, combined=False))
    assert frame["e"] == "trade" and frame["m"] is False and "stream" not in frame


def test_binance_control_frames():
    assert json.loads(wire.encode_binance_response(3)) == {"result": None, "id": 3}
    assert json.loads(wire.encode_binance_shutdown(1_695_628_177_708_706)) == {
        "e": "serverShutdown",
        "E": 1_695_628_177_708,
    }


def test_binance_stream_names_map_both_ways():
    assert wire.binance_stream("ETH-USDT") == "ethusdt@trade"
    assert wire.symbol_from_binance_stream("ethusdt@trade") == "ETH-USDT"
    assert wire.symbol_from_binance_stream("ethusdt@depth") is None


# --- Kraken -------------------------------------------------------------------------------


def test_kraken_trade_frame_has_the_documented_shape_with_exact_json_numbers():
    raw = wire.encode_kraken_trades([SELL, SELL._replace(trade_id=4_200_000_124)])
    # The digits are on the wire verbatim, as JSON numbers, without trailing zeros.
    assert b'"price":60000.1,"qty":0.00001,' in raw
    frame = _loads(raw)
    assert frame["channel"] == "trade" and frame["type"] == "update"
    assert frame["data"][0] == {
        "symbol": "BTC/USDT",
        "side": "sell",
        "price": "60000.1",
        "qty": "0.00001",
        "ord_type": "market",
        "trade_id": 4_200_000_123,
        "timestamp": "2023-09-25T07:49:37.708706Z",
    }
    assert [item["trade_id"] for item in frame["data"]] == [4_200_000_123, 4_200_000_124]


def test_kraken_whole_prices_are_json_integers():
    frame = json.loads(wire.encode_kraken_trades([BUY]))
    assert frame["data"][0]["price"] == 3000 and frame["data"][0]["qty"] == 1.5


def test_kraken_status_ack_heartbeat_and_maintenance_frames():
    status = json.loads(wire.encode_kraken_status(123))
    assert status["channel"] == "status" and status["type"] == "update"
    assert status["data"][0]["system"] == "online" and status["data"][0]["api_version"] == "v2"
    assert status["data"][0]["connection_id"] == 123
    ack = json.loads(
        wire.encode_kraken_ack(
            "subscribe",
            {"channel": "trade", "snapshot": False, "symbol": "BTC/USD"},
            req_id=None,
            time_in_us=SELL.event_time_us,
            time_out_us=SELL.event_time_us + 50,
        )
    )
    assert ack == {
        "method": "subscribe",
        "result": {"channel": "trade", "snapshot": False, "symbol": "BTC/USD"},
        "success": True,
        "time_in": "2023-09-25T07:49:37.708706Z",
        "time_out": "2023-09-25T07:49:37.708756Z",
    }
    assert json.loads(wire.KRAKEN_HEARTBEAT) == {"channel": "heartbeat"}
    notice = json.loads(wire.encode_shutdown_notice("kraken", now_us=0, connection_id=5))
    assert notice["channel"] == "status" and notice["data"][0]["system"] == "maintenance"


# --- Coinbase -----------------------------------------------------------------------------


def test_coinbase_market_trades_frame_has_the_documented_shape():
    frame = json.loads(
        wire.encode_coinbase_trades([SELL, BUY], sequence_num=4, now_us=BUY.event_time_us)
    )
    assert frame["channel"] == "market_trades" and frame["client_id"] == ""
    assert frame["sequence_num"] == 4 and RFC3339_NS.fullmatch(frame["timestamp"])
    (event,) = frame["events"]
    assert event["type"] == "update"
    assert event["trades"][0] == {
        "trade_id": "4200000123",
        "product_id": "BTC-USDT",
        "price": "60000.10",
        "size": "0.00001",
        "side": "BUY",  # the maker's side: a taker sell fills a resting buy
        "time": "2023-09-25T07:49:37.708706Z",
    }
    assert event["trades"][1]["side"] == "SELL"


def test_coinbase_subscriptions_heartbeats_and_shutdown_frames():
    ack = json.loads(
        wire.encode_coinbase_subscriptions(
            {"market_trades": ["BTC-USD"], "heartbeats": ["heartbeats"]}, sequence_num=0, now_us=0
        )
    )
    assert ack["channel"] == "subscriptions" and ack["sequence_num"] == 0
    assert ack["events"] == [
        {"subscriptions": {"market_trades": ["BTC-USD"], "heartbeats": ["heartbeats"]}}
    ]
    beat = json.loads(wire.encode_coinbase_heartbeat(7, sequence_num=9, now_us=SELL.event_time_us))
    assert beat["channel"] == "heartbeats" and beat["sequence_num"] == 9
    assert beat["events"][0]["heartbeat_counter"] == 7
    assert beat["events"][0]["current_time"].startswith("2023-09-25 07:49:37.708706000 +0000 UTC")
    assert json.loads(wire.encode_shutdown_notice("coinbase", now_us=0)) == {
        "type": "error",
        "message": "server shutting down",
    }


# --- every format ---------------------------------------------------------------------------


def traded_in(fmt: str, trade: SimTrade) -> SimTrade:
    """The trade as the format's market names it (contracts on the futures host)."""
    return trade._replace(symbol=trade.symbol + "-PERP") if fmt == "binance-futures" else trade


@pytest.mark.parametrize("fmt", wire.FORMATS)
def test_wire_truth_is_what_a_correct_parser_derives(fmt):
    trades = [traded_in(fmt, SELL), traded_in(fmt, BUY)]
    frames = (
        [wire.encode_binance_trade(t) for t in trades]
        if fmt in wire.BINANCE_FORMATS
        else [wire.encode_kraken_trades(trades)]
        if fmt == "kraken"
        else [wire.encode_coinbase_trades(trades, sequence_num=0, now_us=BUY.event_time_us)]
    )
    parsed = [trade for frame in frames for trade in reference_parse(fmt, frame)]
    truths = [wire.wire_truth(fmt, t) for t in trades]
    assert [(p.symbol, p.trade_id, p.price, p.qty, p.side, p.event_time) for p in parsed] == [
        (t.symbol, str(t.trade_id), truth.price, truth.qty, t.side, truth.event_time_us)
        for t, truth in zip(trades, truths, strict=True)
    ]
    assert all(RFC3339_US.fullmatch(wire.rfc3339_us(t.event_time_us)) for t in trades)


@pytest.mark.parametrize("fmt", wire.FORMATS)
@pytest.mark.parametrize("kind", wire.MALFORMED_KINDS)
def test_malformed_frames_get_the_promised_reason(fmt, kind):
    bad = wire.malformed_frame(fmt, kind, SELL, sequence_num=3)
    assert bad.kind is kind and bad.reason is wire.EXPECTED_REASON[kind]
    with pytest.raises(TradeRejected) as rejected:
        reference_parse(fmt, bad.frame)
    assert rejected.value.reason is bad.reason
    bad.frame.decode("ascii")  # still a valid text frame


def _good_frame(fmt: str, trade: SimTrade) -> bytes:
    if fmt in wire.BINANCE_FORMATS:
        return wire.encode_binance_trade(trade)
    if fmt == "kraken":
        return wire.encode_kraken_trades([trade])
    return wire.encode_coinbase_trades([trade], sequence_num=3, now_us=trade.event_time_us)


def _flatten(obj: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    if isinstance(obj, dict):
        return {
            k: v for key, value in obj.items() for k, v in _flatten(value, (*path, key)).items()
        }
    if isinstance(obj, list):
        return {k: v for i, value in enumerate(obj) for k, v in _flatten(value, (*path, i)).items()}
    return {path: obj}


@pytest.mark.parametrize("fmt", wire.FORMATS)
@pytest.mark.parametrize("kind", wire.MALFORMED_KINDS)
def test_a_malformed_frame_is_the_good_frame_with_one_thing_spoiled(fmt, kind):
    good = _good_frame(fmt, SELL)
    bad = wire.malformed_frame(fmt, kind, SELL, sequence_num=3).frame
    if kind is wire.MalformedKind.TRUNCATED_JSON:
        assert good.startswith(bad) and len(bad) < len(good)
        return
    before, after = _flatten(_loads(good)), _flatten(_loads(bad))
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert len(changed) == 1, changed


def test_the_expected_reasons_cover_every_kind_and_are_reject_reasons():
    assert set(wire.EXPECTED_REASON) == set(wire.MalformedKind)
    assert {str(r) for r in wire.EXPECTED_REASON.values()} == {
        "malformed_json",
        "unknown_message",
        "missing_field",
        "bad_price",
        "bad_qty",
        "bad_timestamp",
    }


def test_a_perpetual_contract_trades_as_on_binance_futures():
    """The USD-M futures trade event: the pair spelt as on spot, the order type ``X``, no
    ``M``; the stream name is the spot one on the futures host."""
    frame = json.loads(wire.encode_binance_trade(traded_in("binance-futures", SELL)))
    assert frame == {
        "stream": "btcusdt@trade",
        "data": {"e": "trade", "E": 1_695_628_177_708, "T": 1_695_628_177_708, "s": "BTCUSDT",
                 "t": 4_200_000_123, "p": "60000.10000000", "q": "0.00001000", "X": "MARKET",
                 "m": True},
    }  # fmt: skip
