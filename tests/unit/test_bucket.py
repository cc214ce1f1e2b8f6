"""limit-req's leaky bucket (resty.limit.req's rule) on a fixed clock."""

from __future__ import annotations

import pytest

from gateway.ratelimit.bucket import LeakyBucketStore


def test_burst_then_refusal_then_drain() -> None:
    store = LeakyBucketStore(rate=2.0, burst=1.0)
    assert store.incoming("k", 100.0) == 0.0
    # The second at once is one request over the rate: wait 1 / rate.
    assert store.incoming("k", 100.0) == pytest.approx(0.5)
    # A third would be 2 over, above burst 1: refused, and the bucket is unchanged.
    assert store.incoming("k", 100.0) is None
    assert store.incoming("k", 100.1) is None
    # 0.5 s drains one request: there is room for one again, with a wait.
    assert store.incoming("k", 100.5) == pytest.approx(0.5)
    # After a long pause the bucket is empty.
    assert store.incoming("k", 200.0) == 0.0
    # Other keys have their own bucket.
    assert store.incoming("other", 200.0) == 0.0


def test_zero_burst_allows_exactly_the_rate() -> None:
    store = LeakyBucketStore(rate=1.0, burst=0.0)
    assert store.incoming("k", 0.0) == 0.0
    assert store.incoming("k", 0.5) is None
    assert store.incoming("k", 1.0) == 0.0
    assert store.incoming("k", 1.9) is None
    assert store.incoming("k", 2.0) == 0.0


def test_drained_buckets_are_reclaimed() -> None:
    store = LeakyBucketStore(rate=10.0, burst=4.0)
    for i in range(100_000):
        store.incoming(f"key-{i}", 0.0)
    assert len(store) == 100_000
    # Each call reclaims a few drained buckets ((4 + 1) / 10 s after their last request);
    # a hot key keeps its own.
    for step in range(20_000):
        store.incoming("hot", 1.0 + step * 0.01)
    assert len(store) == 1


def test_a_bucket_used_since_its_entry_is_kept() -> None:
    store = LeakyBucketStore(rate=1.0, burst=1.0)
    assert store.incoming("k", 0.0) == 0.0
    assert store.incoming("k", 1.9) == 0.0  # drained by then; empty 2 s after 1.9
    store.incoming("x", 2.5)  # k's first entry is due (2.0), but k was used at 1.9
    # Had k been dropped this would be 0.0: 0.6 s after 1.9, 0.4 of a request remains.
    assert store.incoming("k", 2.5) == pytest.approx(0.4)
