"""What every exchange adapter provides: where to connect, what to send, how to parse frames.

Adapters are pure: ``parse`` turns one WebSocket frame into normalized trades and dead letters,
with no I/O, so tests replay recorded frames through them; ``history_request`` and
``parse_history`` do the same for the exchange's REST trade history, which closes gaps, and
``kline_request`` and ``parse_klines`` for its published 1-minute klines, which Gold is checked
against. The feed loop, the recovery and the reconciliation do the I/O. Dead
letters are built by :func:`cryptolake.producer.dead_letters.dead_letter`, so they stay small
whatever the frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import orjson

from cryptolake.common.trade import DeadLetter, RejectReason, Trade, TradeRejected
from cryptolake.producer.dead_letters import dead_letter
from cryptolake.producer.gaps import Gap
from cryptolake.producer.klines import Kline, KlineError


class FrameKind(StrEnum):
    TRADES = "trades"  # carried trades (possibly none valid)
    HEARTBEAT = "heartbeat"
    CONTROL = "control"  # subscription acks, status, snapshots we ignore
    SHUTDOWN = "shutdown"  # the server announced it is going away: reconnect now
    REJECTED = "rejected"  # the whole frame went to the DLQ


@dataclass(slots=True)
class ParsedFrame:
    kind: FrameKind
    trades: list[Trade] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # The exchange's per-connection message sequence, where the frame carries one (Coinbase).
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """One REST call for a page of a market's trade history (a GET with these params and
    headers: an API key where the exchange asks for one)."""

    url: str
    params: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class HistoryPage:
    """One history answer: its trades (and dead letters), and the cursor of the next page
    (None: there is none)."""

    parsed: ParsedFrame
    next_cursor: str | None


class ExchangeAdapter(ABC):
    """One exchange's wire protocol. ``label`` is the ``exchange`` field written to the data:
    the adapter's name for live data, ``simulator`` when it talks to the market simulator.
    ``rest_url`` is the base of its REST API (trade history), the exchange's own by default;
    ``api_key`` a key for the REST calls that need one (sent only to ``rest_url``)."""

    name: ClassVar[str]
    # The exchange its live data is labelled with, where it is not ``name`` (a protocol of an
    # exchange that has several: binance-futures is Binance's).
    exchange: ClassVar[str | None] = None
    default_url: ClassVar[str]
    default_rest_url: ClassVar[str | None] = None
    # Seconds without any frame after which the connection is presumed dead.
    idle_timeout_s: ClassVar[float] = 30.0
    # Trades per history request, and seconds between two of them: the exchange's public
    # limits, with headroom for anything else on the same address.
    history_limit: ClassVar[int] = 1000
    history_interval_s: ClassVar[float] = 0.5
    # True: a page holds the trades after its cursor, oldest first (Binance, Kraken); False:
    # the trades before it, newest first (Coinbase).
    history_ascending: ClassVar[bool] = True
    # Klines per request (the exchange's page size).
    kline_limit: ClassVar[int] = 300

    def __init__(
        self,
        symbols: Sequence[str],
        *,
        label: str | None = None,
        url: str | None = None,
        rest_url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        if not symbols:
            raise ValueError(f"{self.name}: give at least one symbol")
        self.symbols = list(symbols)  # canonical BASE-QUOTE
        self.label = label or self.exchange or self.name
        self.base_url = url or self.default_url
        self.rest_url = rest_url or self.default_rest_url
        self.api_key = api_key

    @abstractmethod
    def connect_url(self) -> str:
        """The URL to open (Binance puts its stream names in it)."""

    @abstractmethod
    def subscribe_messages(self) -> list[str]:
        """JSON texts to send right after connecting (empty when the URL subscribes)."""

    @abstractmethod
    def parse(self, frame: str | bytes, recv_time_us: int) -> ParsedFrame:
        """Normalize one frame. Never raises: what cannot be normalized becomes dead letters."""

    def history_request(self, symbol: str, gap: Gap, cursor: str | None) -> HistoryRequest | None:
        """The REST call for the page at ``cursor`` of the history that covers ``gap`` (None:
        its first page); None where the exchange has no such history (gaps stay open)."""
        return None

    def history_busy(self, body: bytes) -> bool:
        """True when a 200 answer says "later" in its body (Kraken reports its rate limit
        so); the recovery retries it like a 429."""
        return False

    def parse_history(self, symbol: str, body: bytes, recv_time_us: int) -> HistoryPage:
        """Normalize one history answer, like ``parse`` a frame (never raises)."""
        rejected = self.reject(
            RejectReason.UNKNOWN_MESSAGE, f"{self.name} has no trade history", body, recv_time_us
        )
        return HistoryPage(rejected, None)

    def kline_request(self, symbol: str, start_us: int, end_us: int) -> HistoryRequest | None:
        """The REST call for the 1-minute klines of the minutes in [start, end) (at most
        ``kline_limit`` of them); None where the exchange publishes none."""
        return None

    def parse_klines(self, symbol: str, body: bytes) -> list[Kline]:
        """The klines of one answer; raises :class:`KlineError` for an answer it cannot read."""
        raise KlineError(f"{self.name} publishes no klines")

    def load_object(self, frame: str | bytes, recv_time_us: int) -> dict[str, Any] | ParsedFrame:
        """The frame as a JSON object, or the rejection to return when it is not one."""
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return self.reject(RejectReason.MALFORMED_JSON, str(exc), frame, recv_time_us)
        if not isinstance(message, dict):
            return self.reject(
                RejectReason.UNKNOWN_MESSAGE,
                f"a {self.name} frame is a JSON object",
                frame,
                recv_time_us,
            )
        return message

    def history_list(
        self,
        body: bytes,
        recv_time_us: int,
        read: Callable[[object], Trade],
        elements: list[Any] | None = None,
        *,
        default: Callable[[Any], Any] | None = None,
    ) -> ParsedFrame:
        """A history answer's trades: ``elements`` (default: ``body`` as a JSON list), each
        read by ``read`` (raising :class:`TradeRejected`) into a trade or its own dead letter;
        an answer that is no list is rejected whole."""
        if elements is None:
            try:
                loaded = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return self.reject(RejectReason.MALFORMED_JSON, str(exc), body, recv_time_us)
            if not isinstance(loaded, list):
                return self.reject(
                    RejectReason.BAD_TYPE, "a trade history is a JSON list", body, recv_time_us
                )
            elements = loaded
        parsed = ParsedFrame(FrameKind.TRADES)
        for element in elements:
            try:
                parsed.trades.append(read(element))
            except TradeRejected as exc:
                parsed.dead_letters.append(
                    self.reject_element(exc, element, body, recv_time_us, default=default)
                )
        return parsed

    def reject_element(
        self,
        problem: TradeRejected,
        element: object,
        frame: str | bytes,
        recv_time_us: int,
        *,
        default: Callable[[Any], Any] | None = None,
    ) -> DeadLetter:
        """One bad element of a multi-trade frame, re-serialized as its own raw JSON."""
        raw: str | bytes
        try:
            raw = orjson.dumps(element, default=default)
        # Deeper than orjson writes, an integer over 64 bits, or a lone surrogate: keep the frame.
        except orjson.JSONEncodeError:
            raw = frame
        return dead_letter(self.label, problem.reason, problem.detail, raw, recv_time_us)

    def reject(
        self, reason: RejectReason, detail: str, raw: str | bytes, recv_time_us: int
    ) -> ParsedFrame:
        """A frame that as a whole goes to the DLQ."""
        return ParsedFrame(
            kind=FrameKind.REJECTED,
            dead_letters=[dead_letter(self.label, reason, detail, raw, recv_time_us)],
        )
