"""Binance spot: one combined-stream connection carrying ``<symbol>@trade`` for every symbol.

The URL subscribes (``/stream?streams=btcusdt@trade/ethusdt@trade``), so nothing is sent after
connecting. Docs: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar, Final

from cryptolake.common.symbols import PERP_SUFFIX, split_concatenated
from cryptolake.common.trade import RejectReason, Trade, TradeRejected, make_trade
from cryptolake.producer.exchanges.base import (
    ExchangeAdapter,
    FrameKind,
    HistoryPage,
    HistoryRequest,
    ParsedFrame,
)
from cryptolake.producer.gaps import Gap
from cryptolake.producer.klines import (
    Kline,
    KlineError,
    count_field,
    decimal_field,
    load_json,
    minute_field,
)

# The trade payload's fields and their exact JSON types (bool is not an int here).
_TRADE_FIELDS: Final = (("s", str), ("t", int), ("p", str), ("q", str), ("T", int), ("m", bool))
# A REST history element's names for the same fields.
_HISTORY_FIELDS: Final = (("t", "id"), ("p", "price"), ("q", "qty"), ("T", "time"),
                          ("m", "isBuyerMaker"))  # fmt: skip


def native_stream_symbol(symbol: str) -> str:
    """``BTC-USDT`` (or the contract ``BTC-USDT-PERP``) → ``btcusdt``, the spelling Binance
    stream names use."""
    return symbol.removesuffix(PERP_SUFFIX).replace("-", "").lower()


@lru_cache(maxsize=4096)
def canonical_pair(pair: str) -> str | None:
    """``BTCUSDT`` → ``BTC-USDT``; None when no known quote asset ends it (cached: hot path)."""
    if not (pair.isascii() and pair.isalnum()):
        return None
    return split_concatenated(pair)


def _wrong_type(payload: dict[str, Any]) -> str:
    """Which field of a trade payload has the wrong JSON type (only called once one has)."""
    for key, kind in _TRADE_FIELDS:
        value = payload[key]
        if type(value) is not kind:
            return f"{key} is {type(value).__name__}, expected {kind.__name__}"
    return "no field has the wrong type"


def parse_binance_trade(
    payload: dict[str, Any], *, exchange: str, recv_time_us: int, suffix: str = ""
) -> Trade:
    """Normalize one trade payload; raises :class:`TradeRejected`.

    A raw frame from the Trade Streams docs, as a combined stream delivers it::

        {"stream": "bnbbtc@trade",
         "data": {"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.001",
                  "q": "100", "T": 1672515782136, "m": true, "M": true}}

    ``T`` is the trade time in ms. ``m`` says the buyer was the maker (the resting order), so
    the taker, whose side we record, sold. ``suffix`` ends the canonical symbol (``-PERP``
    for the futures market, whose pairs are spelt like spot's).
    """
    try:
        pair, trade_id, price, qty = payload["s"], payload["t"], payload["p"], payload["q"]
        trade_ms, buyer_is_maker = payload["T"], payload["m"]
    except KeyError as exc:
        raise TradeRejected(RejectReason.MISSING_FIELD, f"{exc.args[0]} is missing") from exc
    if not (
        type(pair) is str
        and type(trade_id) is int
        and type(price) is str
        and type(qty) is str
        and type(trade_ms) is int
        and type(buyer_is_maker) is bool
    ):
        raise TradeRejected(RejectReason.BAD_TYPE, _wrong_type(payload))
    symbol = canonical_pair(pair)
    if symbol is None:
        raise TradeRejected(
            RejectReason.BAD_SYMBOL, f"symbol {pair!r:.80} has no known quote asset"
        )
    return make_trade(
        exchange=exchange,
        symbol=symbol + suffix,
        trade_id=trade_id,
        price=price,
        qty=qty,
        side="sell" if buyer_is_maker else "buy",
        event_time=trade_ms * 1000,
        ingest_time=recv_time_us,
    )


def _is_shutdown(event: object) -> bool:
    return isinstance(event, dict) and event.get("e") == "serverShutdown"


class BinanceAdapter(ExchangeAdapter):
    name: ClassVar[str] = "binance"
    default_url: ClassVar[str] = "wss://stream.binance.com:9443"
    default_rest_url: ClassVar[str | None] = "https://api.binance.com"
    # historicalTrades weighs 25 of the 6,000 an address may use per minute: 4 calls/s at
    # most; 2/s leaves half for anything else.
    history_interval_s: ClassVar[float] = 0.5
    kline_limit: ClassVar[int] = 1000
    # Paths of the same API on the spot and the futures host, and how symbols end there.
    history_path: ClassVar[str] = "/api/v3/historicalTrades"
    klines_path: ClassVar[str] = "/api/v3/klines"
    symbol_suffix: ClassVar[str] = ""
    # Binance sends no heartbeat frames and a quiet symbol can go a minute without a trade;
    # websockets' own pings still catch a dead link sooner.
    idle_timeout_s: ClassVar[float] = 120.0

    def connect_url(self) -> str:
        streams = "/".join(f"{native_stream_symbol(symbol)}@trade" for symbol in self.symbols)
        return f"{self.base_url.rstrip('/')}/stream?streams={streams}"

    def subscribe_messages(self) -> list[str]:
        return []

    def parse(self, frame: str | bytes, recv_time_us: int) -> ParsedFrame:
        """A trade (see :func:`parse_binance_trade`), a ``serverShutdown`` notice (bare, in the
        combined envelope, or WebSocket-API style ``{"event": {...}}``), or a reply to a
        subscription request such as ``{"result": null, "id": 1}``."""
        message = self.load_object(frame, recv_time_us)
        if isinstance(message, ParsedFrame):
            return message
        payload = message.get("data", message) if "stream" in message else message
        if not isinstance(payload, dict):
            return self.reject(
                RejectReason.BAD_TYPE, "the stream's data is not an object", frame, recv_time_us
            )
        event = payload.get("e")
        if event == "trade":
            try:
                trade = parse_binance_trade(
                    payload, exchange=self.label, recv_time_us=recv_time_us,
                    suffix=self.symbol_suffix,
                )  # fmt: skip
            except TradeRejected as exc:
                return self.reject(exc.reason, exc.detail, frame, recv_time_us)
            return ParsedFrame(FrameKind.TRADES, trades=[trade])
        if event == "serverShutdown" or _is_shutdown(message.get("event")):
            return ParsedFrame(FrameKind.SHUTDOWN)
        if "result" in message and "id" in message:
            return ParsedFrame(FrameKind.CONTROL)
        return self.reject(
            RejectReason.UNKNOWN_MESSAGE,
            f"event {event!r:.80} is not a trade, a shutdown notice or a subscription reply",
            frame,
            recv_time_us,
        )

    def history_request(self, symbol: str, gap: Gap, cursor: str | None) -> HistoryRequest:
        """``GET /api/v3/historicalTrades``: public market data, up to 1,000 trades from
        ``fromId`` on, in id order; the cursor is the next id. Docs:
        https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints"""
        from_id = int(cursor) if cursor is not None else gap.first_id
        limit = max(1, min(gap.last_id - from_id + 1, self.history_limit))
        params = {"symbol": native_stream_symbol(symbol).upper(), "fromId": str(from_id),
                  "limit": str(limit)}  # fmt: skip
        return HistoryRequest(f"{str(self.rest_url).rstrip('/')}{self.history_path}", params)

    def parse_history(self, symbol: str, body: bytes, recv_time_us: int) -> HistoryPage:
        """A JSON list of trades as the docs show them (``isBuyerMaker``: the taker sold)::

            [{"id": 28457, "price": "4.00000100", "qty": "12.00000000",
              "quoteQty": "48.000012", "time": 1499865549590, "isBuyerMaker": true,
              "isBestMatch": true}]

        Each element is read as the stream's trade payload, so both paths apply the same rules.
        """
        pair = native_stream_symbol(symbol).upper()

        def read(element: object) -> Trade:
            if not isinstance(element, dict):
                raise TradeRejected(RejectReason.BAD_TYPE, "a trade is a JSON object")
            payload = {"s": pair, **{short: element[long] for short, long in _HISTORY_FIELDS
                                     if long in element}}  # fmt: skip
            return parse_binance_trade(payload, exchange=self.label, recv_time_us=recv_time_us,
                                       suffix=self.symbol_suffix)  # fmt: skip

        parsed = self.history_list(body, recv_time_us, read)
        ids = [int(trade.trade_id) for trade in parsed.trades]
        return HistoryPage(parsed, str(max(ids) + 1) if ids else None)

    def kline_request(self, symbol: str, start_us: int, end_us: int) -> HistoryRequest:
        """``GET /api/v3/klines?interval=1m``: the klines opening in [startTime, endTime], in
        ms (weight 2). Docs: https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints"""
        params = {"symbol": native_stream_symbol(symbol).upper(), "interval": "1m",
                  "startTime": str(start_us // 1000), "endTime": str(end_us // 1000 - 1),
                  "limit": str(self.kline_limit)}  # fmt: skip
        return HistoryRequest(f"{str(self.rest_url).rstrip('/')}{self.klines_path}", params)

    def parse_klines(self, symbol: str, body: bytes) -> list[Kline]:
        """A JSON list of klines as the docs show them: open time (ms), open, high, low,
        close, volume, close time, quote asset volume, number of trades, taker buy base asset
        volume, taker buy quote asset volume, ignore::

            [[1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100",
              "148976.11427815", 1499644799999, "2434.19055334", 308, "1756.87402397",
              "28.46694368", "0"]]
        """
        rows = load_json(body)
        if not isinstance(rows, list):
            raise KlineError(f"klines come as a JSON list, got {body[:80]!r}")
        klines = []
        for row in rows:
            if not isinstance(row, list) or len(row) < 10:
                raise KlineError(f"a Binance kline is a list of 12 values, got {row!r:.80}")
            opened, open_, high, low, close, volume, _, quote, trades, buy = row[:10]
            klines.append(Kline(
                minute_us=minute_field(opened, "open time", 1000),
                open=decimal_field(open_, "open"), high=decimal_field(high, "high"),
                low=decimal_field(low, "low"), close=decimal_field(close, "close"),
                volume=decimal_field(volume, "volume"),
                quote_volume=decimal_field(quote, "quote asset volume"),
                trades=count_field(trades, "number of trades"),
                buy_volume=decimal_field(buy, "taker buy base asset volume"),
            ))  # fmt: skip
        return klines
