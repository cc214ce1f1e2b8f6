"""In-process rate-limit counters: fixed and sliding windows. Pure: the clock is passed in.

A trio process runs one task at a time, and nothing here awaits, so a check-and-increment is
atomic: N concurrent requests against a limit of C let exactly C through.

Memory stays bounded however many distinct keys arrive: every key's expiry is appended to a
FIFO when its window starts, and because all keys of one store share the same window length,
the FIFO is in expiry order. Each call reclaims a few expired keys from its head, so a
million one-off keys are gone a window or two later.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

RECLAIM_PER_CALL = 8


def seconds_left(seconds: float) -> int:
    """Whole seconds until a window ends, at least 1. The float subtraction that gives
    `seconds` can land a hair above a whole number ((now + 5) - now = 5.000000000001):
    such a hair is not a second more."""
    return max(1, math.ceil(seconds - 1e-6))


class Decision(NamedTuple):
    allowed: bool
    remaining: int  # after this request; never below 0
    reset: int  # whole seconds until the window ends; at least 1


class _Fixed:
    __slots__ = ("count", "expires")

    def __init__(self, count: int, expires: float) -> None:
        self.count = count
        self.expires = expires


class FixedWindowStore:
    """A window per key that starts with the key's first request (APISIX's fixed window)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window = window_s
        self._counters: dict[str, _Fixed] = {}
        self._expiries: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._counters)

    def incoming(self, key: str, cost: int, now: float) -> Decision:
        """Count `cost` for `key` if it fits the limit; says whether it was allowed."""
        self._reclaim(now)
        counter = self._counters.get(key)
        if counter is None or counter.expires <= now:
            counter = _Fixed(0, now + self.window)
            self._counters[key] = counter
            self._expiries.append((counter.expires, key))
        reset = seconds_left(counter.expires - now)
        if counter.count + cost > self.limit:
            return Decision(False, 0, reset)
        counter.count += cost
        return Decision(True, self.limit - counter.count, reset)

    def _reclaim(self, now: float) -> None:
        expiries = self._expiries
        for _ in range(RECLAIM_PER_CALL):
            if not expiries or expiries[0][0] > now:
                return
            expires, key = expiries.popleft()
            counter = self._counters.get(key)
            if counter is not None and counter.expires == expires:
                del self._counters[key]


class _Sliding:
    __slots__ = ("current", "previous", "window_index")

    def __init__(self, window_index: int) -> None:
        self.window_index = window_index
        self.current = 0
        self.previous = 0


class SlidingWindowStore:
    """Windows aligned to multiples of the window length; the previous window's count is
    weighted by how much of it still overlaps the sliding window (as APISIX and Kong do)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window = window_s
        self._counters: dict[str, _Sliding] = {}
        self._expiries: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._counters)

    def incoming(self, key: str, cost: int, now: float) -> Decision:
        """Count `cost` for `key` if the weighted estimate stays within the limit."""
        self._reclaim(now)
        window = self.window
        index = int(now // window)
        counter = self._counters.get(key)
        if counter is None:
            counter = _Sliding(index)
            self._counters[key] = counter
            self._expiries.append(((index + 2) * window, key))
        elif counter.window_index != index:
            counter.previous = counter.current if counter.window_index == index - 1 else 0
            counter.current = 0
            counter.window_index = index
            self._expiries.append(((index + 2) * window, key))
        elapsed = now - index * window
        weight = 1.0 - elapsed / window
        estimate = counter.previous * weight + counter.current
        reset = seconds_left((index + 1) * window - now)
        if estimate + cost > self.limit:
            return Decision(False, 0, reset)
        counter.current += cost
        remaining = self.limit - math.ceil(counter.previous * weight + counter.current)
        return Decision(True, max(0, remaining), reset)

    def _reclaim(self, now: float) -> None:
        expiries = self._expiries
        window = self.window
        for _ in range(RECLAIM_PER_CALL):
            if not expiries or expiries[0][0] > now:
                return
            _, key = expiries.popleft()
            counter = self._counters.get(key)
            if counter is not None and (counter.window_index + 2) * window <= now:
                del self._counters[key]
