"""In-process leaky buckets for limit-req. Pure: the clock is passed in.

The rule is resty.limit.req's, which APISIX's limit-req uses: per key, `excess` is how many
requests are waiting beyond the rate. A request adds one and the time since the last
accepted one drains `rate` per second; above `burst` it is refused (and changes nothing),
otherwise it is accepted and should wait `excess / rate` seconds.

Memory stays bounded: a bucket has drained completely `(burst + 1) / rate` seconds after its
last accepted request, when it is as if it never existed. Each key has one entry in a FIFO
of such times; each call reclaims a few from its head (an entry whose bucket was used since
goes to the back with its new time).
"""

from __future__ import annotations

from collections import deque

RECLAIM_PER_CALL = 8


class _Bucket:
    __slots__ = ("excess", "last")

    def __init__(self, now: float) -> None:
        self.excess = 0.0
        self.last = now


class LeakyBucketStore:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.span = (burst + 1) / rate  # a bucket untouched this long is empty
        self._buckets: dict[str, _Bucket] = {}
        self._expiries: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._buckets)

    def incoming(self, key: str, now: float) -> float | None:
        """Seconds the request should wait (0.0 for none), or None when it is refused."""
        self._reclaim(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = _Bucket(now)
            self._expiries.append((now + self.span, key))
            return 0.0
        excess = max(bucket.excess - self.rate * abs(now - bucket.last) + 1.0, 0.0)
        if excess > self.burst:
            return None
        bucket.excess = excess
        bucket.last = now
        return excess / self.rate

    def _reclaim(self, now: float) -> None:
        expiries = self._expiries
        for _ in range(RECLAIM_PER_CALL):
            if not expiries or expiries[0][0] > now:
                return
            _, key = expiries.popleft()
            bucket = self._buckets.get(key)
            if bucket is None:
                continue
            empty_at = bucket.last + self.span
            if empty_at <= now:
                del self._buckets[key]
            else:
                expiries.append((empty_at, key))
