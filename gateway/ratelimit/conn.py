"""In-process counts of requests in flight, for limit-conn. Pure.

The rule is resty.limit.conn's, which APISIX's limit-conn uses: a request is refused when
it would make more than `conn + burst` in flight for its key; beyond `conn` it is let
through after `unit_delay` for every `conn` ahead of it. `unit_delay` starts at the
conf's `default_conn_delay` and, unless `only_use_default_delay`, follows the requests'
latency (the mean of the last latency and itself). A key with nothing in flight holds no
memory.
"""

from __future__ import annotations


class ConnCounts:
    def __init__(self, conn: int, burst: int, default_delay: float, adaptive: bool) -> None:
        self.conn = conn
        self.most = conn + burst
        self.unit_delay = default_delay
        self.adaptive = adaptive
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def incoming(self, key: str) -> float | None:
        """Seconds to wait before going on (0.0 for none), or None when refused; an
        accepted request must be given back with `leaving`."""
        count = self._counts.get(key, 0) + 1
        if count > self.most:
            return None
        self._counts[key] = count
        return self.delay(count)

    def delay(self, count: int) -> float:
        """The wait of the `count`th request in flight."""
        return self.unit_delay * ((count - 1) // self.conn) if count > self.conn else 0.0

    def leaving(self, key: str, latency: float | None) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)
        self.learn(latency)

    def learn(self, latency: float | None) -> None:
        if latency is not None and self.adaptive:
            self.unit_delay = (latency + self.unit_delay) / 2
