"""Local counters with an injected clock: window arithmetic, headers' numbers, memory."""

from __future__ import annotations

import pytest

from gateway.ratelimit.local import Decision, FixedWindowStore, SlidingWindowStore


def test_fixed_window_starts_at_first_request_and_resets() -> None:
    store = FixedWindowStore(limit=2, window_s=10)
    assert store.incoming("k", 1, 100.0) == Decision(True, 1, 10)
    assert store.incoming("k", 1, 103.2) == Decision(True, 0, 7)
    assert store.incoming("k", 1, 109.5) == Decision(False, 0, 1)
    assert store.incoming("other", 1, 109.5) == Decision(True, 1, 10)
    assert store.incoming("k", 1, 110.0) == Decision(True, 1, 10)


def test_fixed_window_rejections_do_not_consume() -> None:
    store = FixedWindowStore(limit=1, window_s=10)
    assert store.incoming("k", 1, 0).allowed
    for t in range(1, 9):
        assert not store.incoming("k", 1, t).allowed
    assert store.incoming("k", 1, 10).allowed


def test_sliding_window_weights_the_previous_window() -> None:
    store = SlidingWindowStore(limit=10, window_s=10)
    for _ in range(10):
        assert store.incoming("k", 1, 5.0).allowed
    assert not store.incoming("k", 1, 9.9).allowed
    # At t=12 the previous window (10 requests) still overlaps 80%: estimate 8, room for 2.
    assert store.incoming("k", 1, 12.0) == Decision(True, 1, 8)
    assert store.incoming("k", 1, 12.0) == Decision(True, 0, 8)
    assert store.incoming("k", 1, 12.0) == Decision(False, 0, 8)
    # At t=15 the overlap is 50%: estimate 5 + 2 = 7, room for 3.
    assert [store.incoming("k", 1, 15.0).allowed for _ in range(4)] == [True, True, True, False]
    # Two windows later nothing is left of either.
    assert store.incoming("k", 1, 31.0) == Decision(True, 9, 9)


@pytest.mark.parametrize("store_class", [FixedWindowStore, SlidingWindowStore])
def test_expired_keys_are_reclaimed(
    store_class: type[FixedWindowStore] | type[SlidingWindowStore],
) -> None:
    store = store_class(limit=5, window_s=1)
    now = 0.0
    for i in range(200_000):
        store.incoming(f"key-{i}", 1, now)
        now += 0.00001  # 200k distinct keys within two seconds
    assert len(store) >= 50_000
    # Steady traffic later reclaims them: memory does not grow with the number of keys ever seen.
    for i in range(60_000):
        store.incoming(f"later-{i % 10}", 1, 10.0 + i * 0.0001)
    assert len(store) < 100


def test_reset_is_the_window_not_a_float_hair_above_it() -> None:
    # (now + 5) - now is 5.000000000000909 here: still a 5 s window, not 6.
    now = 8191.610680565681
    assert (now + 5.0) - now > 5.0
    assert FixedWindowStore(2, 5).incoming("k", 1, now).reset == 5
    window = SlidingWindowStore(2, 5)
    assert window.incoming("k", 1, 5.0 * 1000).reset == 5
