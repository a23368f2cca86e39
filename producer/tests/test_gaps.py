"""The gap tracker (pure): which trade ids a feed is missing, and when they are due."""

from cryptolake.producer.gaps import Gap, GapTracker


def observe(tracker: GapTracker, symbol: str, ids: list[int], now: float = 0.0) -> list[Gap]:
    return [g for i in ids if (g := tracker.observe(symbol, str(i), now)) is not None]


def test_a_jump_opens_a_gap_that_is_due_after_the_grace_period() -> None:
    tracker = GapTracker(grace_s=2.0)
    assert observe(tracker, "BTC-USD", [10, 11, 12]) == []
    (gap,) = observe(tracker, "BTC-USD", [20], now=5.0)  # e.g. the first trade after a reconnect
    assert (gap.first_id, gap.last_id, gap.size) == (13, 19, 7)
    assert tracker.open_trades == 7
    assert tracker.due(6.9) == []
    assert tracker.due(7.0) == [gap]
    assert tracker.due(8.0) == [] and tracker.open_trades == 0  # handed out once


def test_late_and_swapped_ids_fill_their_place_and_split_a_gap() -> None:
    tracker = GapTracker(grace_s=1.0)
    observe(tracker, "ETH-USD", [1, 3, 2])  # a swapped pair: no gap left
    assert tracker.open_trades == 0
    observe(tracker, "ETH-USD", [10, 6, 6])  # 4..9 open, 6 arrives late (twice)
    assert sorted((g.first_id, g.last_id) for g in tracker.due(1.0)) == [(4, 5), (7, 9)]


def test_symbols_are_independent_and_the_first_trade_opens_nothing() -> None:
    tracker = GapTracker()
    assert observe(tracker, "BTC-USD", [500]) == []  # nothing before it is ours
    assert observe(tracker, "SOL-USD", [7, 9])[0].symbol == "SOL-USD"
    assert observe(tracker, "BTC-USD", [501]) == []


def test_non_numeric_ids_are_never_gaps() -> None:
    tracker = GapTracker()
    assert observe(tracker, "BTC-USD", []) == []
    for text in ("a-1", "a-9", "-5", "1e3"):
        assert tracker.observe("BTC-USD", text, 0.0) is None


def test_a_requested_range_is_due_at_once_and_never_counts_as_seen() -> None:
    tracker = GapTracker(grace_s=2.0)
    observe(tracker, "BTC-USD", [1000, 1001])
    gap = tracker.request("BTC-USD", 100, 119, after_time_us=7, now=50.0)
    assert (gap.size, gap.after_time_us) == (20, 7)
    observe(tracker, "BTC-USD", [1002], now=50.0)  # the live stream goes on beside it
    assert tracker.due(50.0) == [gap]
    assert tracker.last_id["BTC-USD"] == 1002
