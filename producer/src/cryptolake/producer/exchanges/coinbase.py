"""Coinbase Advanced Trade: the public ``market_trades`` channel, plus ``heartbeats``.

Every frame carries ``sequence_num``, one counter per connection across all channels, which the
feed checks for gaps. Docs:
https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-channels
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import orjson

from cryptolake.common.timeutil import rfc3339_to_us, us_to_rfc3339
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
    MINUTE_US,
    Kline,
    KlineError,
    decimal_field,
    load_json,
    minute_field,
)

# Public trades carry the resting maker's side, so the taker's is the opposite; as found by
# https://nautilustrader.io/docs/rust-api-latest/nautilus_coinbase/http/parse/fn.coinbase_side_to_aggressor.html
_TAKER_SIDE: Final = {"BUY": "sell", "SELL": "buy"}
_TRADE_FIELDS: Final = ("product_id", "price", "size", "side", "time")


def _wrong_type(trade: dict[str, Any]) -> str:
    """Which string field of a trade has another JSON type (only called once one has)."""
    for key in _TRADE_FIELDS:
        if type(trade[key]) is not str:
            return f"{key} is {type(trade[key]).__name__}, expected str"
    return "no field has the wrong type"


def parse_coinbase_trade(trade: dict[str, Any], *, exchange: str, recv_time_us: int) -> Trade:
    """Normalize one element of a ``market_trades`` event; raises :class:`TradeRejected`.

    A raw frame from the Advanced Trade WebSocket channel docs (one such element inside)::

        {"channel": "market_trades", "client_id": "", "timestamp": "2023-02-09T20:19:35.39625135Z",
         "sequence_num": 0,
         "events": [{"type": "snapshot",
                     "trades": [{"trade_id": "000000000", "product_id": "ETH-USD",
                                 "price": "1260.01", "size": "0.3", "side": "BUY",
                                 "time": "2019-08-14T20:42:27.265Z"}]}]}
    """
    try:
        product_id, trade_id, price = trade["product_id"], trade["trade_id"], trade["price"]
        size, side, time_text = trade["size"], trade["side"], trade["time"]
    except KeyError as exc:
        raise TradeRejected(RejectReason.MISSING_FIELD, f"{exc.args[0]} is missing") from exc
    if not (
        type(product_id) is str
        and type(price) is str
        and type(size) is str
        and type(side) is str
        and type(time_text) is str
    ):
        raise TradeRejected(RejectReason.BAD_TYPE, _wrong_type(trade))
    taker_side = _TAKER_SIDE.get(side)
    if taker_side is None:
        raise TradeRejected(RejectReason.BAD_SIDE, f"side {side!r:.80} is not BUY or SELL")
    try:
        event_time = rfc3339_to_us(time_text)
    except ValueError as exc:
        raise TradeRejected(RejectReason.BAD_TIMESTAMP, str(exc)) from exc
    return make_trade(
        exchange=exchange,
        symbol=product_id,
        trade_id=trade_id,
        price=price,
        qty=size,
        side=taker_side,
        event_time=event_time,
        ingest_time=recv_time_us,
    )


def _history_trade(element: object, symbol: str, exchange: str, recv_time_us: int) -> Trade:
    """A REST history element read as a stream trade (its id an integer there, a string on the
    stream; its side lower case there)."""
    if not isinstance(element, dict):
        raise TradeRejected(RejectReason.BAD_TYPE, "a trade is a JSON object")
    trade_id, side = element.get("trade_id"), element.get("side")
    if type(trade_id) is not int:
        raise TradeRejected(RejectReason.BAD_TYPE, "trade_id is not an integer")
    stream_trade = {**element, "product_id": symbol, "trade_id": str(trade_id)}
    if isinstance(side, str):
        stream_trade["side"] = side.upper()
    return parse_coinbase_trade(stream_trade, exchange=exchange, recv_time_us=recv_time_us)


# A candle's values after its time, in the Exchange API's order.
_CANDLE_VALUES: Final = ("low", "high", "open", "close", "volume")


class CoinbaseAdapter(ExchangeAdapter):
    name: ClassVar[str] = "coinbase"
    default_url: ClassVar[str] = "wss://advanced-trade-ws.coinbase.com"
    # The Exchange REST API pages a product's trades by trade id (Advanced Trade's public
    # ticker only by time); 10 public calls per second per address, 5 used here.
    default_rest_url: ClassVar[str | None] = "https://api.exchange.coinbase.com"
    history_interval_s: ClassVar[float] = 0.2
    history_ascending: ClassVar[bool] = False

    def history_request(self, symbol: str, gap: Gap, cursor: str | None) -> HistoryRequest:
        """``GET /products/{id}/trades?after=N``: up to 1,000 trades older than trade N, newest
        first; the next page's cursor is the oldest id of this one. Docs:
        https://docs.cdp.coinbase.com/exchange/reference/exchangerestapi_getproducttrades"""
        after = cursor if cursor is not None else str(gap.last_id + 1)
        limit = max(1, min(int(after) - gap.first_id, self.history_limit))
        url = f"{str(self.rest_url).rstrip('/')}/products/{symbol}/trades"
        return HistoryRequest(url, {"after": after, "limit": str(limit)})

    def parse_history(self, symbol: str, body: bytes, recv_time_us: int) -> HistoryPage:
        """A JSON list as the docs show it; ``side`` is the maker's, as on the stream::

        [{"time": "2014-11-07T22:19:28.578544Z", "trade_id": 74,
          "price": "10.00000000", "size": "0.01000000", "side": "buy"}]
        """
        parsed = self.history_list(
            body, recv_time_us, lambda e: _history_trade(e, symbol, self.label, recv_time_us)
        )
        ids = [int(trade.trade_id) for trade in parsed.trades]
        return HistoryPage(parsed, str(min(ids)) if ids else None)

    def kline_request(self, symbol: str, start_us: int, end_us: int) -> HistoryRequest:
        """Exchange API ``GET /products/{id}/candles?granularity=60``: the minutes from
        ``start`` to ``end`` (RFC 3339), at most 300. Docs:
        https://docs.cdp.coinbase.com/exchange/reference/exchangerestapi_getproductcandles"""
        params = {"granularity": "60", "start": us_to_rfc3339(start_us),
                  "end": us_to_rfc3339(end_us - MINUTE_US)}  # fmt: skip
        return HistoryRequest(f"{str(self.rest_url).rstrip('/')}/products/{symbol}/candles", params)

    def parse_klines(self, symbol: str, body: bytes) -> list[Kline]:
        """A JSON list, newest first, of ``[time (s), low, high, open, close, volume]`` with
        JSON numbers (read as the Decimal of their digits); minutes without trades are left
        out::

            [[1415398768, 0.32, 4.2, 0.35, 4.2, 12.3]]
        """
        rows = load_json(body)
        if not isinstance(rows, list):
            raise KlineError(f"candles come as a JSON list, got {body[:80]!r}")
        klines = []
        for row in rows:
            if not isinstance(row, list) or len(row) != 6:
                raise KlineError(f"a Coinbase candle is a list of 6 numbers, got {row!r:.80}")
            opened, *values = row
            low, high, open_, close, volume = (
                decimal_field(value, name, json_number=True)
                for value, name in zip(values, _CANDLE_VALUES, strict=True)
            )
            minute_us = minute_field(opened, "time", 1_000_000)
            klines.append(Kline(minute_us, open_, high, low, close, volume))
        return klines

    def connect_url(self) -> str:
        return self.base_url

    def subscribe_messages(self) -> list[str]:
        # Without heartbeats Coinbase closes a channel that has had no update for 60-90 s.
        return [
            orjson.dumps(
                {"type": "subscribe", "product_ids": self.symbols, "channel": channel}
            ).decode()
            for channel in ("market_trades", "heartbeats")
        ]

    def parse(self, frame: str | bytes, recv_time_us: int) -> ParsedFrame:
        """``market_trades`` (see :func:`parse_coinbase_trade`), ``heartbeats``,
        ``subscriptions`` acks, or ``{"type": "error", "message": ...}``, after which the feed
        reconnects. Every frame's ``sequence_num`` is passed on in ``ParsedFrame.sequence``."""
        message = self.load_object(frame, recv_time_us)
        if isinstance(message, ParsedFrame):
            return message
        channel = message.get("channel")
        if message.get("type") == "error":
            parsed = ParsedFrame(FrameKind.SHUTDOWN)
        elif channel == "market_trades":
            parsed = self._market_trades(message, frame, recv_time_us)
        elif channel == "heartbeats":
            parsed = ParsedFrame(FrameKind.HEARTBEAT)
        elif channel == "subscriptions":
            parsed = ParsedFrame(FrameKind.CONTROL)
        else:
            parsed = self.reject(
                RejectReason.UNKNOWN_MESSAGE,
                f"channel {channel!r:.80} is not market_trades, heartbeats or subscriptions",
                frame,
                recv_time_us,
            )
        sequence = message.get("sequence_num")
        if type(sequence) is int:
            parsed.sequence = sequence
        return parsed

    def _market_trades(
        self, message: dict[str, Any], frame: str | bytes, recv_time_us: int
    ) -> ParsedFrame:
        if "events" not in message:
            return self.reject(RejectReason.MISSING_FIELD, "events is missing", frame, recv_time_us)
        events = message["events"]
        if not isinstance(events, list):
            return self.reject(RejectReason.BAD_TYPE, "events is not a list", frame, recv_time_us)
        parsed = ParsedFrame(FrameKind.TRADES)
        for event in events:
            trades = event.get("trades") if isinstance(event, dict) else None
            if not isinstance(trades, list):
                missing = isinstance(event, dict) and "trades" not in event
                problem = TradeRejected(
                    RejectReason.MISSING_FIELD if missing else RejectReason.BAD_TYPE,
                    "an event is an object with a trades list",
                )
                parsed.dead_letters.append(self.reject_element(problem, event, frame, recv_time_us))
                continue
            for element in trades:
                if not isinstance(element, dict):
                    problem = TradeRejected(RejectReason.BAD_TYPE, "a trade is a JSON object")
                    parsed.dead_letters.append(
                        self.reject_element(problem, element, frame, recv_time_us)
                    )
                    continue
                try:
                    parsed.trades.append(
                        parse_coinbase_trade(
                            element, exchange=self.label, recv_time_us=recv_time_us
                        )
                    )
                except TradeRejected as exc:
                    parsed.dead_letters.append(
                        self.reject_element(exc, element, frame, recv_time_us)
                    )
        return parsed
