"""The market simulator's I/O shell: one local WebSocket server that speaks the exchanges.

Paths on one port (the adapters take ``ws://HOST:PORT/<exchange>`` as their base URL):

- ``/binance/stream?streams=btcusdt@trade/ethusdt@trade`` — Binance's combined-stream URL form;
  ``/binance/ws`` and ``/binance/ws/<stream>`` send bare payloads. Both accept SUBSCRIBE,
  UNSUBSCRIBE and LIST_SUBSCRIPTIONS.
- ``/binance-futures/...`` — the same for Binance USD-M futures: each symbol's perpetual
  contract (``BTC-USDT-PERP``), streamed as ``btcusdt@trade``, with the order type ``X``.
- ``/kraken`` — Kraken WS v2: a status frame on connect, ``subscribe``/``unsubscribe``/``ping``.
- ``/coinbase`` — Coinbase Advanced Trade: ``subscribe`` to ``market_trades`` and
  ``heartbeats``.

Each exchange has its own synthetic market (:mod:`.market`), shared by all its connections
like a real venue: a client that is away misses what traded meanwhile. Everything sent is
SYNTHETIC; the logs say so, and the producer labels such data ``simulator``.

The same paths answer REST requests for each market's trade history, as the exchanges do:
``/binance/api/v3/historicalTrades?symbol=BTCUSDT&fromId=…``,
``/binance-futures/fapi/v1/historicalTrades`` (401 without ``X-MBX-APIKEY``, as Binance) and
``/fapi/v1/trades`` (the newest),
``/kraken/0/public/Trades?pair=XBTUSDT&since=<ns>`` and
``/coinbase/products/BTC-USDT/trades?after=<id>``. The history holds every trade the market
made (the last ``history_per_symbol`` of each symbol), sent or not.

Scenarios (see :class:`SimulatorConfig`) inject the faults a feed must survive: dropped
connections, frames silently skipped, malformed frames, duplicates, out-of-order trades, a
shutdown notice, and REST answers of 429 and 503. With
``ground_truth_path`` set, every item actually sent is appended to a JSON-lines file, in send
order, as a correct parser would read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import zlib
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qs, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cryptolake.common.symbols import canonical_symbol, perpetual, split_concatenated, spot
from cryptolake.common.timeutil import now_us, rfc3339_to_us
from cryptolake.producer.simulator import coins, wire
from cryptolake.producer.simulator.market import Market, SimTrade

log = logging.getLogger("cryptolake.producer.simulator")

ExchangeName = Literal["binance", "binance-futures", "kraken", "coinbase"]
EXCHANGES: Final[tuple[ExchangeName, ...]] = ("binance", "binance-futures", "kraken", "coinbase")

# Flood mode draws this many trades per step: enough for full 50-trade frames per symbol.
FLOOD_BATCH: Final = 512
# Paced mode without a cap still bounds a frame, as exchanges do.
PACED_FRAME_CAP: Final = 1000
# Batches a connection may have queued in flood mode before the market waits for it.
FLOOD_INBOX: Final = 4
# Batches a slow connection may have queued in paced mode before it starts missing trades.
PACED_INBOX: Final = 1000
PROGRESS_EVERY_S: Final = 10.0
TRUTH_FLUSH_EVERY_S: Final = 1.0
TRUTH_FLUSH_LINES: Final = 20_000


class SimulatorConfig(BaseModel):
    """What the simulator does. Defaults give a calm 50 trades/s tape of BTC and ETH."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 42
    rate_per_s: float = Field(
        default=50.0, gt=0, description="mean trades/s per exchange (paced mode)"
    )
    flood: bool = Field(
        default=False, description="send as fast as each socket takes, ignoring the rate"
    )
    max_trades: int | None = Field(
        default=None,
        ge=0,
        description="stop sending trades after this many in total (heartbeats go on)",
    )
    trades_per_frame: int | None = Field(
        default=None,
        ge=1,
        description="cap for Kraken/Coinbase frames; default 50 in flood, else natural",
    )
    symbols: list[str] = Field(default_factory=lambda: ["BTC-USDT", "ETH-USDT"])
    disconnect_every_s: float | None = Field(
        default=None, gt=0, description="drop every connection this long after it opened"
    )
    malformed_every: int | None = Field(
        default=None, ge=1, description="follow every Nth trade frame with one malformed frame"
    )
    duplicate_every: int | None = Field(
        default=None, ge=1, description="after every Nth trade, re-send an already-sent one"
    )
    skip_frame_every: int | None = Field(
        default=None,
        ge=2,
        description="silently skip every Nth trade frame: the connection stays open, its "
        "trades never arrive (the history still has them)",
    )
    rest_fail_every: int | None = Field(
        default=None,
        ge=2,
        description="answer every Nth REST request with 429 (Retry-After: 1) or 503, in turn",
    )
    history_per_symbol: int = Field(
        default=200_000, ge=1, description="trades per symbol the REST history keeps"
    )
    out_of_order_every: int | None = Field(
        default=None, ge=1, description="swap every Nth trade with the next trade of its symbol"
    )
    shutdown_after_s: float | None = Field(
        default=None,
        gt=0,
        description="send the shutdown notice, then close every connection (once; "
        "connections opened later are served normally)",
    )
    ground_truth_path: Path | None = None
    host: str = "127.0.0.1"
    tick_s: float = Field(default=0.05, gt=0, description="paced mode: how often trades are sent")
    heartbeat_every_s: float = Field(default=1.0, gt=0)
    ping_interval_s: float | None = Field(
        default=20.0, gt=0, description="WebSocket ping keepalive"
    )

    @field_validator("symbols")
    @classmethod
    def _canonical_symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one symbol")
        return list(dict.fromkeys(canonical_symbol(symbol) for symbol in value))

    @property
    def frame_cap(self) -> int:
        if self.trades_per_frame is not None:
            return self.trades_per_frame
        return 50 if self.flood else PACED_FRAME_CAP


