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

# Prices and quantities beyond 1e±30 are absurd, and formatting one such as 1e999999999 in
# plain notation would build a gigabyte string.
_MAX_MAGNITUDE: Final = 30


# REST history: the side letters, and the errors that mean "ask again later" (HTTP 200).
_HISTORY_SIDES: Final = {"b": "buy", "s": "sell"}
_BUSY_ERRORS: Final = ("EAPI:Rate limit exceeded", "EGeneral:Too many requests",
                       "EService:Unavailable", "EService:Busy")  # fmt: skip


def rest_pair(symbol: str) -> str:
    """``BTC-USD`` → ``XBTUSD``: the REST API's pair names still spell bitcoin XBT."""
    base, _, quote = symbol.partition("-")
    return ("XBT" if base == "BTC" else base) + quote


def parse_kraken_history_trade(
    element: object, symbol: str, *, exchange: str, recv_time_us: int
) -> Trade:
    """One element of a ``Trades`` answer (read with ``parse_float=Decimal``): ``[price,
    volume, time (s), side b/s, order type, misc, trade_id]``; raises :class:`TradeRejected`."""
    if not isinstance(element, list) or len(element) < 7:
        raise TradeRejected(RejectReason.BAD_TYPE, "a trade is a list of 7 values")
    price, qty, seconds, side, _, _, trade_id = element[:7]
    if type(price) is not str or type(qty) is not str:
        raise TradeRejected(RejectReason.BAD_TYPE, "price and volume are strings")
    if type(trade_id) is not int:
        raise TradeRejected(RejectReason.BAD_TYPE, "trade_id is not an integer")
    if type(seconds) not in (int, Decimal) or not 0 <= seconds < 10**11:
        raise TradeRejected(RejectReason.BAD_TIMESTAMP, f"time {seconds!r:.40} is not seconds")
    taker_side = _HISTORY_SIDES.get(side) if isinstance(side, str) else None
    if taker_side is None:
        raise TradeRejected(RejectReason.BAD_SIDE, f"side {side!r:.20} is not b or s")
    return make_trade(
        exchange=exchange,
        symbol=symbol,
        trade_id=trade_id,
        price=price,
        qty=qty,
        side=taker_side,
        # The REST time has 100 ns digits; the stream's, µs: truncate to the stream's.
        event_time=int(Decimal(seconds).scaleb(6)),
        ingest_time=recv_time_us,
    )


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
    default_rest_url: ClassVar[str | None] = "https://api.kraken.com"
    # Public REST calls: about one per second per address.
    history_interval_s: ClassVar[float] = 1.0

    def history_request(self, symbol: str, gap: Gap, cursor: str | None) -> HistoryRequest:
        """``GET /0/public/Trades``: up to 1,000 trades after ``since`` (ns), oldest first; the
        first page starts just before the time of the trade seen before the gap. Docs:
        https://docs.kraken.com/api/docs/rest-api/get-recent-trades"""
        since = cursor if cursor is not None else str(gap.after_time_us * 1000 - 1)
        params = {"pair": rest_pair(symbol), "since": since, "count": str(self.history_limit)}
        return HistoryRequest(f"{str(self.rest_url).rstrip('/')}/0/public/Trades", params)

    def history_busy(self, body: bytes) -> bool:
        return any(error.encode() in body for error in _BUSY_ERRORS)

    def parse_history(self, symbol: str, body: bytes, recv_time_us: int) -> HistoryPage:
        """The answer as the docs show it (one pair's list and the ``last`` cursor)::

        {"error": [],
         "result": {"XXBTZUSD": [["30243.40000", "0.34507674", 1688669597.8277369, "b",
                                  "m", "", 61044952]],
                    "last": "1688671969993150842"}}
        """
        try:
            message = json.loads(body, parse_float=Decimal, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:
            return HistoryPage(
                self.reject(RejectReason.MALFORMED_JSON, str(exc), body, recv_time_us), None
            )
        result = message.get("result") if isinstance(message, dict) else None
        errors = message.get("error") if isinstance(message, dict) else None
        lists = [v for k, v in result.items() if k != "last"] if isinstance(result, dict) else []
        if errors or len(lists) != 1 or not isinstance(lists[0], list):
            detail = f"errors {errors!r:.200}" if errors else "result holds no one list of trades"
            return HistoryPage(
                self.reject(RejectReason.UNKNOWN_MESSAGE, detail, body, recv_time_us), None
            )
        parsed = self.history_list(
            body, recv_time_us,
            lambda e: parse_kraken_history_trade(e, symbol, exchange=self.label,
                                                 recv_time_us=recv_time_us),
            lists[0], default=_decimal_fragment,
        )  # fmt: skip
        last = result.get("last") if isinstance(result, dict) else None
        return HistoryPage(parsed, last if isinstance(last, str) and lists[0] else None)

    def kline_request(self, symbol: str, start_us: int, end_us: int) -> HistoryRequest:
        """``GET /0/public/OHLC?interval=1``: the minutes after ``since`` (s), at most the last
        720. Docs: https://docs.kraken.com/api/docs/rest-api/get-ohlc-data"""
        since = str(start_us // 1_000_000 - 60)  # the minute before: `since` may be exclusive
        params = {"pair": rest_pair(symbol), "interval": "1", "since": since}
        return HistoryRequest(f"{str(self.rest_url).rstrip('/')}/0/public/OHLC", params)

    def parse_klines(self, symbol: str, body: bytes) -> list[Kline]:
        """The answer as the docs show it: per minute ``[time (s), open, high, low, close,
        vwap, volume, count]`` under the pair's name, and the ``last`` cursor::

            {"error": [],
             "result": {"XXBTZUSD": [[1688671200, "30306.1", "30306.2", "30305.7", "30305.7",
                                      "30306.1", "3.39243896", 23]],
                        "last": 1688672160}}

        Kraken's vwap is rounded to the pair's price decimals, so it is not compared."""
        message = load_json(body)
        result = message.get("result") if isinstance(message, dict) else None
        errors = message.get("error") if isinstance(message, dict) else None
        lists = [v for k, v in result.items() if k != "last"] if isinstance(result, dict) else []
        if errors or len(lists) != 1 or not isinstance(lists[0], list):
            detail = f"errors {errors!r:.200}" if errors else "result holds no one list of klines"
            raise KlineError(detail)
        klines = []
        for row in lists[0]:
            if not isinstance(row, list) or len(row) != 8:
                raise KlineError(f"a Kraken OHLC entry is a list of 8 values, got {row!r:.80}")
            opened, open_, high, low, close, _, volume, count = row
            klines.append(Kline(
                minute_us=minute_field(opened, "time", 1_000_000),
                open=decimal_field(open_, "open"), high=decimal_field(high, "high"),
                low=decimal_field(low, "low"), close=decimal_field(close, "close"),
                volume=decimal_field(volume, "volume"), trades=count_field(count, "count"),
            ))  # fmt: skip
        return klines

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
