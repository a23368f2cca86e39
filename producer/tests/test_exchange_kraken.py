"""KrakenAdapter against frames from the Kraken spot WebSocket v2 documentation."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cryptolake.common.trade import RAW_PREFIX_CHARS, RejectReason, Trade
from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.exchanges.base import FrameKind
from cryptolake.producer.exchanges.kraken import KrakenAdapter
from cryptolake.producer.gaps import Gap

FRAMES = Path(__file__).parent / "frames" / "kraken"
# A minute after the documented trades (2023-09-25T07:49:36.925603Z).
RECV_US = 1_695_628_236_925_603


def frame(name: str) -> str:
    return (FRAMES / name).read_text()


def element(**changes: object) -> dict[str, Any]:
    """A trade like the docs' (a taker selling XBT/USD), fields changed or (None) removed."""
    trade: dict[str, Any] = {
        "symbol": "XBT/USD",
        "side": "sell",
        "price": Decimal("26571.8"),
        "qty": Decimal("0.1"),
        "ord_type": "market",
        "trade_id": 4665906,
        "timestamp": "2023-09-25T07:49:37.708706Z",
    }
    trade.update(changes)
    return {key: value for key, value in trade.items() if value is not None}


def as_number(value: Decimal) -> orjson.Fragment:
    return orjson.Fragment(str(value))


def trade_frame(*elements: object) -> str:
    """A trade update frame; Decimals become JSON numbers with exactly their digits."""
    body = {"channel": "trade", "type": "update", "data": list(elements)}
    return orjson.dumps(body, default=as_number).decode()


def parsed_raw(raw: str) -> object:
    return json.loads(raw, parse_float=Decimal)


@pytest.fixture
def adapter() -> KrakenAdapter:
    return KrakenAdapter(["BTC-USD", "MATIC-USD"])


def test_registry_maps_kraken_to_its_adapter() -> None:
    assert adapter_class("kraken") is KrakenAdapter


def test_subscribes_to_trades_of_every_symbol_without_a_snapshot(adapter: KrakenAdapter) -> None:
    assert adapter.connect_url() == "wss://ws.kraken.com/v2"
    [message] = adapter.subscribe_messages()
    assert json.loads(message) == {
        "method": "subscribe",
        "params": {"channel": "trade", "symbol": ["BTC/USD", "MATIC/USD"], "snapshot": False},
    }


def test_documented_trade_snapshot_normalizes_exactly(adapter: KrakenAdapter) -> None:
    parsed = adapter.parse(frame("trade_snapshot.json"), RECV_US)
    assert parsed.kind is FrameKind.TRADES
    assert parsed.dead_letters == []
    assert parsed.trades == [
        Trade(
            "kraken",
            "MATIC-USD",
            "4665846",
            "0.5147",
            "6423.46326",
            "buy",
            1_695_628_116_925_533,
            RECV_US,
        ),
        Trade(
            "kraken",
            "MATIC-USD",
            "4665847",
            "0.5147",
            "1136.19677815",
            "buy",
            1_695_628_176_925_603,
            RECV_US,
        ),
    ]


def test_xbt_becomes_btc_and_the_taker_side_is_kept(adapter: KrakenAdapter) -> None:
    [trade] = adapter.parse(trade_frame(element()), RECV_US).trades
    assert trade == Trade(
        "kraken", "BTC-USD", "4665906", "26571.8", "0.1", "sell", 1_695_628_177_708_706, RECV_US
    )


@pytest.mark.parametrize(
    ("number", "text"),
    [
        ("123456789.0000000001", "123456789.0000000001"),  # a binary float: 123456789.0
        ("0.3000000004", "0.3000000004"),
        ("1.10", "1.10"),
        ("1e-8", "0.00000001"),
        ("5.1E+2", "510"),
        ("27000", "27000"),
        ("123456789.123456789", "123456789.123456789"),
    ],
)
def test_json_numbers_keep_their_exact_digits(
    adapter: KrakenAdapter, number: str, text: str
) -> None:
    raw = trade_frame(element(price=Decimal("1"))).replace('"price":1', f'"price":{number}')
    [trade] = adapter.parse(raw, RECV_US).trades
    assert trade.price == text


@pytest.mark.parametrize(
    "number",
    ["0.30000000000000004", "0.1000000000000000055511151231257827", "1e-11", "1E+9", "-0.0"],
)
def test_json_numbers_beyond_the_price_bounds_are_rejected_not_rounded(
    adapter: KrakenAdapter, number: str
) -> None:
    raw = trade_frame(element(price=Decimal("1"))).replace('"price":1', f'"price":{number}')
    parsed = adapter.parse(raw, RECV_US)
    assert parsed.trades == []
    assert [letter.reason for letter in parsed.dead_letters] == [RejectReason.BAD_PRICE]


def test_bytes_frames_parse_like_text(adapter: KrakenAdapter) -> None:
    raw = frame("trade_snapshot.json")
    assert adapter.parse(raw.encode(), RECV_US) == adapter.parse(raw, RECV_US)


