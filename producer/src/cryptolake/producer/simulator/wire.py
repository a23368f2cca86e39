"""Pure encoders for the simulator: frames exactly as Binance, Kraken and Coinbase send them.

No I/O and no clock: the caller passes times and sequence numbers. Each format also says what a
correct parser derives from its trades (:class:`WireTruth`), which is what the ground-truth
file records, and can produce malformed frames with the reason code a parser should give.

References for the shapes:
- Binance spot combined streams and the ``<symbol>@trade`` payload:
  https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
- Kraken WebSocket v2 ``status``, ``trade`` and ``heartbeat`` channels:
  https://docs.kraken.com/exchange/api-reference/spot-websocket-v2/trade
- Coinbase Advanced Trade ``market_trades``, ``heartbeats`` and ``subscriptions``:
  https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/websocket/market-trades
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

import orjson

from cryptolake.common.candles import reference_bars
from cryptolake.common.symbols import canonical_symbol, is_perpetual, split_concatenated, spot
from cryptolake.common.trade import RejectReason
from cryptolake.producer.simulator.market import SimTrade

BINANCE: Final = "binance"
# Binance USD-M futures: Binance's wire with the order type, contracts named BASE-QUOTE-PERP.
BINANCE_FUTURES: Final = "binance-futures"
KRAKEN: Final = "kraken"
COINBASE: Final = "coinbase"
FORMATS: Final = (BINANCE, BINANCE_FUTURES, KRAKEN, COINBASE)
BINANCE_FORMATS: Final = (BINANCE, BINANCE_FUTURES)

KRAKEN_API_VERSION: Final = "2.0.9"

# 1990-01-01 and 2100-01-01 UTC, in µs: absurd trade times for the bad_timestamp frames.
ANCIENT_US: Final = 631_152_000_000_000
FUTURE_US: Final = 4_102_444_800_000_000


# --- symbols --------------------------------------------------------------------------------


def binance_symbol(symbol: str) -> str:
    """``BTC-USDT`` (or the contract ``BTC-USDT-PERP``) → ``BTCUSDT``."""
    return spot(symbol).replace("-", "")


def binance_stream(symbol: str) -> str:
    """``BTC-USDT`` → ``btcusdt@trade``."""
    return f"{binance_symbol(symbol).lower()}@trade"


def symbol_from_binance_stream(stream: str) -> str | None:
    """``btcusdt@trade`` → ``BTC-USDT``; None for other stream kinds or unknown quotes."""
    pair, _, kind = stream.partition("@")
    if kind != "trade":
        return None
    return split_concatenated(pair)


def kraken_symbol(symbol: str) -> str:
    """``BTC-USD`` → ``BTC/USD`` (WS v2 spells Bitcoin BTC, not XBT)."""
    return symbol.replace("-", "/")


def symbol_from_kraken(pair: str) -> str | None:
    """``BTC/USD`` (or ``XBT/USD``) → ``BTC-USD``; None when it is not BASE/QUOTE."""
    if pair.count("/") != 1:
        return None
    try:
        return canonical_symbol(pair)
    except ValueError:
        return None


def symbol_from_coinbase(product_id: str) -> str | None:
    if product_id.count("-") != 1:
        return None
    try:
        return canonical_symbol(product_id)
    except ValueError:
        return None


# --- decimals and times ---------------------------------------------------------------------


def pad_decimal(text: str, places: int = 8) -> str:
    """Binance prints every price and qty with 8 decimals: ``60000.1`` → ``60000.10000000``."""
    whole, _, frac = text.partition(".")
    if len(frac) >= places:
        return text
    return f"{whole}.{frac.ljust(places, '0')}"


def strip_decimal(text: str) -> str:
    """Kraken's JSON numbers carry no trailing zeros: ``60000.10`` → ``60000.1``."""
    if "." not in text:
        return text
    return text.rstrip("0").rstrip(".")