def market_seed(seed: int, exchange: str) -> int:
    """Each exchange gets its own reproducible tape (own ids and prices) from one seed."""
    return zlib.crc32(f"{seed}:{exchange}".encode())


class _GroundTruth:
    """Buffered JSON-lines log of what was sent; flushed every second and on close."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._lines: list[bytes] = []

    def trades(self, fmt: str, items: list[tuple[SimTrade, bool]]) -> None:
        for trade, duplicate in items:
            truth = wire.wire_truth(fmt, trade)
            record = {
                "kind": "trade",
                "format": fmt,
                "symbol": trade.symbol,
                "trade_id": str(trade.trade_id),
                "price": truth.price,
                "qty": truth.qty,
                "side": trade.side,
                "event_time": truth.event_time_us,
                "duplicate": duplicate,
            }
            self._lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        if len(self._lines) >= TRUTH_FLUSH_LINES:
            self.flush()

    def malformed(self, fmt: str, bad: wire.MalformedFrame) -> None:
        record = {
            "kind": "malformed",
            "format": fmt,
            "expected_reason": str(bad.reason),
            "frame": bad.frame.decode(),
        }
        self._lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def flush(self) -> None:
        if self._lines:
            self._file.write(b"".join(self._lines))
            self._lines.clear()
        self._file.flush()

    def close(self) -> None:
        self.flush()
        self._file.close()


class _Wake:
    """Inbox marker: nothing to send, look at the connection's flags."""


_WAKE: Final = _Wake()
# What a connection's writer takes from its inbox: a trade batch, a control frame built at
# send time (Coinbase numbers every frame), or a wake-up.
_Item = list[SimTrade] | Callable[[], bytes] | _Wake


