"""Which trades a feed missed, from the exchanges' sequential trade ids (pure, no I/O).

Binance, Kraken and Coinbase number each market's trades 1, 2, 3, …; a trade whose id jumps
past the last one seen opens a *gap* of the ids in between. An id that arrives later (a swapped
pair, a late frame) fills its place, so a gap only counts once it has stayed open for a grace
period: then it is *due*, and the recovery fetches it from the exchange's REST history.
A reconnect needs no special case: the first trade of the new session opens the gap that
spans the disconnection.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Gap:
    """Trade ids ``first_id``..``last_id`` (inclusive) of ``symbol`` never received."""

    symbol: str
    first_id: int
    last_id: int
    opened_at: float  # monotonic seconds
    # Event time of the trade seen before the gap: where a history paged by time starts.
    after_time_us: int = 0

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


@dataclass
class GapTracker:
    """Open gaps per symbol; ``observe`` every trade, collect ``due`` gaps now and then."""

    grace_s: float = 2.0
    last_id: dict[str, int] = field(default_factory=dict)
    last_time_us: dict[str, int] = field(default_factory=dict)
    open: dict[str, list[Gap]] = field(default_factory=dict)

    def observe(self, symbol: str, trade_id: str, now: float, event_time_us: int = 0) -> Gap | None:
        """Record one trade; returns the gap it opened, if any. Non-numeric ids (an exchange
        without sequential ids) are never gaps."""
        if not trade_id.isdigit():
            return None
        number = int(trade_id)
        previous = self.last_id.get(symbol)
        previous_time = self.last_time_us.get(symbol, 0)
        if previous is None or number > previous:
            self.last_id[symbol], self.last_time_us[symbol] = number, event_time_us
        if previous is None:
            return None  # the first trade seen: nothing before it is ours
        if number <= previous:
            self._fill(symbol, number)  # late, swapped or repeated
            return None
        if number == previous + 1:
            return None
        gap = Gap(symbol, previous + 1, number - 1, now, previous_time)
        self.open.setdefault(symbol, []).append(gap)
        return gap

    def _fill(self, symbol: str, number: int) -> None:
        gaps = self.open.get(symbol)
        if not gaps:
            return
        for index, gap in enumerate(gaps):
            if gap.first_id <= number <= gap.last_id:
                parts = [
                    Gap(symbol, first, last, gap.opened_at, gap.after_time_us)
                    for first, last in ((gap.first_id, number - 1), (number + 1, gap.last_id))
                    if first <= last
                ]
                gaps[index : index + 1] = parts
                return

    def request(self, symbol: str, first_id: int, last_id: int, after_time_us: int,
                now: float) -> Gap:  # fmt: skip
        """Ask the history for ids ``first_id``..``last_id`` now (a kline check found a minute
        short of trades): due at the next collection, no grace period."""
        gap = Gap(symbol, first_id, last_id, now - self.grace_s, after_time_us)
        self.open.setdefault(symbol, []).append(gap)
        return gap

    def due(self, now: float) -> list[Gap]:
        """Gaps open for at least the grace period, removed from the open ones."""
        ready: list[Gap] = []
        for symbol, gaps in self.open.items():
            keep = [gap for gap in gaps if now - gap.opened_at < self.grace_s]
            ready += [gap for gap in gaps if now - gap.opened_at >= self.grace_s]
            self.open[symbol] = keep
        return ready

    @property
    def open_trades(self) -> int:
        return sum(gap.size for gaps in self.open.values() for gap in gaps)