class _Rfc3339:
    """µs → RFC 3339 UTC, caching the formatted second (the flood path formats ~10^5/s)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, us: int, digits: int = 6) -> str:
        second, micros = divmod(us, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        if digits == 9:
            return f"{self._prefix}.{micros:06d}000Z"
        return f"{self._prefix}.{micros:06d}Z"


_rfc3339 = _Rfc3339()


def rfc3339_us(us: int) -> str:
    """``2023-09-25T07:49:37.708706Z``: six fraction digits, so a parser recovers the µs."""
    return _rfc3339(us)


def rfc3339_ns(us: int) -> str:
    """Coinbase envelope timestamps carry nanoseconds: ``…:50.714964855Z``."""
    return _rfc3339(us, 9)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# --- what a parser should derive --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WireTruth:
    """The trade values a correct parser derives from the wire (exact strings, epoch µs)."""

    price: str
    qty: str
    event_time_us: int


def wire_truth(fmt: str, trade: SimTrade) -> WireTruth:
    if fmt in BINANCE_FORMATS:
        # Binance carries ms: the µs below the ms are not on the wire.
        return WireTruth(
            pad_decimal(trade.price),
            pad_decimal(trade.qty),
            trade.event_time_us // 1000 * 1000,
        )
    if fmt == KRAKEN:
        return WireTruth(strip_decimal(trade.price), strip_decimal(trade.qty), trade.event_time_us)
    if fmt == COINBASE:
        return WireTruth(trade.price, trade.qty, trade.event_time_us)
    raise ValueError(f"unknown wire format {fmt!r}")


# --- Binance ---------------------------------------------------------------------------------


def binance_trade_payload(trade: SimTrade) -> dict[str, Any]:
    """The ``<symbol>@trade`` event (since 2023 without the buyer/seller order ids); a futures
    contract's carries the order type ``X`` instead of ``M``."""
    trade_ms = trade.event_time_us // 1000
    if is_perpetual(trade.symbol):
        return {
            "e": "trade", "E": trade_ms, "T": trade_ms, "s": binance_symbol(trade.symbol),
            "t": trade.trade_id, "p": pad_decimal(trade.price), "q": pad_decimal(trade.qty),
            "X": "MARKET", "m": trade.side == "sell",
        }  # fmt: skip
    return {
        "e": "trade",
        "E": trade_ms,
        "s": binance_symbol(trade.symbol),
        "t": trade.trade_id,
        "p": pad_decimal(trade.price),
        "q": pad_decimal(trade.qty),
        "T": trade_ms,
        # "Is the buyer the market maker?" — true exactly when the taker sold.
        "m": trade.side == "sell",
        "M": True,
    }


def encode_binance_trade(trade: SimTrade, *, combined: bool = True) -> bytes:
    """One trade, one frame. ``combined`` wraps it as ``/stream`` does; ``/ws`` sends it bare."""
    payload = binance_trade_payload(trade)
    if combined:
        return _dumps({"stream": binance_stream(trade.symbol), "data": payload})
    return _dumps(payload)


def encode_binance_history(trades: Sequence[SimTrade]) -> bytes:
    """``GET /api/v3/historicalTrades``'s answer: the trades in id order, as the REST API
    writes them (``isBuyerMaker``: the taker sold)."""
    return _dumps([
        {"id": trade.trade_id, "price": pad_decimal(trade.price), "qty": pad_decimal(trade.qty),
         "quoteQty": format(Decimal(trade.price) * Decimal(trade.qty), "f"),
         "time": trade.event_time_us // 1000, "isBuyerMaker": trade.side == "sell",
         "isBestMatch": True}
        for trade in trades
    ])  # fmt: skip


def encode_binance_rest_error(code: int, msg: str) -> bytes:
    """A REST error body (``{"code": -1121, "msg": "Invalid symbol."}``)."""
    return _dumps({"code": code, "msg": msg})


def encode_binance_response(request_id: int | str | None, result: Any = None) -> bytes:
    """Reply to SUBSCRIBE / UNSUBSCRIBE (``result`` null) or LIST_SUBSCRIPTIONS (a list)."""
    return _dumps({"result": result, "id": request_id})


def encode_binance_error(request_id: int | str | None, code: int, msg: str) -> bytes:
    return _dumps({"error": {"code": code, "msg": msg}, "id": request_id})


