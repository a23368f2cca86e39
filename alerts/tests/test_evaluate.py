"""When rules fire, against an independent recomputation in ``Fraction`` (exact rationals):
each (rule, market, window end) at most once, cooldowns, directions, the open minute."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from cryptolake.alerts.evaluate import Bar, Firing, evaluate, window_value
from cryptolake.common.alert_rules import AlertKind, AlertRule, AlertRules, Direction, Webhook

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOOK = Webhook(url_env="X")


def rule(
    kind: AlertKind,
    threshold: str,
    window: int = 1,
    cooldown: int = 0,
    direction: Direction = Direction.BOTH,
    name: str = "r",
) -> AlertRule:
    return AlertRule(
        name=name,
        kind=kind,
        threshold=Decimal(threshold),
        window=window,
        cooldown=cooldown,
        direction=direction,
        webhook=HOOK,
    )


def bar(minute: int, low: str, high: str, close: str | None = None) -> Bar:
    return Bar(T0 + minute * MINUTE, Decimal(high), Decimal(low), Decimal(close or high))


def percent(numerator: Fraction, denominator: Fraction) -> Decimal:
    """Half-even to 12 decimals (Python's round() of a Fraction is half-even)."""
    return Decimal(f"{round(numerator * 100 / denominator * 10**12)}e-12")


def oracle(r: AlertRule, bars: list[Bar], end: datetime) -> Decimal | None:
    by_minute = {b.minute: b for b in bars}
    if end - MINUTE not in by_minute:
        return None
    current = by_minute[end - MINUTE]
    if r.kind is AlertKind.VOLATILITY:
        window = [b for b in bars if end - r.window * MINUTE <= b.minute < end]
        high = max(Fraction(b.high) for b in window)
        low = min(Fraction(b.low) for b in window)
        return (
            percent(high - low, low) if (high - low) / low * 100 >= Fraction(r.threshold) else None
        )
    earlier = [b for b in bars if b.minute <= current.minute - r.window * MINUTE]
    if not earlier:
        return None
    ref, now = Fraction(earlier[-1].close), Fraction(current.close)
    if r.kind is AlertKind.PRICE_CHANGE:
        move = (now - ref) / ref * 100
        ok = {
            Direction.UP: move >= r.threshold,
            Direction.DOWN: -move >= r.threshold,
            Direction.BOTH: abs(move) >= r.threshold,
        }[r.direction]
        return percent(now - ref, ref) if ok else None
    level = Fraction(r.threshold)
    up, down = ref < level <= now, ref > level >= now
    ok = {Direction.UP: up, Direction.DOWN: down, Direction.BOTH: up or down}[r.direction]
    return current.close if ok else None


def test_volatility_is_high_minus_low_over_low_across_the_window():
    bars = [bar(0, "100", "101"), bar(1, "99", "100.5"), bar(2, "100", "100.2")]
    one_minute = rule(AlertKind.VOLATILITY, "1.5")
    three = rule(AlertKind.VOLATILITY, "2", window=3)
    assert window_value(one_minute, bars, T0 + 3 * MINUTE) is None  # 0.2 %
    # (101 - 99) / 99 = 2.0202…%, only over the three minutes.
    assert window_value(three, bars, T0 + 3 * MINUTE) == Decimal("2.020202020202")
    assert window_value(one_minute, bars, T0 + 2 * MINUTE) == Decimal("1.515151515152")
    # No bar in the window's last minute: no new information, no firing.
    assert window_value(three, bars, T0 + 4 * MINUTE) is None


def test_a_threshold_met_exactly_fires_and_a_hair_below_does_not():
    exactly = [bar(0, "100", "102")]
    below = [bar(0, "100", "101.9999999999")]
    r = rule(AlertKind.VOLATILITY, "2")
    assert window_value(r, exactly, T0 + MINUTE) == Decimal("2.000000000000")
    assert window_value(r, below, T0 + MINUTE) is None


def test_price_change_and_cross_follow_their_direction():
    bars = [bar(0, "100", "100", "100"), bar(1, "100", "103", "103"), bar(2, "96", "103", "96")]
    up = rule(AlertKind.PRICE_CHANGE, "3", direction=Direction.UP)
    down = rule(AlertKind.PRICE_CHANGE, "3", direction=Direction.DOWN)
    assert window_value(up, bars, T0 + 2 * MINUTE) == Decimal("3.000000000000")
    assert window_value(down, bars, T0 + 2 * MINUTE) is None
    assert window_value(down, bars, T0 + 3 * MINUTE) == Decimal("-6.796116504854")
    cross = rule(AlertKind.PRICE_CROSS, "101")
    assert window_value(cross, bars, T0 + 2 * MINUTE) == Decimal("103")
    assert window_value(cross, bars, T0 + 3 * MINUTE) == Decimal("96")
    assert (
        window_value(
            rule(AlertKind.PRICE_CROSS, "101", direction=Direction.UP), bars, T0 + 3 * MINUTE
        )
        is None
    )


def test_each_window_end_fires_once_and_a_cooldown_spaces_firings():
    bars = [bar(m, "100", "105") for m in range(10)]
    rules = AlertRules(rules=(rule(AlertKind.VOLATILITY, "1", cooldown=3),))
    firings = evaluate(rules, {("simulator", "BTC-USDT"): bars}, T0, {})
    assert [f.window_end - T0 for f in firings] == [m * MINUTE for m in (1, 4, 7, 10)]
    # Evaluated again (a new Gold version): what fired is known, nothing fires twice.
    fired = {("r", "simulator", "BTC-USDT"): [f.window_end for f in firings]}
    assert evaluate(rules, {("simulator", "BTC-USDT"): bars}, T0, fired) == []
    # The open minute grows into the threshold: the firing comes when it does.
    calm = [bar(0, "100", "100.5")]
    assert evaluate(rules, {("simulator", "BTC-USDT"): calm}, T0 - MINUTE, {}) == []
    grown = [bar(0, "100", "101")]
    (firing,) = evaluate(rules, {("simulator", "BTC-USDT"): grown}, T0 - MINUTE, {})
    assert firing == Firing(
        "r",
        AlertKind.VOLATILITY,
        "simulator",
        "BTC-USDT",
        1,
        T0 + MINUTE,
        Decimal("1.000000000000"),
        Decimal("1"),
    )
    assert firing.alert_id == "r/simulator/BTC-USDT/2026-12-07T12:01:00+00:00"


def test_only_watched_markets_and_ends_after_the_horizon_are_evaluated():
    bars = [bar(m, "100", "110") for m in range(5)]
    r = AlertRule(
        name="eth",
        kind=AlertKind.VOLATILITY,
        threshold=Decimal(1),
        cooldown=0,
        markets=("ETH-USDT",),
        webhook=HOOK,
    )
    markets = {("binance", "ETH-USDT"): bars, ("binance", "BTC-USDT"): bars}
    firings = evaluate(AlertRules(rules=(r,)), markets, T0 + 3 * MINUTE, {})
    assert {(f.symbol, f.window_end - T0) for f in firings} == {
        ("ETH-USDT", 4 * MINUTE),
        ("ETH-USDT", 5 * MINUTE),
    }


prices = st.decimals(
    min_value=Decimal("0.0000000001"),
    max_value=Decimal("999999999"),
    places=10,
    allow_nan=False,
    allow_infinity=False,
)


@st.composite
def market_bars(draw):
    minutes = sorted(draw(st.sets(st.integers(0, 40), min_size=1, max_size=25)))
    out = []
    for m in minutes:
        a, b, c = draw(prices), draw(prices), draw(prices)
        low, high = min(a, b, c), max(a, b, c)
        out.append(Bar(T0 + m * MINUTE, high, low, sorted((a, b, c))[1]))
    return out


@settings(max_examples=200, deadline=None)
@given(
    bars=market_bars(),
    kind=st.sampled_from(list(AlertKind)),
    threshold=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2),
    window=st.integers(1, 15),
    direction=st.sampled_from(list(Direction)),
)
def test_every_value_equals_the_fraction_recomputation(bars, kind, threshold, window, direction):
    r = rule(
        kind, str(threshold), 1 if kind is AlertKind.PRICE_CROSS else window, direction=direction
    )
    for m in range(0, 43):
        end = T0 + m * MINUTE
        assert window_value(r, bars, end) == oracle(r, bars, end)