def test_simulator_label_is_written_into_trades_and_dead_letters() -> None:
    adapter = KrakenAdapter(["BTC-USD"], label="simulator")
    parsed = adapter.parse(trade_frame(element(), element(side="hold")), RECV_US)
    assert [trade.exchange for trade in parsed.trades] == ["simulator"]
    assert [letter.source for letter in parsed.dead_letters] == ["simulator"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("heartbeat.json", FrameKind.HEARTBEAT),
        ("status_online.json", FrameKind.CONTROL),
        ("subscribe_ack.json", FrameKind.CONTROL),
        ("pong.json", FrameKind.CONTROL),
    ],
)
def test_documented_service_frames(adapter: KrakenAdapter, name: str, kind: FrameKind) -> None:
    parsed = adapter.parse(frame(name), RECV_US)
    assert (parsed.kind, parsed.trades, parsed.dead_letters) == (kind, [], [])


@pytest.mark.parametrize("system", ["maintenance", "cancel_only", "post_only"])
def test_engine_status_other_than_online_asks_for_a_reconnect(
    adapter: KrakenAdapter, system: str
) -> None:
    status = frame("status_online.json").replace('"online"', json.dumps(system))
    assert adapter.parse(status, RECV_US).kind is FrameKind.SHUTDOWN


def test_failed_subscription_goes_to_the_dlq_with_kraken_error(adapter: KrakenAdapter) -> None:
    parsed = adapter.parse(frame("subscribe_error.json"), RECV_US)
    assert parsed.kind is FrameKind.REJECTED
    [letter] = parsed.dead_letters
    assert letter.reason is RejectReason.UNKNOWN_MESSAGE
    assert "Currency pair not supported XBT/USD" in letter.detail


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        ('{"channel": "trade", "data": [', RejectReason.MALFORMED_JSON, ""),
        (b'{"channel": "heartbeat"}\xff', RejectReason.MALFORMED_JSON, "utf-8"),
        ('{"channel": "trade", "data": [{"price": NaN}]}', RejectReason.MALFORMED_JSON, "NaN"),
        ("[" * 100_000, RejectReason.MALFORMED_JSON, ""),
        ('"heartbeat"', RejectReason.UNKNOWN_MESSAGE, "JSON object"),
        ('{"channel": "book", "type": "update", "data": []}', RejectReason.UNKNOWN_MESSAGE, "book"),
        ('{"method": "add_order", "success": true}', RejectReason.UNKNOWN_MESSAGE, "add_order"),
        ('{"channel": "trade", "type": "update"}', RejectReason.MISSING_FIELD, "data"),
        ('{"channel": "trade", "data": {"symbol": "BTC/USD"}}', RejectReason.BAD_TYPE, "list"),
        ('{"channel": "status", "data": "online"}', RejectReason.BAD_TYPE, "status"),
        ('{"channel": "status", "data": [{"version": "2"}]}', RejectReason.MISSING_FIELD, "system"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_a_bad_frame_goes_whole_to_the_dlq(
    adapter: KrakenAdapter, raw: str | bytes, reason: RejectReason, detail: str
) -> None:
    parsed = adapter.parse(raw, RECV_US)
    assert (parsed.kind, parsed.trades) == (FrameKind.REJECTED, [])
    [letter] = parsed.dead_letters
    assert (letter.source, letter.reason, letter.ingest_time) == ("kraken", reason, RECV_US)
    assert detail in letter.detail
    # The frame as text, or its first RAW_PREFIX_CHARS characters when it is longer.
    text = raw if isinstance(raw, str) else raw.decode(errors="replace")
    assert letter.raw == text[:RAW_PREFIX_CHARS]


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        (element(qty=None), RejectReason.MISSING_FIELD, "qty is missing"),
        (element(price="26571.8"), RejectReason.BAD_TYPE, "price is str"),
        (element(trade_id="4665906"), RejectReason.BAD_TYPE, "trade_id is str"),
        (element(side=True), RejectReason.BAD_TYPE, "side is bool"),
        (element(price=Decimal("-26571.8")), RejectReason.BAD_PRICE, "price"),
        (element(price=Decimal("1E+40")), RejectReason.BAD_PRICE, "out of range"),
        (element(qty=Decimal("0.0")), RejectReason.BAD_QTY, "qty"),
        (element(qty=Decimal("1E-999999999")), RejectReason.BAD_QTY, "out of range"),
        (element(side="hold"), RejectReason.BAD_SIDE, "hold"),
        (element(symbol="XBTUSD"), RejectReason.BAD_SYMBOL, "XBTUSD"),
        (element(symbol="XBT/US D"), RejectReason.BAD_SYMBOL, "XBT/US D"),
        (element(timestamp="2023-09-25 07:49:37"), RejectReason.BAD_TIMESTAMP, "RFC 3339"),
        (element(timestamp="2023-09-25T09:49:37+02:00"), RejectReason.BAD_TIMESTAMP, "UTC"),
        (element(timestamp="2009-12-31T23:59:59Z"), RejectReason.BAD_TIMESTAMP, "2010"),
        ("not a trade", RejectReason.BAD_TYPE, "JSON object"),
    ],
)
def test_one_bad_trade_is_dead_lettered_and_its_neighbours_kept(
    adapter: KrakenAdapter, bad: object, reason: RejectReason, detail: str
) -> None:
    good_before, good_after = element(trade_id=1), element(trade_id=3)
    parsed = adapter.parse(trade_frame(good_before, bad, good_after), RECV_US)
    assert parsed.kind is FrameKind.TRADES
    assert [trade.trade_id for trade in parsed.trades] == ["1", "3"]
    [letter] = parsed.dead_letters
    assert (letter.source, letter.reason, letter.ingest_time) == ("kraken", reason, RECV_US)
    assert detail in letter.detail
    assert parsed_raw(letter.raw) == parsed_raw(orjson.dumps(bad, default=as_number).decode())