def encode_binance_shutdown(now_us: int) -> bytes:
    return _dumps({"e": "serverShutdown", "E": now_us // 1000})


# --- Kraken ----------------------------------------------------------------------------------


def _number(text: str) -> orjson.Fragment:
    # Kraken's price and qty are JSON numbers: write the decimal digits verbatim, never a float.
    return orjson.Fragment(text.encode())


def kraken_trade_item(trade: SimTrade) -> dict[str, Any]:
    return {
        "symbol": kraken_symbol(trade.symbol),
        "side": trade.side,
        "price": _number(strip_decimal(trade.price)),
        "qty": _number(strip_decimal(trade.qty)),
        "ord_type": "market",
        "trade_id": trade.trade_id,
        "timestamp": rfc3339_us(trade.event_time_us),
    }


def encode_kraken_trades(trades: Sequence[SimTrade], *, snapshot: bool = False) -> bytes:
    """One ``trade`` frame; the server batches trades of one symbol into it."""
    return _dumps(
        {
            "channel": "trade",
            "type": "snapshot" if snapshot else "update",
            "data": [kraken_trade_item(trade) for trade in trades],
        }
    )


def encode_kraken_history(pair: str, trades: Sequence[SimTrade], last_ns: int) -> bytes:
    """``GET /0/public/Trades``'s answer: ``[price, volume, time in s, b|s, m|l, misc, id]``
    per trade (the time a JSON number: its digits kept exact), and the ``last`` cursor."""
    rows = [
        [strip_decimal(t.price), strip_decimal(t.qty),
         _number(f"{t.event_time_us // 1_000_000}.{t.event_time_us % 1_000_000:06d}"),
         "b" if t.side == "buy" else "s", "l", "", t.trade_id]
        for t in trades
    ]  # fmt: skip
    return _dumps({"error": [], "result": {pair: rows, "last": str(last_ns)}})


def encode_kraken_rest_error(error: str) -> bytes:
    """Kraken's REST errors come with HTTP 200: ``{"error": ["EGeneral:Too many requests"]}``."""
    return _dumps({"error": [error]})


def encode_kraken_status(connection_id: int, *, system: str = "online") -> bytes:
    """Sent on connect (``online``); ``maintenance`` announces the server is going away."""
    return _dumps(
        {
            "channel": "status",
            "type": "update",
            "data": [
                {
                    "version": KRAKEN_API_VERSION,
                    "system": system,
                    "api_version": "v2",
                    "connection_id": connection_id,
                }
            ],
        }
    )


def encode_kraken_ack(
    method: str,
    result: Mapping[str, Any],
    *,
    req_id: int | None,
    time_in_us: int,
    time_out_us: int,
) -> bytes:
    """Success reply to subscribe / unsubscribe: one per symbol, as Kraken does."""
    reply: dict[str, Any] = {"method": method, "result": dict(result), "success": True}
    if req_id is not None:
        reply["req_id"] = req_id
    reply["time_in"] = rfc3339_us(time_in_us)
    reply["time_out"] = rfc3339_us(time_out_us)
    return _dumps(reply)


def encode_kraken_error(
    method: str | None,
    error: str,
    *,
    req_id: int | None,
    time_in_us: int,
    time_out_us: int,
    symbol: str | None = None,
) -> bytes:
    reply: dict[str, Any] = {"error": error, "success": False}
    if method is not None:
        reply["method"] = method
    if symbol is not None:
        reply["symbol"] = symbol
    if req_id is not None:
        reply["req_id"] = req_id
    reply["time_in"] = rfc3339_us(time_in_us)
    reply["time_out"] = rfc3339_us(time_out_us)
    return _dumps(reply)


def encode_kraken_pong(req_id: int | None, *, time_in_us: int, time_out_us: int) -> bytes:
    reply: dict[str, Any] = {"method": "pong"}
    if req_id is not None:
        reply["req_id"] = req_id
    reply["time_in"] = rfc3339_us(time_in_us)
    reply["time_out"] = rfc3339_us(time_out_us)
    return _dumps(reply)


KRAKEN_HEARTBEAT: Final = b'{"channel":"heartbeat"}'


# --- Coinbase --------------------------------------------------------------------------------


def coinbase_trade_item(trade: SimTrade) -> dict[str, Any]:
    return {
        "trade_id": str(trade.trade_id),
        "product_id": trade.symbol,
        "price": trade.price,
        "size": trade.qty,
        # The resting maker's side, as the adapter reads it (see exchanges/coinbase.py): a taker
        # buy fills a resting SELL.
        "side": "SELL" if trade.side == "buy" else "BUY",
        "time": rfc3339_us(trade.event_time_us),
    }


def encode_coinbase_history(trades: Sequence[SimTrade]) -> bytes:
    """The Exchange API's ``GET /products/{id}/trades`` answer, newest first; ``side`` is the
    maker's, lower case."""
    return _dumps([
        {"time": rfc3339_us(t.event_time_us), "trade_id": t.trade_id, "price": t.price,
         "size": t.qty, "side": "sell" if t.side == "buy" else "buy"}
        for t in trades
    ])  # fmt: skip


def _coinbase_envelope(channel: str, sequence_num: int, now_us: int, events: list[Any]) -> bytes:
    return _dumps(
        {
            "channel": channel,
            "client_id": "",
            "timestamp": rfc3339_ns(now_us),
            "sequence_num": sequence_num,
            "events": events,
        }
    )


def encode_coinbase_trades(trades: Sequence[SimTrade], *, sequence_num: int, now_us: int) -> bytes:
    """One ``market_trades`` frame (Coinbase batches ~250 ms of trades into one)."""
    items = [coinbase_trade_item(trade) for trade in trades]
    return _coinbase_envelope(
        "market_trades", sequence_num, now_us, [{"type": "update", "trades": items}]
    )


def encode_coinbase_subscriptions(
    subscriptions: Mapping[str, Sequence[str]], *, sequence_num: int, now_us: int
) -> bytes:
    """The ack: every channel the connection is now subscribed to, with its products."""
    current = {channel: list(ids) for channel, ids in subscriptions.items()}
    return _coinbase_envelope("subscriptions", sequence_num, now_us, [{"subscriptions": current}])


def encode_coinbase_heartbeat(counter: int, *, sequence_num: int, now_us: int) -> bytes:
    seconds, micros = divmod(now_us, 1_000_000)
    # Coinbase prints Go's time.Time here, monotonic clock reading included.
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    current_time = f"{stamp}.{micros:06d}000 +0000 UTC m=+{counter:.9f}"
    return _coinbase_envelope(
        "heartbeats",
        sequence_num,
        now_us,
        [{"current_time": current_time, "heartbeat_counter": counter}],
    )


def encode_coinbase_error(message: str) -> bytes:
    return _dumps({"type": "error", "message": message})


COINBASE_SHUTDOWN: Final = b'{"type":"error","message":"server shutting down"}'


# --- shutdown notices -------------------------------------------------------------------------


def encode_shutdown_notice(fmt: str, *, now_us: int, connection_id: int = 0) -> bytes:
    """What each exchange sends before it goes away, so a client reconnects at once."""
    if fmt in BINANCE_FORMATS:
        return encode_binance_shutdown(now_us)
    if fmt == KRAKEN:
        return encode_kraken_status(connection_id, system="maintenance")
    if fmt == COINBASE:
        return COINBASE_SHUTDOWN
    raise ValueError(f"unknown wire format {fmt!r}")


# --- malformed frames -------------------------------------------------------------------------


class MalformedKind(StrEnum):
    TRUNCATED_JSON = "truncated_json"
    UNKNOWN_MESSAGE = "unknown_message"
    MISSING_PRICE = "missing_price"
    NEGATIVE_PRICE = "negative_price"
    ZERO_PRICE = "zero_price"
    ZERO_QTY = "zero_qty"
    ANCIENT_TIMESTAMP = "ancient_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"


EXPECTED_REASON: Final[Mapping[MalformedKind, RejectReason]] = {
    MalformedKind.TRUNCATED_JSON: RejectReason.MALFORMED_JSON,
    MalformedKind.UNKNOWN_MESSAGE: RejectReason.UNKNOWN_MESSAGE,
    MalformedKind.MISSING_PRICE: RejectReason.MISSING_FIELD,
    MalformedKind.NEGATIVE_PRICE: RejectReason.BAD_PRICE,
    MalformedKind.ZERO_PRICE: RejectReason.BAD_PRICE,
    MalformedKind.ZERO_QTY: RejectReason.BAD_QTY,
    MalformedKind.ANCIENT_TIMESTAMP: RejectReason.BAD_TIMESTAMP,
    MalformedKind.FUTURE_TIMESTAMP: RejectReason.BAD_TIMESTAMP,
}
MALFORMED_KINDS: Final = tuple(MalformedKind)


@dataclass(frozen=True, slots=True)
class MalformedFrame:
    """A frame with exactly one bad thing in it, and the code a correct parser gives it."""

    kind: MalformedKind
    reason: RejectReason
    frame: bytes


def _zero(text: str) -> str:
    """``60000.10`` → ``0.00``: zero, written with the field's own decimals."""
    _, dot, frac = text.partition(".")
    return f"0{dot}{'0' * len(frac)}"


def _bad_frame(fmt: str, kind: MalformedKind, trade: SimTrade, sequence_num: int) -> bytes:
    """The good frame for ``trade``, with the one field that ``kind`` names spoiled.

    Only the trade's own time is spoiled for the timestamp kinds: Binance's event time ``E``
    and Coinbase's envelope ``timestamp`` stay sane, since a parser must not use them.
    """
    sent_us = trade.event_time_us
    if kind is MalformedKind.ANCIENT_TIMESTAMP:
        trade = trade._replace(event_time_us=ANCIENT_US)
    elif kind is MalformedKind.FUTURE_TIMESTAMP:
        trade = trade._replace(event_time_us=FUTURE_US)
    price = trade.price
    if kind is MalformedKind.NEGATIVE_PRICE:
        price = f"-{price}"
    elif kind is MalformedKind.ZERO_PRICE:
        price = _zero(price)
    qty = _zero(trade.qty) if kind is MalformedKind.ZERO_QTY else trade.qty

    if fmt in BINANCE_FORMATS:
        data = binance_trade_payload(trade)
        data["E"] = sent_us // 1000
        data["p"], data["q"] = pad_decimal(price), pad_decimal(qty)
        if kind is MalformedKind.MISSING_PRICE:
            del data["p"]
        if kind is MalformedKind.UNKNOWN_MESSAGE:
            data["e"] = "tradeV9"
        return _dumps({"stream": binance_stream(trade.symbol), "data": data})
    if fmt == KRAKEN:
        item = kraken_trade_item(trade)
        item["price"], item["qty"] = _number(strip_decimal(price)), _number(strip_decimal(qty))
        if kind is MalformedKind.MISSING_PRICE:
            del item["price"]
        channel = "trade_v9" if kind is MalformedKind.UNKNOWN_MESSAGE else "trade"
        return _dumps({"channel": channel, "type": "update", "data": [item]})
    if fmt == COINBASE:
        entry = coinbase_trade_item(trade)
        entry["price"], entry["size"] = price, qty
        if kind is MalformedKind.MISSING_PRICE:
            del entry["price"]
        channel = "market_trades_v9" if kind is MalformedKind.UNKNOWN_MESSAGE else "market_trades"
        events = [{"type": "update", "trades": [entry]}]
        return _coinbase_envelope(channel, sequence_num, sent_us, events)
    raise ValueError(f"unknown wire format {fmt!r}")


def malformed_frame(
    fmt: str, kind: MalformedKind, template: SimTrade, *, sequence_num: int = 0
) -> MalformedFrame:
    """One bad frame built from ``template`` (one trade in it, one thing wrong with it).

    Truncated JSON is the good frame cut in half; an unknown message renames the type field
    (``e`` / ``channel``); the others spoil one field of the trade.
    """
    if kind is MalformedKind.TRUNCATED_JSON:
        whole = _good_frame(fmt, template, sequence_num)
        frame = whole[: len(whole) // 2]
    else:
        frame = _bad_frame(fmt, kind, template, sequence_num)
    return MalformedFrame(kind, EXPECTED_REASON[kind], frame)


def _good_frame(fmt: str, trade: SimTrade, sequence_num: int) -> bytes:
    if fmt in BINANCE_FORMATS:
        return encode_binance_trade(trade)
    if fmt == KRAKEN:
        return encode_kraken_trades([trade])
    if fmt == COINBASE:
        return encode_coinbase_trades(
            [trade], sequence_num=sequence_num, now_us=trade.event_time_us
        )
    raise ValueError(f"unknown wire format {fmt!r}")


# --- published 1-minute klines (REST) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MinuteBar:
    """A market minute as an exchange publishes its kline, from every trade it made (sent to a
    client or not): exact decimals."""

    minute_us: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trades: int
    buy_volume: Decimal
    buy_quote_volume: Decimal


def gold_candles(fmt: str, trades: Sequence[SimTrade]) -> dict[tuple[str, int], dict[str, Any]]:
    """What a correct pipeline's ``gold/candles_1m`` holds for these trades received in
    ``fmt``: the Decimal oracle's bars (``reference_bars``) of the trades as the wire carries
    them, by (symbol, epoch minute), with each bar's trade-id bounds."""
    bars = reference_bars(
        {"symbol": t.symbol, "trade_id": str(t.trade_id), "price": w.price, "qty": w.qty,
         "side": t.side, "event_time": w.event_time_us}
        for t, w in ((t, wire_truth(fmt, t)) for t in trades)
    )  # fmt: skip
    ids: dict[tuple[str, int], list[int]] = {}
    for trade in trades:
        key = (trade.symbol, wire_truth(fmt, trade).event_time_us // 60_000_000)
        ids.setdefault(key, []).append(trade.trade_id)
    return {key: {**bar, "min_trade_id": min(ids[key]), "max_trade_id": max(ids[key])}
            for key, bar in bars.items()}  # fmt: skip


def minute_bars(trades: Sequence[SimTrade], start_us: int, end_us: int) -> list[MinuteBar]:
    """The bars of the minutes in [start, end) that had trades (``trades`` in id order, which
    is time order in the simulator)."""
    minute = 60_000_000
    groups: dict[int, list[SimTrade]] = {}
    for trade in trades:
        if start_us <= trade.event_time_us < end_us:
            groups.setdefault(trade.event_time_us - trade.event_time_us % minute, []).append(trade)
    bars = []
    for minute_us, group in sorted(groups.items()):
        prices = [Decimal(t.price) for t in group]
        buys = [t for t in group if t.side == "buy"]
        bars.append(MinuteBar(
            minute_us, prices[0], max(prices), min(prices), prices[-1],
            sum((Decimal(t.qty) for t in group), Decimal(0)),
            sum((Decimal(t.price) * Decimal(t.qty) for t in group), Decimal(0)),
            len(group),
            sum((Decimal(t.qty) for t in buys), Decimal(0)),
            sum((Decimal(t.price) * Decimal(t.qty) for t in buys), Decimal(0)),
        ))  # fmt: skip
    return bars


def _plain(value: Decimal) -> str:
    return format(value, "f")


def encode_binance_klines(bars: Sequence[MinuteBar]) -> bytes:
    """``GET /api/v3/klines?interval=1m``: one list per minute, decimals padded to 8 places."""
    return _dumps([
        [bar.minute_us // 1000, pad_decimal(_plain(bar.open)), pad_decimal(_plain(bar.high)),
         pad_decimal(_plain(bar.low)), pad_decimal(_plain(bar.close)),
         pad_decimal(_plain(bar.volume)), (bar.minute_us + 60_000_000) // 1000 - 1,
         pad_decimal(_plain(bar.quote_volume)), bar.trades, pad_decimal(_plain(bar.buy_volume)),
         pad_decimal(_plain(bar.buy_quote_volume)), "0"]
        for bar in bars
    ])  # fmt: skip


def encode_kraken_ohlc(pair: str, bars: Sequence[MinuteBar]) -> bytes:
    """``GET /0/public/OHLC?interval=1``: ``[time, open, high, low, close, vwap, volume,
    count]`` per minute (strings, no trailing zeros; vwap to 8 places), and ``last``."""
    rows = [
        [bar.minute_us // 1_000_000, *(strip_decimal(_plain(v)) for v in
                                       (bar.open, bar.high, bar.low, bar.close)),
         strip_decimal(_plain((bar.quote_volume / bar.volume).quantize(Decimal("1e-8")))),
         strip_decimal(_plain(bar.volume)), bar.trades]
        for bar in bars
    ]  # fmt: skip
    last = bars[-1].minute_us // 1_000_000 if bars else 0
    return _dumps({"error": [], "result": {pair: rows, "last": last}})


def encode_coinbase_candles(bars: Sequence[MinuteBar]) -> bytes:
    """The Exchange API's ``GET /products/{id}/candles?granularity=60``: newest first,
    ``[time, low, high, open, close, volume]`` as JSON numbers (their digits verbatim)."""
    return _dumps([
        [bar.minute_us // 1_000_000,
         *(_number(_plain(v)) for v in (bar.low, bar.high, bar.open, bar.close, bar.volume))]
        for bar in reversed(bars)
    ])  # fmt: skip
