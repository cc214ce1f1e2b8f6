"""The one timing loop the micro-benchmarks share: warm up, then µs per call."""

from __future__ import annotations

import time
from collections.abc import Callable

ROUNDS = 5


def measure(fn: Callable[[], object], iterations: int, warmup: int = 1000) -> float:
    """µs per call of `fn`: the mean of the fastest of `ROUNDS` rounds of `iterations` calls,
    after `warmup` untimed calls.

    The fastest round, as `timeit` advises: on this shared VM a round can lose half its
    time to other guests (one round's mean of the auth decision ranged 5.4-10.0 µs between
    runs), and what is measured here is the code's own cost, not theirs.
    """
    for _ in range(min(warmup, iterations)):
        fn()
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6
