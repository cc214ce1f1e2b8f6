"""limit-conn's counts of requests in flight in Redis, shared by every gateway using it.

Taking a place is one atomic script (INCR, and DECR again when over `conn + burst`), with
`key_ttl` as the key's expiry so that places never given back (a gateway killed mid-
request) do not stay taken forever. Places are given back by a background task, since the
log phase cannot wait: the requests that end are queued per key and sent as one DECRBY.
"""

from __future__ import annotations

import logging

import trio

from gateway.ratelimit.conn import ConnCounts
from gateway.ratelimit.redis import RedisHandle, RedisUnavailable

log = logging.getLogger("gateway")

# ARGV: most in flight (conn + burst), key_ttl in ms. Returns {1, count} or {0, count}.
TAKE_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
if n > tonumber(ARGV[1]) then
    redis.call('DECR', KEYS[1])
    return {0, n - 1}
end
return {1, n}
"""
# ARGV: how many places to give back. Returns the count left.
GIVE_BACK_SCRIPT = """
local n = redis.call('DECRBY', KEYS[1], tonumber(ARGV[1]))
if n <= 0 then
    redis.call('DEL', KEYS[1])
end
return {n}
"""


class RedisConnCounts:
    def __init__(
        self,
        handle: RedisHandle,
        prefix: str,
        counts: ConnCounts,
        key_ttl_s: int,
        timeout_s: float,
    ) -> None:
        self.handle = handle
        self.prefix = prefix
        self.counts = counts  # its unit delay (per process, as APISIX's per worker)
        self.args = [counts.most, key_ttl_s * 1000]
        self.timeout = timeout_s
        self.returns: dict[str, int] = {}
        self.wakeup = trio.Event()
        self.scope = trio.CancelScope()

    async def incoming(self, key: str) -> float | None:
        """Seconds to wait, or None when refused; raises RedisUnavailable."""
        taken, count = await self.handle.run_script_within(
            self.timeout, TAKE_SCRIPT, self.prefix + key, self.args
        )
        return self.counts.delay(count) if taken else None

    def leaving(self, key: str, latency: float | None) -> None:
        self.returns[key] = self.returns.get(key, 0) + 1
        self.wakeup.set()
        self.counts.learn(latency)

    async def run_sync(self) -> None:
        """Give the queued places back, until the store is dropped."""
        with self.scope:
            while True:
                await self.wakeup.wait()
                self.wakeup = trio.Event()
                returns, self.returns = self.returns, {}
                for key, n in returns.items():
                    try:
                        await self.handle.run_script_within(
                            self.timeout, GIVE_BACK_SCRIPT, self.prefix + key, [n]
                        )
                    except RedisUnavailable as exc:
                        log.warning("limit-conn: giving places back failed: %s", exc)

    def stop(self) -> None:
        self.scope.cancel()
