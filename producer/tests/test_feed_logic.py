import random

from cryptolake.producer.feed import Backoff, GapTracker


def test_backoff_grows_exponentially_with_jitter_and_caps():
    backoff = Backoff(minimum_s=1.0, maximum_s=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0.5 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_gap_tracker_counts_ids_skipped_across_a_reconnect():
    gaps = GapTracker()
    assert [gaps.observe("BTC-USD", str(i)) for i in (10, 11, 12)] == [0, 0, 0]
    gaps.reconnected()
    assert gaps.observe("BTC-USD", "20") == 7
    assert gaps.observe("BTC-USD", "21") == 0


def test_gap_tracker_ignores_swaps_and_repeats_inside_a_session():
    gaps = GapTracker()
    assert [gaps.observe("ETH-USD", str(i)) for i in (1, 3, 2, 3, 5)] == [0] * 5


def test_gap_tracker_sees_no_gap_when_ids_continue_or_are_not_numeric():
    gaps = GapTracker()
    gaps.observe("BTC-USD", "5")
    gaps.observe("SOL-USD", "a-1")
    gaps.reconnected()
    assert gaps.observe("BTC-USD", "6") == 0
    assert gaps.observe("SOL-USD", "a-9") == 0