def test_a_bad_trade_that_cannot_be_rewritten_keeps_the_whole_frame(
    adapter: KrakenAdapter,
) -> None:
    # orjson writes no integer over 64 bits, so the element's own JSON cannot be rebuilt.
    raw = '{"channel": "trade", "data": [{"symbol": "XBT/USD", "trade_id": 18446744073709551616}]}'
    [letter] = adapter.parse(raw, RECV_US).dead_letters
    assert (letter.reason, letter.raw) == (RejectReason.MISSING_FIELD, raw)


# GET /0/public/Trades as the REST docs show it (a pair's list and the `last` cursor).
HISTORY = (
    b'{"error": [], "result": {"XXBTZUSD": [["30243.40000", "0.34507674", 1688669597.8277369,'
    b' "b", "m", "", 61044952], ["30243.30000", "0.00376960", 1688669598.2804112, "s", "l",'
    b' "", 61044953]], "last": "1688671969993150842"}}'
)


def test_history_pages_by_time_from_the_trade_before_the_gap() -> None:
    adapter = KrakenAdapter(["BTC-USD"])
    gap = Gap("BTC-USD", 61044952, 61044960, 0.0, after_time_us=1_688_669_597_000_000)
    first = adapter.history_request("BTC-USD", gap, None)
    assert first.url == "https://api.kraken.com/0/public/Trades"
    assert first.params == {"pair": "XBTUSD", "since": "1688669596999999999", "count": "1000"}
    assert adapter.history_request("BTC-USD", gap, "17").params["since"] == "17"


def test_history_trades_keep_every_digit_and_the_taker_side() -> None:
    page = KrakenAdapter(["BTC-USD"]).parse_history("BTC-USD", HISTORY, RECV_US)
    assert page.next_cursor == "1688671969993150842" and not page.parsed.dead_letters
    first, second = page.parsed.trades
    assert (first.trade_id, first.price, first.qty, first.side) == (
        "61044952", "30243.40000", "0.34507674", "buy")  # fmt: skip
    assert first.event_time == 1_688_669_597_827_736  # 100 ns digits truncated to the µs
    assert (second.side, second.event_time) == ("sell", 1_688_669_598_280_411)


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        (["abc", "1", 1688669597.5, "b", "m", "", 7], RejectReason.BAD_PRICE),
        ([30243.4, "1", 1688669597.5, "b", "m", "", 7], RejectReason.BAD_TYPE),
        (["1", "1", 1688669597.5, "x", "m", "", 7], RejectReason.BAD_SIDE),
        (["1", "1", "noon", "b", "m", "", 7], RejectReason.BAD_TIMESTAMP),
        (["1", "1", 1e300, "b", "m", "", 7], RejectReason.BAD_TIMESTAMP),
        (["1", "1", 1688669597.5, "b", "m", "", "7"], RejectReason.BAD_TYPE),
        (["1", "1"], RejectReason.BAD_TYPE),
    ],
)  # fmt: skip
def test_a_hostile_history_row_is_a_dead_letter(element: list[Any], reason: RejectReason) -> None:
    body = json.dumps({"error": [], "result": {"XXBTZUSD": [element], "last": "1"}}).encode()
    page = KrakenAdapter(["BTC-USD"]).parse_history("BTC-USD", body, RECV_US)
    assert not page.parsed.trades
    (letter,) = page.parsed.dead_letters
    assert letter.reason == reason


def test_rate_limit_errors_are_busy_and_other_errors_reject_the_page() -> None:
    adapter = KrakenAdapter(["BTC-USD"])
    assert adapter.history_busy(b'{"error":["EGeneral:Too many requests"]}')
    assert not adapter.history_busy(HISTORY)
    page = adapter.parse_history("BTC-USD", b'{"error":["EQuery:Unknown asset pair"]}', RECV_US)
    assert page.parsed.kind is FrameKind.REJECTED and page.next_cursor is None
