"""The one timing loop the micro-benchmarks share: warm up, then µs per call."""

from __future__ import annotations

import time
from collections.abc import Callable


def measure(fn: Callable[[], object], iterations: int, warmup: int = 1000) -> float:
    """Mean µs per call of `fn` over `iterations` calls, after `warmup` untimed calls."""
    for _ in range(min(warmup, iterations)):
        fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations * 1e6
