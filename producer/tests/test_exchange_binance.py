"""BinanceAdapter against frames from the Binance spot WebSocket Streams documentation.

Binance sends one trade per frame, so a bad trade rejects its whole frame, and the side comes
from the boolean ``m``, so there is no ``bad_side`` case: a non-boolean ``m`` is ``bad_type``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cryptolake.common.trade import RejectReason, Trade
from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.exchanges.base import FrameKind
from cryptolake.producer.exchanges.binance import BinanceAdapter
from cryptolake.producer.gaps import Gap

FRAMES = Path(__file__).parent / "frames" / "binance"
# One second after the documented trade's time (1672515782136 ms).
RECV_US = 1_672_515_783_136_000


def frame(name: str) -> str:
    return (FRAMES / name).read_text()


def sample_payload() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(frame("trade_raw.json"))
    return payload


def combined(payload: object) -> str:
    return json.dumps({"stream": "bnbbtc@trade", "data": payload})


def documented_trade(exchange: str = "binance") -> Trade:
    return Trade(
        exchange=exchange,
        symbol="BNB-BTC",
        trade_id="12345",
        price="0.001",
        qty="100",
        side="sell",
        event_time=1_672_515_782_136_000,
        ingest_time=RECV_US,
    )


@pytest.fixture
def adapter() -> BinanceAdapter:
    return BinanceAdapter(["BNB-BTC", "BTC-USDT"])


def test_registry_maps_binance_to_its_adapter() -> None:
    assert adapter_class("binance") is BinanceAdapter


def test_connect_url_names_every_symbol_in_lower_case() -> None:
    adapter = BinanceAdapter(["BTC-USDT", "ETH-USDT"])
    assert adapter.connect_url() == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
    )


def test_connect_url_follows_an_overridden_base_url() -> None:
    adapter = BinanceAdapter(["BTC-USDT"], url="ws://127.0.0.1:9100/", label="simulator")
    assert adapter.connect_url() == "ws://127.0.0.1:9100/stream?streams=btcusdt@trade"


def test_the_url_alone_subscribes(adapter: BinanceAdapter) -> None:
    assert adapter.subscribe_messages() == []


def test_documented_combined_stream_trade_normalizes_exactly(adapter: BinanceAdapter) -> None:
    parsed = adapter.parse(frame("trade_combined.json"), RECV_US)
    assert parsed.kind is FrameKind.TRADES
    assert parsed.trades == [documented_trade()]
    assert parsed.dead_letters == []


def test_raw_stream_payload_without_the_envelope_parses_too(adapter: BinanceAdapter) -> None:
    assert adapter.parse(frame("trade_raw.json"), RECV_US).trades == [documented_trade()]


def test_bytes_frames_parse_like_text(adapter: BinanceAdapter) -> None:
    raw = frame("trade_combined.json").encode()
    assert adapter.parse(raw, RECV_US).trades == [documented_trade()]


def test_buyer_as_taker_is_a_buy(adapter: BinanceAdapter) -> None:
    payload = sample_payload() | {"m": False, "s": "BTCUSDT", "p": "67012.34000000"}
    [trade] = adapter.parse(combined(payload), RECV_US).trades
    assert (trade.symbol, trade.side, trade.price) == ("BTC-USDT", "buy", "67012.34000000")


def test_simulator_label_is_written_into_trades_and_dead_letters() -> None:
    adapter = BinanceAdapter(["BNB-BTC"], label="simulator")
    assert adapter.parse(frame("trade_combined.json"), RECV_US).trades == [
        documented_trade("simulator")
    ]
    [letter] = adapter.parse("{", RECV_US).dead_letters
    assert letter.source == "simulator"


def test_subscription_reply_is_control(adapter: BinanceAdapter) -> None:
    assert adapter.parse(frame("subscribe_result.json"), RECV_US).kind is FrameKind.CONTROL


@pytest.mark.parametrize(
    "notice",
    [
        frame("server_shutdown_event.json"),
        '{"e": "serverShutdown", "E": 1770123456789}',
        '{"stream": "btcusdt@trade", "data": {"e": "serverShutdown", "E": 1770123456789}}',
    ],
    ids=["documented", "bare", "combined"],
)
def test_server_shutdown_notice_asks_for_a_reconnect(adapter: BinanceAdapter, notice: str) -> None:
    parsed = adapter.parse(notice, RECV_US)
    assert (parsed.kind, parsed.trades, parsed.dead_letters) == (FrameKind.SHUTDOWN, [], [])


def without(key: str) -> dict[str, Any]:
    payload = sample_payload()
    del payload[key]
    return payload


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        ('{"stream": "bnbbtc@trade", "data": {', RejectReason.MALFORMED_JSON, ""),
        (b"\xff\xfe", RejectReason.MALFORMED_JSON, ""),
        ("[1, 2]", RejectReason.UNKNOWN_MESSAGE, "JSON object"),
        (combined(sample_payload() | {"e": "aggTrade"}), RejectReason.UNKNOWN_MESSAGE, "aggTrade"),
        (
            '{"error": {"code": 2, "msg": "Invalid request"}, "id": 1}',
            RejectReason.UNKNOWN_MESSAGE,
            "",
        ),
        (combined(without("p")), RejectReason.MISSING_FIELD, "p is missing"),
        (combined(without("T")), RejectReason.MISSING_FIELD, "T is missing"),
        (combined([sample_payload()]), RejectReason.BAD_TYPE, "data"),
        (combined(sample_payload() | {"T": "1672515782136"}), RejectReason.BAD_TYPE, "T is str"),
        (combined(sample_payload() | {"m": "true"}), RejectReason.BAD_TYPE, "m is str"),
        (combined(sample_payload() | {"p": 0.001}), RejectReason.BAD_TYPE, "p is float"),
        (combined(sample_payload() | {"t": "12345"}), RejectReason.BAD_TYPE, "t is str"),
        (combined(sample_payload() | {"p": "-0.001"}), RejectReason.BAD_PRICE, "price"),
        (combined(sample_payload() | {"p": "1e-3"}), RejectReason.BAD_PRICE, "price"),
        (combined(sample_payload() | {"q": "0.000"}), RejectReason.BAD_QTY, "qty"),
        (combined(sample_payload() | {"s": "BNBXYZ"}), RejectReason.BAD_SYMBOL, "BNBXYZ"),
        (combined(sample_payload() | {"s": "B$BTC"}), RejectReason.BAD_SYMBOL, "B$BTC"),
        (combined(sample_payload() | {"T": 946_684_800_000}), RejectReason.BAD_TIMESTAMP, "2010"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_a_bad_frame_goes_whole_to_the_dlq(
    adapter: BinanceAdapter, raw: str | bytes, reason: RejectReason, detail: str
) -> None:
    parsed = adapter.parse(raw, RECV_US)
    assert (parsed.kind, parsed.trades) == (FrameKind.REJECTED, [])
    [letter] = parsed.dead_letters
    assert (letter.source, letter.reason, letter.ingest_time) == ("binance", reason, RECV_US)
    assert detail in letter.detail
    assert letter.raw == (raw if isinstance(raw, str) else raw.decode(errors="replace"))


# The Old Trade Lookup (GET /api/v3/historicalTrades) answer, as the REST docs show it.
HISTORY = (
    b'[{"id": 28457, "price": "4.00000100", "qty": "12.00000000", "quoteQty": "48.000012",'
    b' "time": 1499865549590, "isBuyerMaker": true, "isBestMatch": true}]'
)


def test_history_request_asks_for_a_page_from_an_id() -> None:
    adapter = BinanceAdapter(["BNB-BTC"])
    gap = Gap("BNB-BTC", 28457, 33456, 0.0)
    request = adapter.history_request("BNB-BTC", gap, None)
    assert request.url == "https://api.binance.com/api/v3/historicalTrades"
    assert request.params == {"symbol": "BNBBTC", "fromId": "28457", "limit": "1000"}
    later = adapter.history_request("BNB-BTC", gap, "33000")  # the next page: up to the gap's end
    assert later.params == {"symbol": "BNBBTC", "fromId": "33000", "limit": "457"}
    simulated = BinanceAdapter(["BNB-BTC"], rest_url="http://127.0.0.1:9/binance/")
    assert simulated.history_request("BNB-BTC", gap, None).url == (
        "http://127.0.0.1:9/binance/api/v3/historicalTrades")  # fmt: skip


def test_history_trades_read_like_stream_trades() -> None:
    page = BinanceAdapter(["BNB-BTC"]).parse_history("BNB-BTC", HISTORY, RECV_US)
    parsed = page.parsed
    assert page.next_cursor == "28458"
    assert parsed.kind is FrameKind.TRADES and not parsed.dead_letters
    (trade,) = parsed.trades
    assert (trade.symbol, trade.trade_id, trade.price, trade.qty, trade.side) == (
        "BNB-BTC", "28457", "4.00000100", "12.00000000", "sell")  # fmt: skip
    assert trade.event_time == 1_499_865_549_590_000


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ({"id": 1, "price": "abc", "qty": "1", "time": 1499865549590, "isBuyerMaker": True},
         RejectReason.BAD_PRICE),
        ({"id": "1", "price": "1", "qty": "1", "time": 1499865549590, "isBuyerMaker": True},
         RejectReason.BAD_TYPE),
        ({"id": 1, "price": "1", "qty": "1", "isBuyerMaker": True}, RejectReason.MISSING_FIELD),
        ({"id": 1, "price": "1", "qty": "1", "time": 1499865549590, "isBuyerMaker": 1},
         RejectReason.BAD_TYPE),
        ([1, 2], RejectReason.BAD_TYPE),
    ],
)  # fmt: skip
def test_a_hostile_history_element_is_a_dead_letter_beside_the_good_ones(element, reason) -> None:
    body = b"[" + HISTORY[1:-1] + b"," + json.dumps(element).encode() + b"]"
    parsed = BinanceAdapter(["BNB-BTC"]).parse_history("BNB-BTC", body, RECV_US).parsed
    assert [t.trade_id for t in parsed.trades] == ["28457"]
    (letter,) = parsed.dead_letters
    assert letter.reason == reason


@pytest.mark.parametrize("body", [b"{", b'{"code": -1121, "msg": "Invalid symbol."}', b"\xff"])
def test_a_history_answer_that_is_no_list_is_rejected_whole(body: bytes) -> None:
    page = BinanceAdapter(["BNB-BTC"]).parse_history("BNB-BTC", body, RECV_US)
    assert page.parsed.kind is FrameKind.REJECTED and not page.parsed.trades
    assert page.next_cursor is None
