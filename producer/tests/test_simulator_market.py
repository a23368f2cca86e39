import itertools
import math
import statistics
from decimal import Decimal

import pytest

from cryptolake.producer.simulator.market import (
    SECONDS_PER_YEAR,
    Market,
    Regimes,
    SimTrade,
    SymbolSpec,
)

T0 = 1_700_000_000_000_000  # 2023-11-14, in µs
SECOND = 1_000_000
SYMBOLS = ["BTC-USDT", "ETH-USDT", "DOGE-USDT"]


def _tape(market: Market) -> list[SimTrade]:
    """A fixed sequence of calls mixing paced and flood mode."""
    trades = market.trades_until(T0)
    trades += market.trades_until(T0 + 3 * SECOND)
    trades += market.next_trades(100, T0 + 4 * SECOND)
    trades += market.trades_until(T0 + 9 * SECOND)
    return trades


def test_the_same_seed_and_calls_give_identical_trades():
    first = _tape(Market(SYMBOLS, seed=7, rate_per_s=50.0))
    second = _tape(Market(SYMBOLS, seed=7, rate_per_s=50.0))
    assert len(first) > 300
    assert first == second


def test_another_seed_gives_another_tape():
    assert _tape(Market(SYMBOLS, seed=7, rate_per_s=50.0)) != _tape(
        Market(SYMBOLS, seed=8, rate_per_s=50.0)
    )


def test_paced_trades_do_not_depend_on_how_the_time_is_split():
    coarse = Market(SYMBOLS, seed=3, rate_per_s=80.0, start_us=T0)
    fine = Market(SYMBOLS, seed=3, rate_per_s=80.0, start_us=T0)
    whole = coarse.trades_until(T0 + 20 * SECOND)
    pieces = [t for ms in range(1, 20_001, 7) for t in fine.trades_until(T0 + ms * 1000)]
    pieces += fine.trades_until(T0 + 20 * SECOND)
    assert whole == pieces


def test_the_first_paced_call_only_starts_the_clock():
    market = Market(SYMBOLS, seed=1, rate_per_s=1000.0)
    assert market.trades_until(T0) == []
    assert all(t.event_time_us > T0 for t in market.trades_until(T0 + SECOND))


def test_trade_ids_run_on_per_symbol_from_a_seed_dependent_start():
    trades = _tape(Market(SYMBOLS, seed=11, rate_per_s=50.0))
    firsts = {}
    for symbol in SYMBOLS:
        ids = [t.trade_id for t in trades if t.symbol == symbol]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
        firsts[symbol] = ids[0]
    other = _tape(Market(SYMBOLS, seed=12, rate_per_s=50.0))
    assert firsts["BTC-USDT"] != next(t.trade_id for t in other if t.symbol == "BTC-USDT")


def test_a_restarted_market_never_reissues_a_trade_id():
    """The simulator restarts with its seed (a producer restart): ids reissued would be dropped
    by silver as duplicates of the first run's trades for the whole dedup horizon."""
    first = Market(SYMBOLS, seed=11, rate_per_s=2000.0, start_us=T0)
    before = first.trades_until(T0 + 10 * SECOND)
    again = Market(SYMBOLS, seed=11, rate_per_s=2000.0, start_us=T0 + 10 * SECOND + 1)
    after = again.trades_until(T0 + 20 * SECOND)
    for symbol in SYMBOLS:
        last = max(t.trade_id for t in before if t.symbol == symbol)
        assert min(t.trade_id for t in after if t.symbol == symbol) > last


def test_prices_and_quantities_are_exact_multiples_of_tick_and_lot():
    market = Market(["BTC-USDT", "ETH-USDT"], seed=5, rate_per_s=200.0, start_us=T0)
    trades = market.trades_until(T0 + 30 * SECOND)
    lots = {"BTC-USDT": Decimal("0.00001"), "ETH-USDT": Decimal("0.0001")}
    for trade in trades:
        price, qty = Decimal(trade.price), Decimal(trade.qty)
        assert price > 0 and qty > 0
        assert price % Decimal("0.01") == 0 and qty % lots[trade.symbol] == 0
        # Written with exactly the step's decimals: no exponent, no float noise.
        assert len(trade.price.partition(".")[2]) == 2
        assert len(trade.qty.partition(".")[2]) == -lots[trade.symbol].as_tuple().exponent
        assert trade.side in ("buy", "sell")