class _Session(ABC):
    """One client connection. Its writer task is the only one that sends on the socket, so
    send order, Coinbase sequence numbers and the ground truth always agree."""

    fmt: ClassVar[ExchangeName]

    def __init__(self, sim: SimulatorServer, ws: ServerConnection, index: int) -> None:
        self.sim = sim
        self.ws = ws
        self.index = index
        self.config = sim.config
        self.symbols: set[str] = set()  # canonical symbols whose trades this client wants
        maxsize = FLOOD_INBOX if self.config.flood else PACED_INBOX
        self.inbox: asyncio.Queue[_Item] = asyncio.Queue(maxsize=maxsize)
        self.shutdown_requested = False
        self.frames_sent = 0
        self.last_send = 0.0  # loop time of the last frame sent
        self._malformed_count = 0
        self._trade_frames = 0
        self._dup_count = 0
        self._ooo_count = 0
        self._recent: deque[SimTrade] = deque(maxlen=4)
        self._held: dict[str, SimTrade] = {}
        self._overflow_logged = False

    # --- hooks each exchange fills in -----------------------------------------------------

    @abstractmethod
    async def on_open(self) -> None:
        """Called once the connection is up (subscriptions from the URL, greeting frames)."""

    @abstractmethod
    async def on_message(self, message: str | bytes) -> None:
        """Handle one client request (subscribe, unsubscribe, ping, ...)."""

    @abstractmethod
    def encode_frame(self, items: list[tuple[SimTrade, bool]]) -> bytes:
        """One trade frame holding ``items`` (Binance: always exactly one)."""

    def heartbeat(self) -> bytes | None:
        """The application heartbeat due now, if this exchange sends one."""
        return None

    def shutdown_notice(self) -> bytes:
        return wire.encode_shutdown_notice(self.fmt, now_us=now_us())

    def sequence_num(self) -> int:
        return 0

    # --- subscriptions --------------------------------------------------------------------

    def subscribe(self, symbols: set[str]) -> None:
        self.symbols |= symbols
        if self.symbols:
            self.sim.feeds[self.fmt].add(self)

    def unsubscribe(self, symbols: set[str]) -> None:
        self.symbols -= symbols
        if not self.symbols:
            self.sim.feeds[self.fmt].discard(self)

    async def queue(self, build: Callable[[], bytes]) -> None:
        await self.inbox.put(build)

    def offer(self, trades: list[SimTrade]) -> None:
        """Paced mode: hand over a batch without waiting; a stuck client misses it."""
        try:
            self.inbox.put_nowait(trades)
        except asyncio.QueueFull:
            if not self._overflow_logged:
                log.warning(
                    "%s connection %d is not reading: dropping trades", self.fmt, self.index
                )
                self._overflow_logged = True

    def discard_inbox(self) -> None:
        """Empty the inbox of a closed connection, releasing a flood feed blocked on it."""
        while not self.inbox.empty():
            self.inbox.get_nowait()

    def request_shutdown(self) -> None:
        self.shutdown_requested = True
        with contextlib.suppress(asyncio.QueueFull):
            self.inbox.put_nowait(_WAKE)

    # --- the writer -----------------------------------------------------------------------

    async def write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        drop_at = opened + (self.config.disconnect_every_s or math.inf)
        next_beat = opened + self.config.heartbeat_every_s
        try:
            while True:
                if self.shutdown_requested:
                    await self._shutdown()
                    return
                now = loop.time()
                if now >= drop_at:
                    self._drop()
                    return
                if now >= next_beat:
                    next_beat = now + self.config.heartbeat_every_s
                    frame = self.heartbeat()
                    if frame is not None:
                        await self._send(frame)
                    continue
                try:
                    async with asyncio.timeout(min(drop_at, next_beat) - now):
                        item = await self.inbox.get()
                except TimeoutError:
                    continue
                if isinstance(item, list):
                    await self._send_trades(item)
                elif not isinstance(item, _Wake):
                    await self._send(item())
        except ConnectionClosed:
            return

    async def _send(self, frame: bytes) -> None:
        await self.ws.send(frame, text=True)
        self.last_send = asyncio.get_running_loop().time()

    def _drop(self) -> None:
        """The disconnect scenario: cut the TCP connection, as a network failure would."""
        self.sim.disconnects += 1
        log.info("%s connection %d: scheduled drop", self.fmt, self.index)
        self.ws.transport.abort()

    async def _shutdown(self) -> None:
        await self._send(self.shutdown_notice())
        await self.ws.close(1001, "simulator shutting down")

    async def _send_trades(self, batch: list[SimTrade]) -> None:
        wanted = self.symbols
        trades = [trade for trade in batch if trade.symbol in wanted]
        items = self._apply_scenarios(trades)
        granted = self.sim.reserve_trades(len(items))
        if granted < len(items):
            items = items[:granted]
        sent = 0
        skip_every = self.config.skip_frame_every
        try:
            for frame, chunk in self._frames(items):
                self._trade_frames += 1
                if skip_every is not None and self._trade_frames % skip_every == 0:
                    self.sim.frames_skipped += 1
                    continue  # lost on the way: not sent, not in the ground truth
                await self._send(frame)
                sent += len(chunk)
                self.sim.record_trades(self.fmt, chunk)
                self.frames_sent += 1
                every = self.config.malformed_every
                if every is not None and self.frames_sent % every == 0:
                    await self._send_malformed(chunk[-1][0])
        finally:
            self.sim.release_trades(granted - sent)

    def _frames(
        self, items: list[tuple[SimTrade, bool]]
    ) -> Iterator[tuple[bytes, list[tuple[SimTrade, bool]]]]:
        """Group one symbol's trades per frame (order kept within a symbol), capped in size."""
        if not items:
            return
        if self.fmt in wire.BINANCE_FORMATS:
            for item in items:
                yield self.encode_frame([item]), [item]
            return
        by_symbol: dict[str, list[tuple[SimTrade, bool]]] = {}
        for item in items:
            by_symbol.setdefault(item[0].symbol, []).append(item)
        cap = self.config.frame_cap
        for group in by_symbol.values():
            for start in range(0, len(group), cap):
                chunk = group[start : start + cap]
                yield self.encode_frame(chunk), chunk

    def _apply_scenarios(self, trades: list[SimTrade]) -> list[tuple[SimTrade, bool]]:
        ooo_every = self.config.out_of_order_every
        dup_every = self.config.duplicate_every
        if ooo_every is None and dup_every is None:
            return [(trade, False) for trade in trades]
        out: list[tuple[SimTrade, bool]] = []
        for trade in trades:
            if ooo_every is not None:
                held = self._held.pop(trade.symbol, None)
                if held is not None:
                    # The held trade goes after its successor: one swapped pair.
                    self._emit(out, trade, dup_every)
                    self._emit(out, held, dup_every)
                    continue
                self._ooo_count += 1
                if self._ooo_count % ooo_every == 0:
                    self._held[trade.symbol] = trade
                    continue
            self._emit(out, trade, dup_every)
        return out

    def _emit(
        self, out: list[tuple[SimTrade, bool]], trade: SimTrade, dup_every: int | None
    ) -> None:
        out.append((trade, False))
        if dup_every is None:
            return
        self._recent.append(trade)
        self._dup_count += 1
        if self._dup_count % dup_every == 0:
            # Up to a few trades back, so the copy is not always adjacent to its original.
            out.append((self._recent[0], True))

    async def _send_malformed(self, template: SimTrade) -> None:
        kind = wire.MALFORMED_KINDS[self._malformed_count % len(wire.MALFORMED_KINDS)]
        self._malformed_count += 1
        # An id no real trade has, so a parser that wrongly accepts it cannot clash with one.
        bogus = template._replace(trade_id=900_000_000_000 + self._malformed_count)
        bad = wire.malformed_frame(self.fmt, kind, bogus, sequence_num=self.sequence_num())
        await self._send(bad.frame)
        self.sim.record_malformed(self.fmt, bad)


class _BinanceSession(_Session):
    fmt: ClassVar[ExchangeName] = "binance"

    def __init__(
        self,
        sim: SimulatorServer,
        ws: ServerConnection,
        index: int,
        *,
        combined: bool,
        streams: list[str],
    ) -> None:
        super().__init__(sim, ws, index)
        self.combined = combined
        self.streams: list[str] = []
        self._initial = streams

    async def on_open(self) -> None:
        self._add_streams(self._initial)

    def _add_streams(self, streams: list[str]) -> None:
        symbols: set[str] = set()
        for stream in streams:
            symbol = self._symbol(stream)
            if symbol is None or symbol not in self.sim.feeds[self.fmt].market.symbols:
                log.warning("binance connection %d: no simulated stream %r", self.index, stream)
                continue
            if stream not in self.streams:
                self.streams.append(stream)
            symbols.add(symbol)
        self.subscribe(symbols)

    def _remove_streams(self, streams: list[str]) -> None:
        self.streams = [stream for stream in self.streams if stream not in streams]
        gone = {self._symbol(stream) for stream in streams}
        self.unsubscribe({symbol for symbol in gone if symbol is not None})

    def _symbol(self, stream: str) -> str | None:
        return wire.symbol_from_binance_stream(stream)

    async def on_message(self, message: str | bytes) -> None:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            await self.queue(lambda: wire.encode_binance_error(None, 3, "Invalid JSON"))
            return
        request_id = request.get("id") if isinstance(request, dict) else None
        method = request.get("method") if isinstance(request, dict) else None
        params = request.get("params", []) if isinstance(request, dict) else None
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and (
            isinstance(params, list) and all(isinstance(p, str) for p in params)
        ):
            if method == "SUBSCRIBE":
                self._add_streams(params)
            else:
                self._remove_streams(params)
            await self.queue(lambda: wire.encode_binance_response(request_id))
        elif method == "LIST_SUBSCRIPTIONS":
            listed = list(self.streams)
            await self.queue(lambda: wire.encode_binance_response(request_id, listed))
        else:
            await self.queue(lambda: wire.encode_binance_error(request_id, 2, "Invalid request"))

    def encode_frame(self, items: list[tuple[SimTrade, bool]]) -> bytes:
        return wire.encode_binance_trade(items[0][0], combined=self.combined)


