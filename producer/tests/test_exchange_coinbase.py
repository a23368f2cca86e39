"""CoinbaseAdapter against frames from the Coinbase Advanced Trade WebSocket documentation.

``side`` on a public trade is the maker's, so a ``BUY`` trade was a taker selling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cryptolake.common.trade import RejectReason, Trade
from cryptolake.producer.exchanges import adapter_class
from cryptolake.producer.exchanges.base import FrameKind
from cryptolake.producer.exchanges.coinbase import CoinbaseAdapter
from cryptolake.producer.gaps import Gap

FRAMES = Path(__file__).parent / "frames" / "coinbase"
# A second after the documented trade (2019-08-14T20:42:27.265Z).
RECV_US = 1_565_815_348_265_000


def frame(name: str) -> str:
    return (FRAMES / name).read_text()


def element(**changes: object) -> dict[str, Any]:
    """The documented trade, with fields changed or, by None, removed."""
    trade: dict[str, Any] = {
        "trade_id": "000000000",
        "product_id": "ETH-USD",
        "price": "1260.01",
        "size": "0.3",
        "side": "BUY",
        "time": "2019-08-14T20:42:27.265Z",
    }
    trade.update(changes)
    return {key: value for key, value in trade.items() if value is not None}


def trades_frame(*events: object, sequence: int = 7) -> str:
    return json.dumps(
        {
            "channel": "market_trades",
            "client_id": "",
            "timestamp": "2019-08-14T20:42:27.39625135Z",
            "sequence_num": sequence,
            "events": list(events),
        }
    )


def update(*trades: object) -> dict[str, object]:
    return {"type": "update", "trades": list(trades)}


@pytest.fixture
def adapter() -> CoinbaseAdapter:
    return CoinbaseAdapter(["ETH-USD", "BTC-USD"])


def test_registry_maps_coinbase_to_its_adapter() -> None:
    assert adapter_class("coinbase") is CoinbaseAdapter


def test_subscribes_to_market_trades_and_heartbeats(adapter: CoinbaseAdapter) -> None:
    assert adapter.connect_url() == "wss://advanced-trade-ws.coinbase.com"
    assert [json.loads(message) for message in adapter.subscribe_messages()] == [
        {"type": "subscribe", "product_ids": ["ETH-USD", "BTC-USD"], "channel": "market_trades"},
        {"type": "subscribe", "product_ids": ["ETH-USD", "BTC-USD"], "channel": "heartbeats"},
    ]


def test_documented_trade_snapshot_normalizes_exactly(adapter: CoinbaseAdapter) -> None:
    parsed = adapter.parse(frame("market_trades_snapshot.json"), RECV_US)
    assert (parsed.kind, parsed.sequence, parsed.dead_letters) == (FrameKind.TRADES, 0, [])
    assert parsed.trades == [
        Trade(
            "coinbase",
            "ETH-USD",
            "000000000",
            "1260.01",
            "0.3",
            "sell",
            1_565_815_347_265_000,
            RECV_US,
        ),
    ]


def test_maker_sell_means_the_taker_bought(adapter: CoinbaseAdapter) -> None:
    [trade] = adapter.parse(trades_frame(update(element(side="SELL"))), RECV_US).trades
    assert trade.side == "buy"


def test_nanosecond_times_are_truncated_to_microseconds(adapter: CoinbaseAdapter) -> None:
    raw = trades_frame(update(element(time="2023-02-09T20:19:35.39625135Z")))
    [trade] = adapter.parse(raw, 1_675_973_976_000_000).trades
    assert trade.event_time == 1_675_973_975_396_251


def test_bytes_frames_parse_like_text(adapter: CoinbaseAdapter) -> None:
    raw = frame("market_trades_snapshot.json")
    assert adapter.parse(raw.encode(), RECV_US) == adapter.parse(raw, RECV_US)


def test_simulator_label_is_written_into_trades_and_dead_letters() -> None:
    adapter = CoinbaseAdapter(["ETH-USD"], label="simulator")
    parsed = adapter.parse(trades_frame(update(element(), element(side="HOLD"))), RECV_US)
    assert [trade.exchange for trade in parsed.trades] == ["simulator"]
    assert [letter.source for letter in parsed.dead_letters] == ["simulator"]


@pytest.mark.parametrize(
    ("name", "kind", "sequence"),
    [
        ("heartbeats.json", FrameKind.HEARTBEAT, 0),
        ("subscriptions.json", FrameKind.CONTROL, 1),
        ("error.json", FrameKind.SHUTDOWN, None),
    ],
)
def test_service_frames(
    adapter: CoinbaseAdapter, name: str, kind: FrameKind, sequence: int | None
) -> None:
    parsed = adapter.parse(frame(name), RECV_US)
    assert (parsed.kind, parsed.sequence, parsed.trades, parsed.dead_letters) == (
        kind,
        sequence,
        [],
        [],
    )


def test_every_frame_kind_passes_its_sequence_on(adapter: CoinbaseAdapter) -> None:
    ticker = '{"channel": "ticker", "sequence_num": 42, "events": []}'
    assert adapter.parse(ticker, RECV_US).sequence == 42
    assert adapter.parse(trades_frame(update(), sequence=43), RECV_US).sequence == 43
    assert adapter.parse(trades_frame("bad event", sequence=44), RECV_US).sequence == 44


def test_trades_of_several_events_are_all_kept(adapter: CoinbaseAdapter) -> None:
    raw = trades_frame(
        update(element(trade_id="1"), element(trade_id="2", product_id="BTC-USD")),
        update(element(trade_id="3")),
    )
    parsed = adapter.parse(raw, RECV_US)
    assert [(t.trade_id, t.symbol) for t in parsed.trades] == [
        ("1", "ETH-USD"),
        ("2", "BTC-USD"),
        ("3", "ETH-USD"),
    ]


@pytest.mark.parametrize(
    ("raw", "reason", "detail"),
    [
        ('{"channel": "market_trades", "events": [', RejectReason.MALFORMED_JSON, ""),
        ("", RejectReason.MALFORMED_JSON, ""),
        ("null", RejectReason.UNKNOWN_MESSAGE, "JSON object"),
        ('{"channel": "level2", "events": []}', RejectReason.UNKNOWN_MESSAGE, "level2"),
        ('{"channel": "market_trades", "sequence_num": 3}', RejectReason.MISSING_FIELD, "events"),
        ('{"channel": "market_trades", "events": {}}', RejectReason.BAD_TYPE, "events"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_a_bad_frame_goes_whole_to_the_dlq(
    adapter: CoinbaseAdapter, raw: str, reason: RejectReason, detail: str
) -> None:
    parsed = adapter.parse(raw, RECV_US)
    assert (parsed.kind, parsed.trades) == (FrameKind.REJECTED, [])
    [letter] = parsed.dead_letters
    assert (letter.source, letter.reason, letter.ingest_time) == ("coinbase", reason, RECV_US)
    assert detail in letter.detail
    assert letter.raw == raw


@pytest.mark.parametrize(
    ("bad", "reason", "detail"),
    [
        (element(size=None), RejectReason.MISSING_FIELD, "size is missing"),
        (element(trade_id=None), RejectReason.MISSING_FIELD, "trade_id is missing"),
        (element(price=1260.01), RejectReason.BAD_TYPE, "price is float"),
        (element(time=1565815347), RejectReason.BAD_TYPE, "time is int"),
        (element(trade_id=["0"]), RejectReason.BAD_TYPE, "trade_id"),
        (element(price="1,260.01"), RejectReason.BAD_PRICE, "price"),
        (element(size="-0.3"), RejectReason.BAD_QTY, "qty"),
        (element(side="buy"), RejectReason.BAD_SIDE, "buy"),
        (element(product_id="ETHUSD"), RejectReason.BAD_SYMBOL, "ETHUSD"),
        (element(time="2019-08-14 20:42:27"), RejectReason.BAD_TIMESTAMP, "RFC 3339"),
        (element(time="2019-13-14T20:42:27Z"), RejectReason.BAD_TIMESTAMP, "date"),
        (element(time="2099-08-14T20:42:27Z"), RejectReason.BAD_TIMESTAMP, "ahead"),
        (7, RejectReason.BAD_TYPE, "JSON object"),
    ],
)
def test_one_bad_trade_is_dead_lettered_and_its_neighbours_kept(
    adapter: CoinbaseAdapter, bad: object, reason: RejectReason, detail: str
) -> None:
    raw = trades_frame(update(element(trade_id="1"), bad, element(trade_id="3")))
    parsed = adapter.parse(raw, RECV_US)
    assert (parsed.kind, parsed.sequence) == (FrameKind.TRADES, 7)
    assert [trade.trade_id for trade in parsed.trades] == ["1", "3"]
    [letter] = parsed.dead_letters
    assert (letter.source, letter.reason, letter.ingest_time) == ("coinbase", reason, RECV_US)
    assert detail in letter.detail
    assert json.loads(letter.raw) == bad


@pytest.mark.parametrize(
    ("event", "reason"),
    [({"type": "update"}, RejectReason.MISSING_FIELD), ("update", RejectReason.BAD_TYPE)],
)
def test_a_malformed_event_is_dead_lettered_and_other_events_kept(
    adapter: CoinbaseAdapter, event: object, reason: RejectReason
) -> None:
    parsed = adapter.parse(trades_frame(event, update(element())), RECV_US)
    assert [trade.trade_id for trade in parsed.trades] == ["000000000"]
    [letter] = parsed.dead_letters
    assert (letter.reason, json.loads(letter.raw)) == (reason, event)


# GET /products/{id}/trades (Exchange API) as its docs show it: newest first, the maker's side.
HISTORY = (
    b'[{"time": "2014-11-07T22:19:28.578544Z", "trade_id": 74, "price": "10.00000000",'
    b' "size": "0.01000000", "side": "buy"},'
    b' {"time": "2014-11-07T01:08:43.642366Z", "trade_id": 73, "price": "100.00000000",'
    b' "size": "0.01000000", "side": "sell"}]'
)


def test_history_pages_down_from_the_end_of_the_gap() -> None:
    adapter = CoinbaseAdapter(["BTC-USD"])
    gap = Gap("BTC-USD", 70, 5000, 0.0)
    first = adapter.history_request("BTC-USD", gap, None)
    assert first.url == "https://api.exchange.coinbase.com/products/BTC-USD/trades"
    assert first.params == {"after": "5001", "limit": "1000"}
    assert adapter.history_request("BTC-USD", gap, "75").params == {"after": "75", "limit": "5"}


def test_history_trades_read_like_stream_trades() -> None:
    page = CoinbaseAdapter(["BTC-USD"]).parse_history("BTC-USD", HISTORY, RECV_US)
    assert page.next_cursor == "73" and not page.parsed.dead_letters
    newest, older = page.parsed.trades
    assert (newest.trade_id, newest.price, newest.qty, newest.side) == (
        "74", "10.00000000", "0.01000000", "sell")  # a resting buy was hit  # fmt: skip
    assert (older.side, older.event_time) == ("buy", 1_415_322_523_642_366)


@pytest.mark.parametrize(
    ("element", "reason"),
    [
        ({"time": "2014-11-07T22:19:28Z", "trade_id": "74", "price": "1", "size": "1",
          "side": "buy"}, RejectReason.BAD_TYPE),
        ({"time": "2014-11-07T22:19:28Z", "trade_id": 74, "price": "abc", "size": "1",
          "side": "buy"}, RejectReason.BAD_PRICE),
        ({"time": "yesterday", "trade_id": 74, "price": "1", "size": "1", "side": "buy"},
         RejectReason.BAD_TIMESTAMP),
        ({"time": "2014-11-07T22:19:28Z", "trade_id": 74, "price": "1", "size": "1",
          "side": 1}, RejectReason.BAD_TYPE),
        ({"time": "2014-11-07T22:19:28Z", "trade_id": 74, "price": "1", "size": "1"},
         RejectReason.MISSING_FIELD),
        ("a string", RejectReason.BAD_TYPE),
    ],
)  # fmt: skip
def test_a_hostile_history_element_is_a_dead_letter(element: Any, reason: RejectReason) -> None:
    body = json.dumps([element]).encode()
    page = CoinbaseAdapter(["BTC-USD"]).parse_history("BTC-USD", body, RECV_US)
    assert not page.parsed.trades and page.next_cursor is None
    (letter,) = page.parsed.dead_letters
    assert letter.reason == reason
