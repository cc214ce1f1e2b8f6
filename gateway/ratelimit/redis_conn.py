"""limit-conn's counts of requests in flight in Redis, shared by every gateway using it.

Taking places is one atomic script for the requests of a key that arrive together
(`BatchedScript`): each takes a place while fewer than `conn + burst` are taken, with
`key_ttl` as the key's expiry so that places never given back (a gateway killed mid-
request) do not stay taken forever. Places are given back by a background task, since the
log phase cannot wait: the requests that end are queued per key and sent as one DECRBY.
"""

from __future__ import annotations

import logging

import trio

from gateway.ratelimit.conn import ConnCounts
from gateway.ratelimit.redis import BatchedScript, RedisHandle, RedisUnavailable

log = logging.getLogger("gateway")

# ARGV: most in flight (conn + burst), key_ttl in ms, the batch's size n. Returns per
# request the count in flight once it took its place, or 0 when it was refused.
TAKE_SCRIPT = """
local most, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local taken, out = 0, {}
for i = 1, n do
    if count + 1 > most then
        out[i] = 0
    else
        count, taken = count + 1, taken + 1
        out[i] = count
    end
end
if taken > 0 then
    redis.call('INCRBY', KEYS[1], taken)
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return out
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
        self.args: list[int | float] = [counts.most, key_ttl_s * 1000]
        self.calls = BatchedScript(handle, TAKE_SCRIPT, timeout_s)
        self.timeout = timeout_s
        self.returns: dict[str, int] = {}
        self.wakeup = trio.Event()
        self.scope = trio.CancelScope()

    async def incoming(self, key: str) -> float | None:
        """Seconds to wait, or None when refused; raises RedisUnavailable."""
        result, position = await self.calls.call(self.prefix + key, self.args)
        count = result[position - 1]
        return self.counts.delay(count) if count else None

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