class _BinanceFuturesSession(_BinanceSession):
    """The USD-M futures host: the same stream names (``btcusdt@trade``) for the contracts."""

    fmt: ClassVar[ExchangeName] = "binance-futures"

    def _symbol(self, stream: str) -> str | None:
        symbol = wire.symbol_from_binance_stream(stream)
        return None if symbol is None else perpetual(symbol)


class _KrakenSession(_Session):
    fmt = "kraken"

    def __init__(self, sim: SimulatorServer, ws: ServerConnection, index: int) -> None:
        super().__init__(sim, ws, index)
        # Kraken's connection ids are large opaque integers.
        self.connection_id = random.Random(sim.config.seed * 7919 + index).getrandbits(63)

    async def on_open(self) -> None:
        await self.queue(lambda: wire.encode_kraken_status(self.connection_id))

    async def on_message(self, message: str | bytes) -> None:
        received = now_us()
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            await self.queue(
                lambda: wire.encode_kraken_error(
                    None,
                    "Malformed request",
                    req_id=None,
                    time_in_us=received,
                    time_out_us=now_us(),
                )
            )
            return
        if not isinstance(request, dict):
            request = {}
        method = request.get("method")
        req_id = request.get("req_id") if isinstance(request.get("req_id"), int) else None
        raw_params = request.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        if method == "ping":
            await self.queue(
                lambda: wire.encode_kraken_pong(req_id, time_in_us=received, time_out_us=now_us())
            )
        elif method in ("subscribe", "unsubscribe") and params.get("channel") == "trade":
            await self._trade_subscription(method, params, req_id, received)
        elif method in ("subscribe", "unsubscribe") and params.get("channel") == "heartbeat":
            result = {"channel": "heartbeat"}
            await self.queue(
                lambda: wire.encode_kraken_ack(
                    method, result, req_id=req_id, time_in_us=received, time_out_us=now_us()
                )
            )
        else:
            error = (
                "Channel not supported"
                if method in ("subscribe", "unsubscribe")
                else ("Method not supported")
            )
            await self.queue(
                lambda: wire.encode_kraken_error(
                    method if isinstance(method, str) else None,
                    error,
                    req_id=req_id,
                    time_in_us=received,
                    time_out_us=now_us(),
                )
            )

    async def _trade_subscription(
        self, method: str, params: dict[str, Any], req_id: int | None, received: int
    ) -> None:
        pairs = params.get("symbol")
        snapshot = params.get("snapshot") is True
        if not isinstance(pairs, list) or not pairs:
            await self.queue(
                lambda: wire.encode_kraken_error(
                    method,
                    "Missing symbol",
                    req_id=req_id,
                    time_in_us=received,
                    time_out_us=now_us(),
                )
            )
            return
        for pair in pairs:
            symbol = wire.symbol_from_kraken(pair) if isinstance(pair, str) else None
            if symbol is None or symbol not in self.sim.feeds[self.fmt].market.symbols:
                log.warning("kraken connection %d: no simulated pair %r", self.index, pair)
                error = partial(
                    wire.encode_kraken_error,
                    method,
                    f"Currency pair not supported {pair}",
                    req_id=req_id,
                    time_in_us=received,
                    time_out_us=now_us(),
                    symbol=str(pair),
                )
                await self.queue(error)
                continue
            result = {"channel": "trade", "snapshot": snapshot, "symbol": pair}
            ack = partial(
                wire.encode_kraken_ack,
                method,
                result,
                req_id=req_id,
                time_in_us=received,
                time_out_us=now_us(),
            )
            await self.queue(ack)
            if method == "subscribe":
                if snapshot:
                    # A venue's snapshot holds past trades; the simulator's past is empty.
                    await self.queue(lambda: wire.encode_kraken_trades([], snapshot=True))
                self.subscribe({symbol})
            else:
                self.unsubscribe({symbol})

    def encode_frame(self, items: list[tuple[SimTrade, bool]]) -> bytes:
        return wire.encode_kraken_trades([trade for trade, _ in items])

    def shutdown_notice(self) -> bytes:
        return wire.encode_kraken_status(self.connection_id, system="maintenance")

    def heartbeat(self) -> bytes | None:
        # Kraken beats once a second on subscribed connections when nothing else is sent.
        idle = asyncio.get_running_loop().time() - self.last_send
        if self.symbols and idle >= self.config.heartbeat_every_s * 0.9:
            return wire.KRAKEN_HEARTBEAT
        return None


