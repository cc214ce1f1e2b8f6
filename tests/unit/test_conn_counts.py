"""limit-conn's counts of requests in flight (resty.limit.conn's rule)."""

from __future__ import annotations

import pytest

from gateway.ratelimit.conn import ConnCounts


def test_places_delays_and_refusals() -> None:
    counts = ConnCounts(conn=2, burst=3, default_delay=0.5, adaptive=False)
    # Two in flight at once; the next wait one unit per `conn` ahead of them.
    assert [counts.incoming("k") for _ in range(6)] == [0.0, 0.0, 0.5, 0.5, 1.0, None]
    assert counts.incoming("other") == 0.0
    counts.leaving("k", None)
    assert counts.incoming("k") == 1.0  # the place given back is taken again
    assert counts.incoming("k") is None


def test_keys_with_nothing_in_flight_hold_no_memory() -> None:
    counts = ConnCounts(conn=1, burst=0, default_delay=0.1, adaptive=False)
    for i in range(1000):
        assert counts.incoming(f"k{i}") == 0.0
    assert len(counts) == 1000
    for i in range(1000):
        counts.leaving(f"k{i}", None)
    assert len(counts) == 0


def test_the_delay_follows_answer_times_unless_told_not_to() -> None:
    adaptive = ConnCounts(conn=1, burst=5, default_delay=1.0, adaptive=True)
    fixed = ConnCounts(conn=1, burst=5, default_delay=1.0, adaptive=False)
    for counts in (adaptive, fixed):
        counts.incoming("k")
        counts.leaving("k", 0.2)
        counts.incoming("k")
    assert adaptive.incoming("k") == pytest.approx(0.6)  # (0.2 + 1.0) / 2
    assert fixed.incoming("k") == pytest.approx(1.0)
