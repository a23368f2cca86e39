"""Kraken spot WebSocket v2: the ``trade`` channel, with ``heartbeat`` and ``status``.

v2 sends prices and quantities as JSON numbers, so frames are parsed with ``Decimal`` for every
non-integer number: a binary float would change the digits. Docs:
https://docs.kraken.com/exchange/api-reference/spot-websocket-v2/trade
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, ClassVar, Final, NoReturn

import orjson

from cryptolake.common.symbols import join_symbol
from cryptolake.common.timeutil import rfc3339_to_us
from cryptolake.common.trade import RejectReason, Trade, TradeRejected, make_trade
from cryptolake.producer.exchanges.base import ExchangeAdapter, FrameKind, ParsedFrame

# Prices and quantities beyond 1e±30 are absurd, and formatting one such as 1e999999999 in
# plain notation would build a gigabyte string.
_MAX_MAGNITUDE: Final = 30


def native_symbol(symbol: str) -> str:
    """``BTC-USD`` → ``BTC/USD`` (v2 writes BTC, not the legacy XBT)."""
    return symbol.replace("-", "/")


def canonical_pair(native: str) -> str | None:
    """``XBT/USD`` → ``BTC-USD``; None unless it is ASCII ``BASE/QUOTE``."""
    base, slash, quote = native.partition("/")
    if not (slash and base.isascii() and base.isalnum() and quote.isascii() and quote.isalnum()):
        return None
    return join_symbol(base, quote)


def decimal_text(value: object, field: str, reason: RejectReason) -> str:
    """A JSON number as parsed with ``parse_float=Decimal`` → its exact plain decimal string."""
    if type(value) is int:
        value = Decimal(value)
    if type(value) is not Decimal:
        raise TradeRejected(
            RejectReason.BAD_TYPE, f"{field} is {type(value).__name__}, expected a JSON number"
        )
    if not -_MAX_MAGNITUDE <= value.adjusted() <= _MAX_MAGNITUDE:
        raise TradeRejected(reason, f"{field} {value!s:.80} is out of range")
    return format(value, "f")


def parse_kraken_trade(trade: dict[str, Any], *, exchange: str, recv_time_us: int) -> Trade:
    """Normalize one element of a trade frame's ``data``; raises :class:`TradeRejected`.

    A raw frame from the v2 ``trade`` channel docs (``side`` is the taker's)::

        {"channel": "trade", "type": "snapshot",
         "data": [{"symbol": "MATIC/USD", "side": "buy", "price": 0.5147, "qty": 6423.46326,
                   "ord_type": "limit", "trade_id": 4665846,
                   "timestamp": "2023-09-25T07:48:36.925533Z"},
                  {"symbol": "MATIC/USD", "side": "buy", "price": 0.5147, "qty": 1136.19677815,
                   "ord_type": "limit", "trade_id": 4665847,
                   "timestamp": "2023-09-25T07:49:36.925603Z"}]}
    """
    try:
        native, side, price, qty = trade["symbol"], trade["side"], trade["price"], trade["qty"]
        trade_id, timestamp = trade["trade_id"], trade["timestamp"]
    except KeyError as exc:
        raise TradeRejected(RejectReason.MISSING_FIELD, f"{exc.args[0]} is missing") from exc
    for key, value, kind in (
        ("symbol", native, str),
        ("side", side, str),
        ("trade_id", trade_id, int),
        ("timestamp", timestamp, str),
    ):
        if type(value) is not kind:
            raise TradeRejected(
                RejectReason.BAD_TYPE, f"{key} is {type(value).__name__}, expected {kind.__name__}"
            )
    symbol = canonical_pair(native)
    if symbol is None:
        raise TradeRejected(RejectReason.BAD_SYMBOL, f"symbol {native!r:.80} is not BASE/QUOTE")
    price_text = decimal_text(price, "price", RejectReason.BAD_PRICE)
    qty_text = decimal_text(qty, "qty", RejectReason.BAD_QTY)
    try:
        event_time = rfc3339_to_us(timestamp)
    except ValueError as exc:
        raise TradeRejected(RejectReason.BAD_TIMESTAMP, str(exc)) from exc
    return make_trade(
        exchange=exchange,
        symbol=symbol,
        trade_id=trade_id,
        price=price_text,
        qty=qty_text,
        side=side,
        event_time=event_time,
        ingest_time=recv_time_us,
    )


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _decimal_fragment(value: Decimal) -> orjson.Fragment:
    # The only type json.loads gives that orjson cannot write: keep its digits as a JSON number.
    return orjson.Fragment(str(value))


class KrakenAdapter(ExchangeAdapter):
    name: ClassVar[str] = "kraken"
    default_url: ClassVar[str] = "wss://ws.kraken.com/v2"

    def connect_url(self) -> str:
        return self.base_url

    def subscribe_messages(self) -> list[str]:
        # No snapshot: the last 50 trades would be replayed on every reconnect.
        request = {
            "method": "subscribe",
            "params": {
                "channel": "trade",
                "symbol": [native_symbol(symbol) for symbol in self.symbols],
                "snapshot": False,
            },
        }
        return [json.dumps(request)]

    def parse(self, frame: str | bytes, recv_time_us: int) -> ParsedFrame:
        """A ``trade`` frame (see :func:`parse_kraken_trade`), a ``heartbeat``, a ``status``
        (anything but ``"system": "online"`` means the engine stops matching: reconnect), or a
        reply to ``subscribe``/``unsubscribe``/``ping``."""
        try:
            text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
            message = json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
        # ValueError covers JSONDecodeError, bad UTF-8, NaN/Infinity and over-long integers.
        except (ValueError, RecursionError) as exc:
            return self.reject(RejectReason.MALFORMED_JSON, str(exc), frame, recv_time_us)
        if not isinstance(message, dict):
            return self.reject(
                RejectReason.UNKNOWN_MESSAGE, "a Kraken frame is a JSON object", frame, recv_time_us
            )
        channel = message.get("channel")
        if channel == "trade":
            return self._trades(message, frame, recv_time_us)
        if channel == "heartbeat":
            return ParsedFrame(FrameKind.HEARTBEAT)
        if channel == "status":
            return self._status(message, frame, recv_time_us)
        method = message.get("method")
        if method in ("subscribe", "unsubscribe"):
            if message.get("success") is True:
                return ParsedFrame(FrameKind.CONTROL)
            detail = f"{method} failed: {message.get('error')!r:.200}"
        elif method == "pong":
            return ParsedFrame(FrameKind.CONTROL)
        else:
            detail = f"channel {channel!r:.80} / method {method!r:.80} is not handled"
        return self.reject(RejectReason.UNKNOWN_MESSAGE, detail, frame, recv_time_us)

    def _trades(
        self, message: dict[str, Any], frame: str | bytes, recv_time_us: int
    ) -> ParsedFrame:
        if "data" not in message:
            return self.reject(RejectReason.MISSING_FIELD, "data is missing", frame, recv_time_us)
        data = message["data"]
        if not isinstance(data, list):
            return self.reject(RejectReason.BAD_TYPE, "data is not a list", frame, recv_time_us)
        parsed = ParsedFrame(FrameKind.TRADES)
        for element in data:
            if not isinstance(element, dict):
                problem = TradeRejected(RejectReason.BAD_TYPE, "a trade is a JSON object")
                parsed.dead_letters.append(
                    self.reject_element(
                        problem, element, frame, recv_time_us, default=_decimal_fragment
                    )
                )
                continue
            try:
                parsed.trades.append(
                    parse_kraken_trade(element, exchange=self.label, recv_time_us=recv_time_us)
                )
            except TradeRejected as exc:
                parsed.dead_letters.append(
                    self.reject_element(
                        exc, element, frame, recv_time_us, default=_decimal_fragment
                    )
                )
        return parsed

    def _status(
        self, message: dict[str, Any], frame: str | bytes, recv_time_us: int
    ) -> ParsedFrame:
        """``{"channel": "status", "type": "update", "data": [{"system": "online", ...}]}``."""
        data = message.get("data")
        if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
            return self.reject(
                RejectReason.BAD_TYPE, "status data is a list of objects", frame, recv_time_us
            )
        systems = [entry.get("system") for entry in data]
        if not all(isinstance(system, str) for system in systems):
            return self.reject(
                RejectReason.MISSING_FIELD, "status data lacks a system string", frame, recv_time_us
            )
        if any(system != "online" for system in systems):
            return ParsedFrame(FrameKind.SHUTDOWN)
        return ParsedFrame(FrameKind.CONTROL)
