"""Rate-limit counters in Redis, shared by every gateway process and machine using it.

One atomic Lua script per decision (never read-then-write): fixed windows are one counter
key that expires a window after its first request; sliding windows are one hash per key
holding the current window's index and the current and previous counts, with the time taken
from Redis (`TIME`) so that gateways with skewed clocks agree. One key per limit key keeps
the scripts valid on Redis Cluster.

`RedisClients` owns the coredis clients: they must live inside an async context, so the
server enters them in its nursery (`run`) and plugins only hold a `RedisHandle`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import coredis
import trio

from gateway.ratelimit.local import Decision

log = logging.getLogger("gateway")

FIXED_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]); ttl = tonumber(ARGV[3]) end
if count > tonumber(ARGV[1]) then
  redis.call('INCRBY', KEYS[1], -tonumber(ARGV[2]))
  return {0, 0, ttl}
end
return {1, tonumber(ARGV[1]) - count, ttl}
"""

# ARGV: limit, cost, window in ms. Counts are kept as integers; the previous window's
# weight is applied in milliseconds.
SLIDING_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, cost, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local index = math.floor(now / window)
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w, cur, prev = tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3]) or 0
if w ~= index then
  if w == index - 1 then prev = cur else prev = 0 end
  cur = 0
end
local elapsed = now - index * window
local estimate = prev * (window - elapsed) / window + cur
local reset = (index + 1) * window - now
if estimate + cost > limit then
  return {0, 0, reset}
end
cur = cur + cost
redis.call('HSET', KEYS[1], 'w', index, 'c', cur, 'p', prev)
redis.call('PEXPIRE', KEYS[1], window * 2)
return {1, math.floor(limit - (prev * (window - elapsed) / window + cur)), reset}
"""


class RedisUnavailable(Exception):
    """Redis could not answer in time (down, refused, timed out, or a script error)."""


class RedisHandle:
    """A coredis client as configured by a limit-count conf; usable once entered."""

    def __init__(self, key: tuple[Any, ...], cluster: bool) -> None:
        self.key = key
        self.cluster = cluster
        self.client: Any = None
        self._scripts: dict[str, Any] = {}

    def create(self) -> Any:
        host, port, username, password, database, _ = self.key
        common: dict[str, Any] = {"username": username, "password": password,
                                  "decode_responses": False}  # fmt: skip
        if self.cluster:
            return coredis.RedisCluster(host=host, port=port, **common)
        return coredis.Redis(host=host, port=port, db=database, **common)

    async def run_script(self, source: str, key: str, args: list[int]) -> list[int]:
        """Run a Lua script on one key; raises RedisUnavailable. The caller sets the timeout."""
        client = self.client
        if client is None:
            raise RedisUnavailable("redis client not connected yet")
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = client.register_script(source)
        try:
            result = await script(keys=[key], args=args)
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from None
        return [int(x) for x in result]


class RedisClients:
    """Every Redis client the current configs use, kept open by `run` in the server nursery."""

    def __init__(self) -> None:
        self._handles: dict[tuple[Any, ...], RedisHandle] = {}
        self._pending: list[RedisHandle] = []
        self._wakeup = trio.Event()

    def handle(
        self, host: str, port: int, username: str | None, password: str | None,
        database: int, cluster: bool,
    ) -> RedisHandle:  # fmt: skip
        key = (host, port, username, password, database, cluster)
        handle = self._handles.get(key)
        if handle is None:
            handle = self._handles[key] = RedisHandle(key, cluster)
            self._pending.append(handle)
            self._wakeup.set()
        return handle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Enter each client as it is first asked for; never returns until cancelled."""
        async with trio.open_nursery() as nursery:
            await self._enter_pending(nursery)
            task_status.started()
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                await self._enter_pending(nursery)

    async def _enter_pending(self, nursery: trio.Nursery) -> None:
        while self._pending:
            handle = self._pending.pop()
            await nursery.start(self._hold, handle)

    @staticmethod
    async def _hold(handle: RedisHandle, *, task_status: trio.TaskStatus[None]) -> None:
        client = handle.create()
        try:
            async with client:
                handle.client = client
                task_status.started()
                await trio.sleep_forever()
        except Exception as exc:  # entering failed: report and keep the gateway up
            log.error("redis client %s:%s failed: %r", handle.key[0], handle.key[1], exc)
            handle.client = None
            task_status.started()


class RedisWindowStore:
    """A fixed or sliding window counter in Redis, behind one script call per decision."""

    def __init__(
        self,
        handle: RedisHandle,
        prefix: str,
        limit: int,
        window_s: float,
        sliding: bool,
        timeout_s: float,
    ) -> None:
        self.handle = handle
        self.timeout = timeout_s
        self.prefix = prefix
        self.limit = limit
        self.window_ms = max(1, int(window_s * 1000))
        self.script = SLIDING_SCRIPT if sliding else FIXED_SCRIPT

    async def incoming(self, key: str, cost: int) -> Decision:
        """One atomic decision within the conf's `redis_timeout`; raises RedisUnavailable."""
        with trio.move_on_after(self.timeout):
            allowed, remaining, reset_ms = await self.handle.run_script(
                self.script, self.prefix + key, [self.limit, cost, self.window_ms]
            )
            return Decision(bool(allowed), max(0, remaining), max(1, math.ceil(reset_ms / 1000)))
        raise RedisUnavailable(f"no answer within {self.timeout * 1000:.0f} ms")