class _CoinbaseSession(_Session):
    fmt = "coinbase"

    def __init__(self, sim: SimulatorServer, ws: ServerConnection, index: int) -> None:
        super().__init__(sim, ws, index)
        self._sequence = 0
        self.products: list[str] = []
        self.heartbeats = False
        self._beats = 0

    async def on_open(self) -> None:
        """Coinbase sends nothing until the client subscribes."""

    def sequence_num(self) -> int:
        """Every frame on a connection takes the next number, whatever its channel."""
        number = self._sequence
        self._sequence += 1
        return number

    def _subscriptions(self) -> dict[str, list[str]]:
        current: dict[str, list[str]] = {}
        if self.products:
            current["market_trades"] = list(self.products)
        if self.heartbeats:
            current["heartbeats"] = ["heartbeats"]
        return current

    async def on_message(self, message: str | bytes) -> None:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            await self.queue(lambda: wire.encode_coinbase_error("malformed request"))
            return
        if not isinstance(request, dict):
            request = {}
        kind, channel = request.get("type"), request.get("channel")
        if kind not in ("subscribe", "unsubscribe"):
            await self.queue(lambda: wire.encode_coinbase_error(f"unsupported type {kind!r}"))
            return
        if channel == "heartbeats":
            self.heartbeats = kind == "subscribe"
        elif channel == "market_trades":
            products = request.get("product_ids")
            if not isinstance(products, list) or not products:
                await self.queue(lambda: wire.encode_coinbase_error("product_ids required"))
                return
            if not await self._change_products(kind, products):
                return
        else:
            await self.queue(
                lambda: wire.encode_coinbase_error(f"Failure to subscribe: channel {channel!r}")
            )
            return
        subscriptions = self._subscriptions()
        await self.queue(
            lambda: wire.encode_coinbase_subscriptions(
                subscriptions, sequence_num=self.sequence_num(), now_us=now_us()
            )
        )

    async def _change_products(self, kind: str, products: list[Any]) -> bool:
        """Apply a market_trades (un)subscription; False, after an error frame, if any product
        is not simulated (Coinbase rejects the whole request)."""
        symbols: dict[str, str] = {}
        for product in products:
            symbol = wire.symbol_from_coinbase(product) if isinstance(product, str) else None
            if symbol is None or symbol not in self.sim.feeds[self.fmt].market.symbols:
                log.warning("coinbase connection %d: no simulated product %r", self.index, product)
                error = f"Failure to subscribe: unknown product {product}"
                await self.queue(partial(wire.encode_coinbase_error, error))
                return False
            symbols[product] = symbol
        if kind == "subscribe":
            self.products += [p for p in symbols if p not in self.products]
            self.subscribe(set(symbols.values()))
        else:
            self.products = [p for p in self.products if p not in symbols]
            self.unsubscribe(set(symbols.values()))
        return True

    def encode_frame(self, items: list[tuple[SimTrade, bool]]) -> bytes:
        return wire.encode_coinbase_trades(
            [trade for trade, _ in items], sequence_num=self.sequence_num(), now_us=now_us()
        )

    def heartbeat(self) -> bytes | None:
        if not self.heartbeats:
            return None
        self._beats += 1
        return wire.encode_coinbase_heartbeat(
            self._beats, sequence_num=self.sequence_num(), now_us=now_us()
        )


def market_symbols(fmt: ExchangeName, symbols: list[str]) -> list[str]:
    """The markets one format's feed simulates: the perpetual contracts of the symbols on the
    futures host, their spot markets elsewhere."""
    named = perpetual if fmt == "binance-futures" else spot
    return list(dict.fromkeys(named(symbol) for symbol in symbols))


class _Feed:
    """One exchange's market and the connections that want its trades."""

    def __init__(self, sim: SimulatorServer, fmt: ExchangeName, market: Market) -> None:
        self.sim = sim
        self.fmt = fmt
        self.market = market
        self.sessions: set[_Session] = set()
        self._listening = asyncio.Event()
        # Per symbol, the market's trades in id order (ids are consecutive per symbol).
        self.history: dict[str, list[SimTrade]] = {}

    def remember(self, trades: list[SimTrade]) -> None:
        keep = self.sim.config.history_per_symbol
        for trade in trades:
            self.history.setdefault(trade.symbol, []).append(trade)
        for symbol, kept in self.history.items():
            if len(kept) > 2 * keep:
                self.history[symbol] = kept[-keep:]

    def trades_from(self, symbol: str, from_id: int, limit: int) -> list[SimTrade]:
        """Up to ``limit`` trades of ``symbol`` from id ``from_id`` on (from the oldest kept
        when that one is older)."""
        kept = self.history.get(symbol, [])
        if not kept:
            return []
        start = max(0, from_id - kept[0].trade_id)
        return kept[start : start + limit]

    def add(self, session: _Session) -> None:
        self.sessions.add(session)
        self._listening.set()

    def discard(self, session: _Session) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._listening.clear()

    async def run(self) -> None:
        if self.sim.config.flood:
            await self._flood()
        else:
            await self._paced()

    async def _paced(self) -> None:
        tick = self.sim.config.tick_s
        while True:
            await asyncio.sleep(tick)
            # The market moves on whether or not anyone listens: absent clients miss trades.
            trades = self.market.trades_until(now_us())
            self.remember(trades)
            if trades and self.sessions and not self.sim.budget_exhausted:
                for session in list(self.sessions):
                    session.offer(trades)

    async def _flood(self) -> None:
        while True:
            if not self.sessions:
                await self._listening.wait()
                continue
            if self.sim.budget_exhausted:
                await asyncio.sleep(0.05)
                continue
            trades = self.market.next_trades(FLOOD_BATCH, now_us())
            self.remember(trades)
            for session in list(self.sessions):
                # Waiting on a full inbox is the backpressure: the slowest socket sets the pace.
                await session.inbox.put(trades)


