"""When a rule fires: pure functions over a market's 1-minute bars, exact in ``Decimal``.

A window is named by its end ``E`` (a minute boundary) and holds the bars of the minutes in
``[E - window, E)``. A market's candidate ends are those whose last minute has a bar (a window
whose newest minute traded nothing says nothing new). The open minute counts: its bar grows as
trades arrive, and the first evaluation where the window crosses the threshold fires it. Each
(rule, market, window end) fires at most once, and not within ``cooldown`` of another firing of
the same rule and market.

Crossing is decided without division: ``(high - low) * 100 >= threshold * low`` for volatility,
``|close - reference| * 100 >= threshold * reference`` for a price change. The value recorded
is the percent (or, for a cross, the close) rounded half-even to 12 decimals.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final

from cryptolake.common.alert_rules import AlertKind, AlertRule, AlertRules, Direction

MINUTE: Final = timedelta(minutes=1)
# gold/alerts keeps values and thresholds as decimal(38, 12): 12 decimals, 26 integer digits.
VALUE_QUANTUM: Final = Decimal("1e-12")
HUNDRED: Final = Decimal(100)


@dataclass(frozen=True)
class Bar:
    minute: datetime
    high: Decimal
    low: Decimal
    close: Decimal


Market = tuple[str, str]  # (exchange, symbol)


@dataclass(frozen=True)
class Firing:
    rule: str
    kind: AlertKind
    exchange: str
    symbol: str
    window_minutes: int
    window_end: datetime
    value: Decimal
    threshold: Decimal

    @property
    def alert_id(self) -> str:
        """The firing's identity: (rule, market, window end) fires once."""
        return f"{self.rule}/{self.exchange}/{self.symbol}/{self.window_end.isoformat()}"


def _percent(numerator: Decimal, denominator: Decimal) -> Decimal:
    with localcontext(prec=80):
        return (numerator * HUNDRED / denominator).quantize(VALUE_QUANTUM, ROUND_HALF_EVEN)


def _crosses(delta: Decimal, reference: Decimal, rule: AlertRule) -> bool:
    """``delta`` (a move from ``reference``) is at least ``threshold`` percent of it, in the
    rule's direction."""
    limit = rule.threshold * reference
    up = delta * HUNDRED >= limit
    down = -delta * HUNDRED >= limit
    return {Direction.UP: up, Direction.DOWN: down, Direction.BOTH: up or down}[rule.direction]


def window_value(
    rule: AlertRule, bars: Sequence[Bar], end: datetime, minutes: Sequence[datetime] | None = None
) -> Decimal | None:
    """The rule's value at window end ``end`` when it fires there, else None. ``bars``: one
    market's bars sorted by minute; the bar of ``end - 1 minute`` must be among them."""
    if minutes is None:  # evaluate() passes them, built once per market
        minutes = [bar.minute for bar in bars]
    last = bisect_left(minutes, end - MINUTE)
    if last == len(bars) or minutes[last] != end - MINUTE:
        return None
    current = bars[last]
    if rule.kind is AlertKind.VOLATILITY:
        first = bisect_left(minutes, end - rule.window * MINUTE)
        window = bars[first : last + 1]
        high = max(bar.high for bar in window)
        low = min(bar.low for bar in window)
        if low <= 0 or (high - low) * HUNDRED < rule.threshold * low:
            return None
        return _percent(high - low, low)
    # The reference: the newest bar at or before `window` minutes before the current one.
    before = bisect_right(minutes, current.minute - rule.window * MINUTE) - 1
    if before < 0:
        return None
    reference = bars[before].close
    if rule.kind is AlertKind.PRICE_CHANGE:
        if reference <= 0 or not _crosses(current.close - reference, reference, rule):
            return None
        return _percent(current.close - reference, reference)
    level = rule.threshold
    up = reference < level <= current.close
    down = reference > level >= current.close
    fired = {Direction.UP: up, Direction.DOWN: down, Direction.BOTH: up or down}[rule.direction]
    return current.close if fired else None


def _cooling(end: datetime, fired: Iterable[datetime], cooldown: timedelta) -> bool:
    return any(end == previous or abs(end - previous) < cooldown for previous in fired)


def evaluate(
    rules: AlertRules,
    markets: Mapping[Market, Sequence[Bar]],
    ends_after: datetime,
    fired: Mapping[tuple[str, str, str], Iterable[datetime]],
) -> list[Firing]:
    """The firings of every rule over every watched market at the window ends after
    ``ends_after``, skipping (rule, market, end) in ``fired`` (rule, exchange, symbol → window
    ends) and ends within a cooldown of those or of each other; oldest end first."""
    firings: list[Firing] = []
    for (exchange, symbol), bars in sorted(markets.items()):
        minutes = [bar.minute for bar in bars]
        ends = sorted({minute + MINUTE for minute in minutes if minute + MINUTE > ends_after})
        for rule in rules.rules:
            if not rule.watches(exchange, symbol):
                continue
            previous = list(fired.get((rule.name, exchange, symbol), ()))
            cooldown = rule.cooldown * MINUTE
            for end in ends:
                if _cooling(end, previous, cooldown):
                    continue
                value = window_value(rule, bars, end, minutes)
                if value is None:
                    continue
                previous.append(end)
                firings.append(
                    Firing(
                        rule.name,
                        rule.kind,
                        exchange,
                        symbol,
                        rule.window,
                        end,
                        value,
                        rule.threshold,
                    )
                )
    firings.sort(key=lambda firing: (firing.window_end, firing.alert_id))
    return firings
