"""BinanceFuturesAdapter: Binance USD-M futures frames (the trade event with its order type
``X``), each contract as ``BASE-QUOTE-PERP``; its history (by id with an API key, else the
newest trades) and klines on the futures host."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cryptolake.common.trade import RejectReason
from cryptolake.producer.exchanges import BinanceAdapter, adapter_class, markets
from cryptolake.producer.exchanges.base import FrameKind
from cryptolake.producer.exchanges.binance_futures import API_KEY_HEADER, BinanceFuturesAdapter
from cryptolake.producer.gaps import Gap

FRAMES = Path(__file__).parent / "frames" / "binance-futures"
RECV_US = 1_733_500_001_500_000


def frame(name: str) -> str:
    return (FRAMES / name).read_text()


@pytest.fixture
def adapter() -> BinanceFuturesAdapter:
    return BinanceFuturesAdapter(["BTC-USDT-PERP", "ETH-USDT-PERP"])


def test_contracts_stream_from_the_futures_host_under_exchange_binance(adapter) -> None:
    assert adapter_class("binance-futures") is BinanceFuturesAdapter
    assert adapter.label == "binance"
    assert adapter.connect_url() == (
        "wss://fstream.binance.com/stream?streams=btcusdt@trade/ethusdt@trade"
    )


def test_a_futures_trade_is_its_contract_never_the_spot_market(adapter) -> None:
    parsed = adapter.parse(frame("trade_combined.json"), RECV_US)
    assert parsed.kind is FrameKind.TRADES and not parsed.dead_letters
    (trade,) = parsed.trades
    assert (trade.exchange, trade.symbol, trade.trade_id, trade.price, trade.qty, trade.side,
            trade.event_time) == ("binance", "BTC-USDT-PERP", "5912345678", "97001.10", "0.004",
                                  "buy", 1_733_500_000_120_000)  # fmt: skip


def test_a_liquidation_is_a_trade_of_the_tape(adapter) -> None:
    (trade,) = adapter.parse(frame("liquidation_trade.json"), RECV_US).trades
    assert (trade.symbol, trade.side, trade.qty) == ("ETH-USDT-PERP", "sell", "1.250")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ('"p":"97001.10"', '"p":"abc"'),
        ('"t":5912345678', '"t":"5912345678"'),
        ('"s":"BTCUSDT"', '"s":"BTCPERP"'),
    ],
)
def test_a_bad_futures_frame_goes_to_the_dlq_with_its_reason(adapter, change, reason) -> None:
    bad = frame("trade_combined.json").replace(change, reason)
    parsed = adapter.parse(bad, RECV_US)
    assert parsed.kind is FrameKind.REJECTED and not parsed.trades
    expected = {'"p":"abc"': RejectReason.BAD_PRICE, '"t":"5912345678"': RejectReason.BAD_TYPE,
                '"s":"BTCPERP"': RejectReason.BAD_SYMBOL}[reason]  # fmt: skip
    assert parsed.dead_letters[0].reason is expected


def test_history_by_id_needs_the_key_and_without_it_is_the_newest_page(adapter) -> None:
    gap = Gap("BTC-USDT-PERP", 100, 140, 0.0)
    keyless = adapter.history_request("BTC-USDT-PERP", gap, None)
    assert keyless.url == "https://fapi.binance.com/fapi/v1/trades" and not keyless.headers
    assert keyless.params == {"symbol": "BTCUSDT", "limit": "1000"}
    keyed = BinanceFuturesAdapter(["BTC-USDT-PERP"], api_key="k-123")
    request = keyed.history_request("BTC-USDT-PERP", gap, "120")
    assert request.url == "https://fapi.binance.com/fapi/v1/historicalTrades"
    assert request.params == {"symbol": "BTCUSDT", "fromId": "120", "limit": "21"}
    assert request.headers == {API_KEY_HEADER: "k-123"}
    body = b'[{"id":120,"price":"97000.1","qty":"0.002","quoteQty":"194.0002","time":1733500000000,"isBuyerMaker":true}]'  # noqa: E501
    assert keyed.parse_history("BTC-USDT-PERP", body, RECV_US).next_cursor == "121"
    page = adapter.parse_history("BTC-USDT-PERP", body, RECV_US)
    assert page.next_cursor is None and page.parsed.trades[0].symbol == "BTC-USDT-PERP"


def test_klines_come_from_the_futures_host_exactly(adapter) -> None:
    request = adapter.kline_request("BTC-USDT-PERP", 1_733_499_960_000_000, 1_733_500_020_000_000)
    assert request is not None and request.url == "https://fapi.binance.com/fapi/v1/klines"
    assert request.params["symbol"] == "BTCUSDT"
    (kline,) = adapter.parse_klines("BTC-USDT-PERP", frame("klines.json").encode())
    assert (kline.minute_us, kline.close, kline.quote_volume, kline.trades) == (
        1_733_499_960_000_000, Decimal("97001.10"), Decimal("1197456.3212500"), 812)  # fmt: skip


def test_a_symbol_list_splits_into_spot_and_contracts() -> None:
    assert markets("binance", ["BTC-USDT", "BTC-USDT-PERP", "ETH-USDT"]) == [
        (BinanceAdapter, ["BTC-USDT", "ETH-USDT"]),
        (BinanceFuturesAdapter, ["BTC-USDT-PERP"]),
    ]
    assert markets("binance", ["BTC-USDT-PERP"]) == [(BinanceFuturesAdapter, ["BTC-USDT-PERP"])]
    with pytest.raises(ValueError, match="perpetual contracts stream from binance only"):
        markets("coinbase", ["BTC-USD-PERP"])
