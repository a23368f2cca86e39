import random

from cryptolake.producer.feed import Backoff


def test_backoff_grows_exponentially_with_jitter_and_caps():
    backoff = Backoff(minimum_s=1.0, maximum_s=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(0.5 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 1.0
