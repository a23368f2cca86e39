"""The simulator's synthetic market: the pure core, no I/O.

Per symbol, a mid price follows geometric Brownian motion and every trade prints one tick
either side of it (a taker buy lifts the ask, a taker sell hits the bid), so prices are exact
multiples of the tick. Quantities are log-normal notionals rounded to the lot size. Trades
arrive as a Poisson process whose rate switches between a calm and a burst regime (a
Markov-modulated Poisson process), which is how real tapes look: long lulls, short storms.

Deterministic: one ``random.Random(seed)`` drives everything and the caller passes the time,
so the same seed and the same calls give the same trades. For :meth:`Market.trades_until` the
result does not even depend on how the time is split between calls, because every arrival is
drawn before it is due.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from itertools import accumulate
from typing import Final, NamedTuple

from cryptolake.common.symbols import canonical_symbol

SECONDS_PER_YEAR: Final = 365.0 * 24 * 3600
# A trade's qty is a notional in quote currency (log-normal around this median) over price.
MEDIAN_NOTIONAL: Final = 250.0
NOTIONAL_SIGMA: Final = 1.3
# How strongly the taker side follows the price move: P(buy | mid ticked up).
SIDE_MOMENTUM: Final = 0.65


class SimTrade(NamedTuple):
    """One synthetic trade. A NamedTuple because the flood path builds ~10^5 of these a second."""

    symbol: str  # canonical BASE-QUOTE
    trade_id: int
    price: str  # exact decimal, quantized to the symbol's tick
    qty: str  # exact decimal, a whole number of lots
    side: str  # taker side: "buy" or "sell"
    event_time_us: int


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """How one symbol trades: where its price starts, its tick and lot sizes (decimal strings)."""

    start_price: str
    tick: str
    lot: str
    weight: float = 1.0  # share of the market's trades, relative to the other symbols

    def __post_init__(self) -> None:
        for name in ("start_price", "tick", "lot"):
            value = Decimal(getattr(self, name))
            if not value.is_finite() or value <= 0:
                raise ValueError(f"{name} must be a decimal > 0, got {getattr(self, name)!r}")
        if Decimal(self.start_price) < Decimal(self.tick):
            raise ValueError(f"start_price {self.start_price} is below one tick {self.tick}")
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")


# Roughly what the real books look like; anything else starts at 100.
DEFAULT_SPECS: Final[Mapping[str, SymbolSpec]] = {
    "BTC": SymbolSpec(start_price="60000", tick="0.01", lot="0.00001", weight=2.0),
    "ETH": SymbolSpec(start_price="3000", tick="0.01", lot="0.0001", weight=1.5),
    "SOL": SymbolSpec(start_price="150", tick="0.01", lot="0.001"),
}
OTHER_SPEC: Final = SymbolSpec(start_price="100", tick="0.01", lot="0.001")


def default_spec(symbol: str) -> SymbolSpec:
    base = canonical_symbol(symbol).partition("-")[0]
    return DEFAULT_SPECS.get(base, OTHER_SPEC)


@dataclass(frozen=True, slots=True)
class Regimes:
    """The arrival rate's two regimes. Their long-run mean is the market's ``rate_per_s``."""

    calm_mean_s: float = 20.0  # mean time spent calm
    burst_mean_s: float = 3.0  # mean time spent bursting
    burst_factor: float = 5.0  # burst rate / calm rate; 1.0 = a plain Poisson process

    def __post_init__(self) -> None:
        if not (self.calm_mean_s > 0 and self.burst_mean_s > 0 and self.burst_factor > 0):
            raise ValueError(f"regime durations and burst_factor must be > 0: {self}")

    def rates(self, rate_per_s: float) -> tuple[float, float]:
        """(calm, burst) rates whose time-weighted mean is ``rate_per_s``."""
        calm_share = self.calm_mean_s / (self.calm_mean_s + self.burst_mean_s)
        calm = rate_per_s / (calm_share + (1.0 - calm_share) * self.burst_factor)
        return calm, calm * self.burst_factor


class _Decimals:
    """Integer ↔ exact decimal string for one step size (tick or lot)."""

    __slots__ = ("places", "scale", "step", "step_units")

    def __init__(self, step: str) -> None:
        exponent = Decimal(step).normalize().as_tuple().exponent
        assert isinstance(exponent, int)  # finite, checked by SymbolSpec
        self.places = max(0, -exponent)
        self.scale = 10**self.places
        self.step_units = int(Decimal(step) * self.scale)  # step in units of 10^-places
        self.step = float(step)

    def text(self, steps: int) -> str:
        units = steps * self.step_units
        if not self.places:
            return str(units)
        whole, frac = divmod(units, self.scale)
        return f"{whole}.{frac:0{self.places}d}"


class _SymbolState:
    __slots__ = ("last_us", "log_mid", "lot", "next_id", "symbol", "tick")

    def __init__(self, symbol: str, spec: SymbolSpec, first_id: int) -> None:
        self.symbol = symbol
        self.tick = _Decimals(spec.tick)
        self.lot = _Decimals(spec.lot)
        self.log_mid = math.log(float(spec.start_price))
        self.last_us: int | None = None
        self.next_id = first_id


class Market:
    """A synthetic multi-symbol market. ``rate_per_s`` is the mean trade rate over all symbols.

    ``specs`` replaces a symbol's whole :class:`SymbolSpec`, ``start_prices`` only its start
    price. ``volatility`` and ``drift`` are annualized, as quoted for real assets (0.6 = 60 %).
    """

    def __init__(
        self,
        symbols: Iterable[str],
        seed: int,
        rate_per_s: float,
        *,
        specs: Mapping[str, SymbolSpec] | None = None,
        start_prices: Mapping[str, str] | None = None,
        volatility: float = 0.6,
        drift: float = 0.0,
        regimes: Regimes | None = None,
        start_us: int | None = None,
    ) -> None:
        names = list(dict.fromkeys(canonical_symbol(symbol) for symbol in symbols))
        if not names:
            raise ValueError("the market needs at least one symbol")
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        if volatility < 0:
            raise ValueError(f"volatility must be >= 0, got {volatility}")
        self.symbols = tuple(names)
        self.rate_per_s = rate_per_s
        self._rng = random.Random(seed)
        overrides = {canonical_symbol(k): v for k, v in (specs or {}).items()}
        chosen = [overrides.get(name) or default_spec(name) for name in names]
        starts = {canonical_symbol(k): v for k, v in (start_prices or {}).items()}
        chosen = [
            replace(spec, start_price=starts[name]) if name in starts else spec
            for name, spec in zip(names, chosen, strict=True)
        ]
        # Ids start somewhere seed-dependent and high, like a venue that has been trading a
        # while; _start adds the clock, so a restart (same seed, later) goes on above them.
        self._states = [
            _SymbolState(name, spec, self._rng.randrange(1_000_000, 1_000_000_000))
            for name, spec in zip(names, chosen, strict=True)
        ]
        self._cum_weights = list(accumulate(spec.weight for spec in chosen))
        sigma = volatility / math.sqrt(SECONDS_PER_YEAR)
        self._sigma_per_sqrt_s = sigma
        self._drift_per_s = drift / SECONDS_PER_YEAR - 0.5 * sigma * sigma
        self._regimes = regimes or Regimes()
        self._calm_rate, self._burst_rate = self._regimes.rates(rate_per_s)
        self._in_burst = False
        self._regime_end_us = 0.0
        self._next_at_us = 0.0  # the next arrival, drawn ahead of time
        self._clock_us: int | None = None
        self._last_event_us = 0
        if start_us is not None:
            self._start(start_us)

    # --- arrivals -------------------------------------------------------------------------

    def _start(self, t_us: int) -> None:
        # One id per microsecond per symbol at most before a restart would catch up with them.
        for state in self._states:
            state.next_id += t_us
        self._clock_us = t_us
        self._last_event_us = t_us
        self._regime_end_us = t_us + self._rng.expovariate(1.0 / self._regimes.calm_mean_s) * 1e6
        self._draw_arrival(float(t_us))

    def _draw_arrival(self, from_us: float) -> None:
        """Next arrival after ``from_us``; on crossing a regime end, switch and redraw there
        (valid because exponential waits are memoryless)."""
        while True:
            rate = self._burst_rate if self._in_burst else self._calm_rate
            candidate = from_us + self._rng.expovariate(rate) * 1e6
            if candidate <= self._regime_end_us:
                self._next_at_us = candidate
                return
            from_us = self._regime_end_us
            self._in_burst = not self._in_burst
            mean_s = self._regimes.burst_mean_s if self._in_burst else self._regimes.calm_mean_s
            self._regime_end_us = from_us + self._rng.expovariate(1.0 / mean_s) * 1e6

    @property
    def in_burst(self) -> bool:
        return self._in_burst

    def trades_until(self, t_us: int) -> list[SimTrade]:
        """Paced mode: every trade that arrives after the previous call and at or before ``t_us``.

        The first call only starts the clock (unless ``start_us`` was given).
        """
        if self._clock_us is None:
            self._start(t_us)
            return []
        trades: list[SimTrade] = []
        while self._next_at_us <= t_us:
            arrival = int(self._next_at_us)
            trades.append(self._trade(self._pick_symbol(), max(arrival, self._last_event_us)))
            self._draw_arrival(self._next_at_us)
        self._clock_us = max(self._clock_us, t_us)
        return trades

    def next_trades(self, n: int, t_us: int) -> list[SimTrade]:
        """Flood mode: ``n`` trades right now, their times spread evenly up to ``t_us``.

        Event times never go backwards, and the paced clock moves on to ``t_us`` so that a later
        :meth:`trades_until` does not replay the flooded span.
        """
        if self._clock_us is None:
            self._start(t_us)
        assert self._clock_us is not None
        previous = self._last_event_us
        span = max(t_us - previous, 0)
        trades = [
            self._trade(self._pick_symbol(), previous + span * (i + 1) // n) for i in range(n)
        ]
        if t_us > self._clock_us:
            self._clock_us = t_us
            if self._next_at_us < t_us:
                self._draw_arrival(float(t_us))
        return trades

    # --- one trade ------------------------------------------------------------------------

    def _pick_symbol(self) -> _SymbolState:
        if len(self._states) == 1:
            return self._states[0]
        point = self._rng.random() * self._cum_weights[-1]
        return self._states[min(bisect_right(self._cum_weights, point), len(self._states) - 1)]

    def _trade(self, state: _SymbolState, t_us: int) -> SimTrade:
        rng = self._rng
        shock = rng.gauss(0.0, 1.0)
        if state.last_us is not None and t_us > state.last_us:
            dt_s = (t_us - state.last_us) / 1e6
            state.log_mid += (
                self._drift_per_s * dt_s + self._sigma_per_sqrt_s * math.sqrt(dt_s) * shock
            )
        state.last_us = t_us
        self._last_event_us = t_us
        mid = math.exp(state.log_mid)
        buy = rng.random() < (SIDE_MOMENTUM if shock > 0 else 1.0 - SIDE_MOMENTUM)
        # A one-tick spread around the mid: buys print at the ask, sells at the bid.
        bid_ticks = max(1, int(mid / state.tick.step))
        price_ticks = bid_ticks + 1 if buy else bid_ticks
        notional = MEDIAN_NOTIONAL * math.exp(NOTIONAL_SIGMA * rng.gauss(0.0, 1.0))
        lots = max(1, round(notional / mid / state.lot.step))
        trade_id = state.next_id
        state.next_id = trade_id + 1
        return SimTrade(
            state.symbol,
            trade_id,
            state.tick.text(price_ticks),
            state.lot.text(lots),
            "buy" if buy else "sell",
            t_us,
        )