class SimulatorServer:
    """``async with SimulatorServer(config) as sim:`` serves on ``sim.port`` until exit.

    ``port=0`` picks a free port. Counters: ``trades_sent`` (trade items written to sockets,
    duplicates included), ``duplicates_sent``, ``malformed_sent``, ``connections`` (accepted,
    in total), ``open_connections``, ``disconnects`` (drops by the disconnect scenario).
    """

    def __init__(self, config: SimulatorConfig | None = None, *, port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self._requested_port = port
        self.port = 0
        self.trades_sent = 0
        self.duplicates_sent = 0
        self.malformed_sent = 0
        self.connections = 0
        self.disconnects = 0
        self.frames_skipped = 0
        self.rest_requests = 0
        self.coingecko_served: list[bytes] = []
        self.rest_failures = 0
        self.feeds: dict[ExchangeName, _Feed] = {}
        self._sessions: set[_Session] = set()
        self._reserved = 0
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._truth: _GroundTruth | None = None
        self._progress = asyncio.Event()

    @property
    def open_connections(self) -> int:
        return len(self._sessions)

    def url(self, exchange: str) -> str:
        """The base URL an adapter takes, e.g. ``ws://127.0.0.1:PORT/binance``."""
        if exchange not in EXCHANGES:
            raise ValueError(f"unknown exchange {exchange!r}; the simulator speaks {EXCHANGES}")
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"ws://{host}:{self.port}/{exchange}"

    async def __aenter__(self) -> SimulatorServer:
        config = self.config
        if config.ground_truth_path is not None:
            self._truth = _GroundTruth(config.ground_truth_path)
        for fmt in EXCHANGES:
            market = Market(market_symbols(fmt, config.symbols), market_seed(config.seed, fmt),
                            config.rate_per_s)  # fmt: skip
            self.feeds[fmt] = _Feed(self, fmt, market)
        self._server = await serve(
            self._handle,
            config.host,
            self._requested_port,
            compression=None,  # exchanges' trade feeds are uncompressed by default
            process_request=self._rest,
            ping_interval=config.ping_interval_s,
            ping_timeout=config.ping_interval_s,
            write_limit=2**20 if config.flood else 2**16,
            max_size=2**20,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(feed.run()) for feed in self.feeds.values()]
        self._tasks.append(asyncio.create_task(self._flush_truth()))
        if config.shutdown_after_s is not None:
            self._tasks.append(asyncio.create_task(self._shutdown_later(config.shutdown_after_s)))
        log.info(
            "market simulator serving SYNTHETIC trades (not real market data) for %s on %s",
            ", ".join(config.symbols),
            ", ".join(self.url(fmt) for fmt in EXCHANGES),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._truth is not None:
            self._truth.close()
        log.info(
            "market simulator stopped: %d synthetic trades, %d malformed frames sent",
            self.trades_sent,
            self.malformed_sent,
        )

    async def wait_sent(self, n: int, timeout: float) -> None:
        """Wait until ``trades_sent >= n``; raises TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while self.trades_sent < n:
                self._progress.clear()
                await self._progress.wait()

    # --- the trade budget (max_trades) ----------------------------------------------------

    @property
    def budget_exhausted(self) -> bool:
        limit = self.config.max_trades
        return limit is not None and self.trades_sent + self._reserved >= limit

    def reserve_trades(self, wanted: int) -> int:
        limit = self.config.max_trades
        granted = (
            wanted
            if limit is None
            else max(0, min(wanted, limit - self.trades_sent - self._reserved))
        )
        self._reserved += granted
        return granted

    def release_trades(self, unused: int) -> None:
        self._reserved -= unused

    def record_trades(self, fmt: str, items: list[tuple[SimTrade, bool]]) -> None:
        self._reserved -= len(items)
        self.trades_sent += len(items)
        if self.config.duplicate_every is not None:
            self.duplicates_sent += sum(1 for _, duplicate in items if duplicate)
        if self._truth is not None:
            self._truth.trades(fmt, items)
        self._progress.set()

    def record_malformed(self, fmt: str, bad: wire.MalformedFrame) -> None:
        self.malformed_sent += 1
        if self._truth is not None:
            self._truth.malformed(fmt, bad)

    # --- REST -----------------------------------------------------------------------------

    def _rest(self, connection: ServerConnection, request: Request) -> Response | None:
        """A plain HTTP request (no WebSocket upgrade) is a REST call; None lets a WebSocket
        handshake go on."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return None
        self.rest_requests += 1
        split = urlsplit(request.path)
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        parts = [part for part in split.path.split("/") if part]
        every = self.config.rest_fail_every
        if every is not None and self.rest_requests % every == 0:
            self.rest_failures += 1
            if self.rest_failures % 2 == 0:
                return _json_response(503, b'{"message":"service unavailable (simulated)"}')
            if parts[:1] == ["kraken"]:  # Kraken says it in a 200's body
                return _json_response(200, wire.encode_kraken_rest_error(
                    "EGeneral:Too many requests"))  # fmt: skip
            return _json_response(429, b'{"message":"too many requests (simulated)"}',
                                  retry_after="1")  # fmt: skip
        if split.path == "/binance/api/v3/historicalTrades":
            return self._binance_history("binance", query)
        if split.path == "/binance/api/v3/klines":
            return self._binance_klines("binance", query)
        if split.path == "/binance-futures/fapi/v1/historicalTrades":
            if not request.headers.get("X-MBX-APIKEY"):  # MARKET_DATA: a key, no signature
                return _json_response(401, wire.encode_binance_rest_error(
                    -2014, "API-key format invalid."))  # fmt: skip
            return self._binance_history("binance-futures", query)
        if split.path == "/binance-futures/fapi/v1/trades":
            return self._binance_history("binance-futures", {**query, "fromId": ""})
        if split.path == "/binance-futures/fapi/v1/klines":
            return self._binance_klines("binance-futures", query)
        if split.path == "/kraken/0/public/Trades":
            return self._kraken_history(query)
        if split.path == "/kraken/0/public/OHLC":
            return self._kraken_ohlc(query)
        if split.path == "/coingecko/api/v3/coins/markets":
            return self._coingecko_markets(query)
        if len(parts) == 4 and parts[:2] == ["coinbase", "products"] and parts[3] == "trades":
            return self._coinbase_history(parts[2], query)
        if len(parts) == 4 and parts[:2] == ["coinbase", "products"] and parts[3] == "candles":
            return self._coinbase_candles(parts[2], query)
        return _json_response(404, wire.encode_binance_rest_error(
            -1, f"no such endpoint {split.path[:80]!r}; the simulator serves "
            "/binance/api/v3/historicalTrades and /klines, /binance-futures/fapi/v1/"
            "historicalTrades, /trades and /klines, /kraken/0/public/Trades and /OHLC, "
            "/coinbase/products/<id>/trades and /candles, "
            "/coingecko/api/v3/coins/markets"))  # fmt: skip

    def _coingecko_markets(self, query: dict[str, str]) -> Response:
        """CoinGecko's ``/coins/markets`` (``coins.py``); each body served is kept in
        ``coingecko_served`` (the tests' ground truth)."""
        if query.get("vs_currency", "").lower() != "usd":
            return _json_response(400, b'{"error":"invalid vs_currency (the simulator: usd)"}')
        try:
            per_page, page = int(query.get("per_page", "100")), int(query.get("page", "1"))
        except ValueError:
            return _json_response(400, b'{"error":"per_page and page are integers"}')
        if not (1 <= per_page <= 250 and page >= 1):
            return _json_response(400, b'{"error":"per_page is 1..250, page >= 1"}')
        ids = [coin for coin in query.get("ids", "").split(",") if coin] or None
        body = coins.encode(coins.coins_markets(time.time(), self.config.seed, ids, per_page, page))
        self.coingecko_served.append(body)
        return _json_response(200, body)

    def _binance_symbol(self, pair: str, fmt: ExchangeName = "binance") -> str | None:
        """``BTCUSDT`` → ``BTC-USDT`` (``BTC-USDT-PERP`` on the futures host) when the simulator
        trades it."""
        symbol = split_concatenated(pair) if pair.isascii() and pair.isalnum() else None
        if symbol is not None and fmt == "binance-futures":
            symbol = perpetual(symbol)
        return symbol if symbol in self.feeds[fmt].market.symbols else None

    def _kraken_symbol(self, pair: str) -> str | None:
        """``XBTUSD`` (REST names spell bitcoin XBT) → ``BTC-USD`` when the simulator trades it."""
        return self._binance_symbol("BTC" + pair[3:] if pair.startswith("XBT") else pair, "kraken")

    def _binance_history(self, fmt: ExchangeName, query: dict[str, str]) -> Response:
        symbol = self._binance_symbol(query.get("symbol", ""), fmt)
        if symbol is None:
            return _json_response(400, wire.encode_binance_rest_error(-1121, "Invalid symbol."))
        try:
            limit = min(int(query.get("limit", "500")), 1000)
            from_id = int(query["fromId"]) if query.get("fromId") else None
        except ValueError:
            return _json_response(400, wire.encode_binance_rest_error(
                -1100, "Illegal characters found in a parameter."))  # fmt: skip
        feed = self.feeds[fmt]
        if from_id is None:  # the most recent trades
            kept = feed.history.get(symbol, [])
            return _json_response(200, wire.encode_binance_history(kept[-limit:]))
        return _json_response(200, wire.encode_binance_history(
            feed.trades_from(symbol, from_id, limit)))  # fmt: skip

    def _kraken_history(self, query: dict[str, str]) -> Response:
        pair = query.get("pair", "")
        symbol = self._kraken_symbol(pair)
        if symbol is None:
            return _json_response(200, wire.encode_kraken_rest_error("EQuery:Unknown asset pair"))
        try:
            since = int(query.get("since", "0"))
            count = min(max(int(query.get("count", "1000")), 1), 1000)
        except ValueError:
            return _json_response(200, wire.encode_kraken_rest_error("EGeneral:Invalid arguments"))
        kept = self.feeds["kraken"].history.get(symbol, [])
        start = bisect_right(kept, since, key=lambda t: t.event_time_us * 1000)
        trades = kept[start : start + count]
        last = trades[-1].event_time_us * 1000 if trades else since
        return _json_response(200, wire.encode_kraken_history(pair, trades, last))

    def _coinbase_history(self, product: str, query: dict[str, str]) -> Response:
        if product not in self.feeds["coinbase"].market.symbols:
            return _json_response(404, b'{"message":"NotFound"}')
        try:
            after = int(query["after"]) if "after" in query else None
            limit = min(max(int(query.get("limit", "1000")), 1), 1000)
        except ValueError:
            return _json_response(400, b'{"message":"after and limit are integers"}')
        kept = self.feeds["coinbase"].history.get(product, [])
        end = len(kept) if after is None or not kept else max(0, after - kept[0].trade_id)
        trades = list(reversed(kept[max(0, end - limit) : min(end, len(kept))]))
        response = _json_response(200, wire.encode_coinbase_history(trades))
        if trades:
            response.headers["CB-AFTER"] = str(trades[-1].trade_id)
            response.headers["CB-BEFORE"] = str(trades[0].trade_id)
        return response

    def _binance_klines(self, fmt: ExchangeName, query: dict[str, str]) -> Response:
        symbol = self._binance_symbol(query.get("symbol", ""), fmt)
        if symbol is None:
            return _json_response(400, wire.encode_binance_rest_error(-1121, "Invalid symbol."))
        if query.get("interval") != "1m":
            return _json_response(400, wire.encode_binance_rest_error(
                -1120, "Invalid interval: the simulator publishes 1m."))  # fmt: skip
        try:
            start = int(query.get("startTime", "0")) * 1000
            end = (int(query["endTime"]) + 1) * 1000 if "endTime" in query else 2**62
            limit = min(max(int(query.get("limit", "500")), 1), 1000)
        except ValueError:
            return _json_response(400, wire.encode_binance_rest_error(
                -1100, "Illegal characters found in a parameter."))  # fmt: skip
        bars = wire.minute_bars(self.feeds[fmt].history.get(symbol, []), start, end)
        return _json_response(200, wire.encode_binance_klines(bars[:limit]))

    def _kraken_ohlc(self, query: dict[str, str]) -> Response:
        pair = query.get("pair", "")
        symbol = self._kraken_symbol(pair)
        if symbol is None:
            return _json_response(200, wire.encode_kraken_rest_error("EQuery:Unknown asset pair"))
        try:
            since = int(query.get("since", "0"))
        except ValueError:
            return _json_response(200, wire.encode_kraken_rest_error("EGeneral:Invalid arguments"))
        # Minutes after `since`, the last 720 at most (as Kraken).
        bars = wire.minute_bars(self.feeds["kraken"].history.get(symbol, []),
                                (since + 1) * 1_000_000, 2**62)[-720:]  # fmt: skip
        return _json_response(200, wire.encode_kraken_ohlc(pair, bars))

    def _coinbase_candles(self, product: str, query: dict[str, str]) -> Response:
        if product not in self.feeds["coinbase"].market.symbols:
            return _json_response(404, b'{"message":"NotFound"}')
        try:
            start = rfc3339_to_us(query["start"]) if "start" in query else 0
            end = rfc3339_to_us(query["end"]) + 60_000_000 if "end" in query else 2**62
        except ValueError:
            return _json_response(400, b'{"message":"start and end are RFC 3339 times"}')
        if query.get("granularity") != "60":
            return _json_response(400, b'{"message":"the simulator publishes granularity 60"}')
        bars = wire.minute_bars(self.feeds["coinbase"].history.get(product, []), start, end)
        return _json_response(200, wire.encode_coinbase_candles(bars[-300:]))

    # --- connections ----------------------------------------------------------------------

    def _open_session(self, ws: ServerConnection) -> _Session | None:
        split = urlsplit(ws.request.path if ws.request is not None else "")
        parts = [part for part in split.path.split("/") if part]
        index = self.connections
        if parts == ["kraken"]:
            return _KrakenSession(self, ws, index)
        if parts == ["coinbase"]:
            return _CoinbaseSession(self, ws, index)
        if parts[:1] in (["binance"], ["binance-futures"]) and len(parts) >= 2:
            session = _BinanceSession if parts[0] == "binance" else _BinanceFuturesSession
            if parts[1:] == ["stream"]:
                query = parse_qs(split.query).get("streams", [])
                streams = [s for value in query for s in value.split("/") if s]
                return session(self, ws, index, combined=True, streams=streams)
            if parts[1] == "ws" and len(parts) <= 3:
                streams = [parts[2]] if len(parts) == 3 else []
                return session(self, ws, index, combined=False, streams=streams)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = self._open_session(ws)
        if session is None:
            path = ws.request.path if ws.request is not None else "?"
            log.warning("simulator: unknown path %r", path)
            # Close reasons are capped at 123 bytes.
            reason = f"unknown path {path[:40]!r}; use /binance/stream, /kraken or /coinbase"
            await ws.close(1008, reason)
            return
        self.connections += 1
        self._sessions.add(session)
        log.info("%s connection %d opened (synthetic feed)", session.fmt, session.index)
        writer = asyncio.create_task(session.write_loop())
        try:
            await session.on_open()
            async for message in ws:
                await session.on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self.feeds[session.fmt].discard(session)
            self._sessions.discard(session)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            session.discard_inbox()
            log.info("%s connection %d closed", session.fmt, session.index)

    async def _shutdown_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        log.info("simulator: sending the shutdown notice to %d connections", len(self._sessions))
        for session in list(self._sessions):
            session.request_shutdown()

    async def _flush_truth(self) -> None:
        while True:
            await asyncio.sleep(TRUTH_FLUSH_EVERY_S)
            if self._truth is not None:
                self._truth.flush()


def _json_response(status: int, body: bytes, *, retry_after: str | None = None) -> Response:
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Response(status, HTTPStatus(status).phrase, headers, body)


async def run_simulator(
    config: SimulatorConfig, port: int, stop: asyncio.Event, *, host: str | None = None
) -> None:
    """The CLI entry: serve until ``stop`` is set, logging progress every 10 s.

    ``host`` overrides ``config.host`` (e.g. ``0.0.0.0`` inside a pod).
    """
    if host is not None:
        config = config.model_copy(update={"host": host})
    loop = asyncio.get_running_loop()
    async with SimulatorServer(config, port=port) as sim:
        for fmt in EXCHANGES:
            log.info("simulator %s URL (SYNTHETIC data): %s", fmt, sim.url(fmt))
        last_time, last_sent = loop.time(), 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_EVERY_S):
                    await stop.wait()
            now = loop.time()
            rate = (sim.trades_sent - last_sent) / max(now - last_time, 1e-9)
            log.info(
                "simulator (synthetic): %d trades sent (%.0f/s), %d malformed, "
                "%d connections open, %d dropped",
                sim.trades_sent,
                rate,
                sim.malformed_sent,
                sim.open_connections,
                sim.disconnects,
            )
            last_time, last_sent = now, sim.trades_sent