def test_default_start_prices_are_sane_and_overridable():
    market = Market(SYMBOLS, seed=2, rate_per_s=100.0, start_us=T0)
    first = {}
    for trade in market.trades_until(T0 + 10 * SECOND):
        first.setdefault(trade.symbol, Decimal(trade.price))
    assert abs(first["BTC-USDT"] / 60000 - 1) < Decimal("0.01")
    assert abs(first["ETH-USDT"] / 3000 - 1) < Decimal("0.01")
    assert abs(first["DOGE-USDT"] / 100 - 1) < Decimal("0.01")
    custom = Market(["BTC-USDT"], seed=2, rate_per_s=100.0, start_prices={"BTC-USDT": "25000"})
    custom.trades_until(T0)
    assert abs(Decimal(custom.trades_until(T0 + SECOND)[0].price) / 25000 - 1) < Decimal("0.01")


def test_gbm_prices_stay_positive_under_extreme_volatility():
    spec = SymbolSpec(start_price="1", tick="0.0001", lot="1")
    market = Market(
        ["ABC-USD"], seed=9, rate_per_s=20.0, specs={"ABC-USD": spec}, volatility=50.0, start_us=T0
    )
    trades = market.trades_until(T0 + 3600 * SECOND)
    assert all(Decimal(t.price) >= Decimal("0.0001") for t in trades)
    assert len({t.price for t in trades}) > 100  # it really moved


def test_log_returns_have_the_configured_volatility():
    volatility = 2.0  # annualized; high so the one-tick spread is negligible beside it
    market = Market(
        ["BTC-USDT"],
        seed=4,
        rate_per_s=20.0,
        volatility=volatility,
        regimes=Regimes(burst_factor=1.0),
        start_us=T0,
    )
    trades = market.trades_until(T0 + 2000 * SECOND)
    scaled = [
        math.log(float(b.price) / float(a.price))
        / math.sqrt((b.event_time_us - a.event_time_us) / 1e6)
        for a, b in itertools.pairwise(trades)
        if b.event_time_us - a.event_time_us > 100_000  # well above the tick noise
    ]
    expected = volatility / math.sqrt(SECONDS_PER_YEAR)
    assert statistics.pstdev(scaled) == pytest.approx(expected, rel=0.15)


def test_a_plain_poisson_rate_is_close_to_the_requested_one():
    market = Market(
        SYMBOLS, seed=6, rate_per_s=20.0, regimes=Regimes(burst_factor=1.0), start_us=T0
    )
    seconds = 2000
    trades = market.trades_until(T0 + seconds * SECOND)
    assert len(trades) / seconds == pytest.approx(20.0, rel=0.05)


def test_bursty_arrivals_keep_the_mean_rate_but_cluster():
    market = Market(SYMBOLS, seed=6, rate_per_s=5.0, start_us=T0)
    seconds = 8000
    counts = [0] * seconds
    for trade in market.trades_until(T0 + seconds * SECOND):
        counts[(trade.event_time_us - T0) // SECOND] += 1
    assert statistics.fmean(counts) == pytest.approx(5.0, rel=0.1)
    # A Poisson process has variance == mean; regime switching makes it far larger.
    assert statistics.pvariance(counts) / statistics.fmean(counts) > 3.0


def test_flood_trades_come_now_with_non_decreasing_times():
    market = Market(SYMBOLS, seed=1, rate_per_s=50.0)
    batch = market.next_trades(500, T0)
    later = market.next_trades(500, T0 + 5000)
    times = [t.event_time_us for t in batch + later]
    assert times == sorted(times)
    assert times[0] >= T0 and times[-1] == T0 + 5000
    # The paced clock moved on: no replay of the flooded span.
    assert all(t.event_time_us > T0 + 5000 for t in market.trades_until(T0 + 2 * SECOND))


def test_bad_specs_and_arguments_are_refused():
    with pytest.raises(ValueError, match="tick"):
        SymbolSpec(start_price="100", tick="0", lot="1")
    with pytest.raises(ValueError, match="symbol"):
        Market([], seed=1, rate_per_s=1.0)
    with pytest.raises(ValueError, match="rate"):
        Market(["BTC-USDT"], seed=1, rate_per_s=0.0)
