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
from typing import Any, NamedTuple, Protocol

import coredis
import trio

from gateway.ratelimit.local import Decision, seconds_left
from gateway.wakeup import wake

log = logging.getLogger("gateway")

# Both window scripts decide for a batch of requests of cost 1 (ARGV: limit, window in ms,
# requests) exactly as that many calls of one request each would, back to back: the first
# `admitted` pass, the rest are refused. They return {admitted, the quota remaining after the
# last admitted request, ms until the window ends}.
FIXED_SCRIPT = """
local limit, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local count = redis.call('INCRBY', KEYS[1], n)
if count == n then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
local refused = math.min(n, math.max(0, count - limit))
if refused > 0 then
  redis.call('INCRBY', KEYS[1], -refused)
  count = count - refused
end
return {n - refused, limit - count, ttl}
"""

# The previous window's count is weighted by how much of it the sliding window still covers
# (in milliseconds); counts are kept as integers.
SLIDING_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local index = math.floor(now / window)
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w, cur, prev = tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3]) or 0
if w ~= index then
  if w == index - 1 then prev = cur else prev = 0 end
  cur = 0
end
local elapsed = now - index * window
local weighted = prev * (window - elapsed) / window
local reset = (index + 1) * window - now
local admitted = math.min(n, math.max(0, math.floor(limit - weighted - cur)))
if admitted == 0 then
  return {0, 0, reset}
end
cur = cur + admitted
redis.call('HSET', KEYS[1], 'w', index, 'c', cur, 'p', prev)
redis.call('PEXPIRE', KEYS[1], window * 2)
return {admitted, math.floor(limit - (weighted + cur)), reset}
"""


# ARGV: increment, window in ms. Adds what a gateway counted locally since its last push.
PUSH_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
return {count, ttl}
"""


class RedisUnavailable(Exception):
    """Redis could not answer in time (down, refused, timed out, or a script error)."""


class RedisTarget(NamedTuple):
    """Where and how to reach one Redis: equal targets share one client."""

    host: str
    port: int
    username: str | None
    password: str | None
    database: int
    cluster: bool
    ssl: bool
    ssl_verify: bool
    pool_size: int
    idle_timeout_s: int

    def __repr__(self) -> str:  # never the password
        return f"RedisTarget({self.host}:{self.port}, ssl={self.ssl})"


class RedisHandle:
    """A coredis client as configured by a limit-count conf; usable once entered."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self.client: Any = None
        self._scripts: dict[str, Any] = {}

    def create(self) -> Any:
        """The client for the target. With `ssl` and without `ssl_verify` the server's
        certificate is not checked (APISIX's default); with it, the certificate must chain
        to the system's CAs (`SSL_CERT_FILE` names another list) and name the host."""
        target = self.target
        common: dict[str, Any] = {
            "username": target.username,
            "password": target.password,
            "decode_responses": False,
            "max_connections": target.pool_size,
        }
        if target.ssl:
            common["ssl"] = True
            common["ssl_cert_reqs"] = "required" if target.ssl_verify else "none"
            common["ssl_check_hostname"] = target.ssl_verify
        if target.cluster:
            # The pool bound per node, as lua-resty-redis keeps one pool per host:port.
            return coredis.RedisCluster(
                host=target.host, port=target.port, max_connections_per_node=True, **common
            )
        return coredis.Redis(
            host=target.host,
            port=target.port,
            db=target.database,
            max_idle_time=target.idle_timeout_s,
            **common,
        )

    async def run_script(
        self, source: str, key: str, args: list[int] | list[int | float]
    ) -> list[int]:
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

    async def run_script_within(
        self, timeout_s: float, source: str, key: str, args: list[int] | list[int | float]
    ) -> list[int]:
        """`run_script`, answered within `timeout_s` (the conf's `redis_timeout`) or
        RedisUnavailable."""
        with trio.move_on_after(timeout_s):
            return await self.run_script(source, key, args)
        raise RedisUnavailable(f"no answer within {timeout_s * 1000:.0f} ms")


class BackgroundStore(Protocol):
    """A store with a task of its own (pushing counts, giving places back), run in the
    clients' nursery until `stop`."""

    async def run_sync(self) -> None: ...

    def stop(self) -> None: ...


class RedisClients:
    """Every Redis client the current configs use, kept open by `run` in the server nursery."""

    def __init__(self) -> None:
        self._handles: dict[RedisTarget, RedisHandle] = {}
        self._pending: list[RedisHandle] = []
        self._pending_syncs: list[BackgroundStore] = []
        self._wakeup = trio.Event()

    def add_sync(self, store: BackgroundStore) -> None:
        """Run `store`'s periodic push in the background (until the store is dropped)."""
        self._pending_syncs.append(store)
        wake(self._wakeup)

    def handle(self, target: RedisTarget) -> RedisHandle:
        handle = self._handles.get(target)
        if handle is None:
            handle = self._handles[target] = RedisHandle(target)
            self._pending.append(handle)
            wake(self._wakeup)
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
        while self._pending_syncs:
            nursery.start_soon(self._pending_syncs.pop().run_sync)

    @staticmethod
    async def _hold(handle: RedisHandle, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            client = handle.create()
            async with client:
                handle.client = client
                task_status.started()
                await trio.sleep_forever()
        except Exception as exc:  # entering failed: report and keep the gateway up
            target = handle.target
            log.error("redis client %s:%s failed: %r", target.host, target.port, exc)
            handle.client = None
            task_status.started()


class _Batch:
    """The requests for one key that share one script call."""

    __slots__ = ("done", "error", "requests", "result")

    def __init__(self) -> None:
        self.requests = 1  # the one that opened it
        self.done = trio.Event()
        self.result: list[int] = []
        self.error: RedisUnavailable | None = None


class BatchedScript:
    """One script whose calls for the same key are shared by the requests that arrive
    together.

    While one call for a key is out, the requests that arrive gather into the next batch,
    sent as soon as that call is answered (at most one call per key in flight, per
    process); with none out, the requests of the same scheduling round join. The script
    takes the batch's size as its last argument and decides for the batch exactly as that
    many calls of one request each would, back to back, so the counts stay exact while
    one round trip (and one client call, the costly part in Python) decides for many.
    """

    def __init__(self, handle: RedisHandle, script: str, timeout_s: float) -> None:
        self.handle = handle
        self.script = script
        self.timeout = timeout_s
        self._filling: dict[str, _Batch] = {}  # per key, the batch gathering requests
        self._sent: dict[str, _Batch] = {}  # per key, the batch whose call is out

    async def call(self, key: str, args: list[int | float]) -> tuple[list[int], int]:
        """The script's reply for the batch this request joined, and the request's place
        in it (from 1), within the timeout; raises RedisUnavailable."""
        batch = self._filling.get(key)
        if batch is None:
            batch = self._filling[key] = _Batch()
            await self._send(key, args, batch)
            position = 1
        else:
            batch.requests += 1
            position = batch.requests
            await batch.done.wait()  # the batch's first request sets it, within the timeout
        if batch.error is not None:
            raise batch.error
        return batch.result, position

    async def _send(self, key: str, args: list[int | float], batch: _Batch) -> None:
        """Wait for the call out for `key` (or, with none, let this scheduling round's other
        requests join), then run the script for the whole batch; always sets `batch.done`."""
        try:
            with trio.move_on_after(self.timeout):
                previous = self._sent.get(key)
                if previous is None:
                    await trio.lowlevel.checkpoint()
                else:
                    await previous.done.wait()
                del self._filling[key]  # later requests gather into the next batch
                self._sent[key] = batch
                batch.result = await self.handle.run_script(
                    self.script, key, [*args, batch.requests]
                )
                return
            batch.error = RedisUnavailable(f"no answer within {self.timeout * 1000:.0f} ms")
        except RedisUnavailable as exc:
            batch.error = exc
        except BaseException:
            batch.error = RedisUnavailable("the deciding request was cancelled")
            raise
        finally:
            if self._filling.get(key) is batch:  # it never went out
                del self._filling[key]
            if self._sent.get(key) is batch:
                del self._sent[key]
            batch.done.set()


class RedisWindowStore:
    """A fixed or sliding window counter in Redis, behind one script call per decision,
    shared by the requests for the same key that arrive together (`BatchedScript`)."""

    def __init__(
        self,
        handle: RedisHandle,
        prefix: str,
        limit: int,
        window_s: float,
        sliding: bool,
        timeout_s: float,
    ) -> None:
        self.prefix = prefix
        self.args: list[int | float] = [limit, max(1, int(window_s * 1000))]
        self.calls = BatchedScript(handle, SLIDING_SCRIPT if sliding else FIXED_SCRIPT, timeout_s)

    async def incoming(self, key: str, cost: int) -> Decision:
        """One atomic decision within the conf's `redis_timeout`; raises RedisUnavailable.
        `cost` is 1: every request counts once."""
        (admitted, remaining, reset_ms), position = await self.calls.call(
            self.prefix + key, self.args
        )
        reset = max(1, math.ceil(reset_ms / 1000))
        if position > admitted:
            return Decision(False, 0, reset)
        return Decision(True, max(0, remaining + admitted - position), reset)


class _Pending:
    __slots__ = ("expires", "known", "pending")

    def __init__(self, expires: float) -> None:
        self.known = 0
        self.pending = 0
        self.expires = expires


class SyncedRedisStore:
    """`sync_interval`: decide locally, push the local increments to Redis every interval.

    Approximate by design (for very hot keys): between pushes each gateway only knows the
    global count as of its last push, so the gateways together may let through up to one
    interval's worth of extra requests. Fixed windows only. A Redis failure delays the push;
    decisions go on locally.
    """

    def __init__(
        self,
        handle: RedisHandle,
        prefix: str,
        limit: int,
        window_s: float,
        timeout_s: float,
        interval_s: float,
    ) -> None:
        self.handle = handle
        self.prefix = prefix
        self.limit = limit
        self.window = window_s
        self.window_ms = max(1, int(window_s * 1000))
        self.timeout = timeout_s
        self.interval = interval_s
        self.entries: dict[str, _Pending] = {}
        self.scope = trio.CancelScope()

    async def incoming(self, key: str, cost: int) -> Decision:
        now = trio.current_time()
        entry = self.entries.get(key)
        if entry is None or entry.expires <= now:
            entry = self.entries[key] = _Pending(now + self.window)
        reset = seconds_left(entry.expires - now)
        if entry.known + entry.pending + cost > self.limit:
            return Decision(False, 0, reset)
        entry.pending += cost
        return Decision(True, self.limit - entry.known - entry.pending, reset)

    async def run_sync(self) -> None:
        with self.scope:
            while True:
                await trio.sleep(self.interval)
                await self.push()

    async def push(self) -> None:
        """Send every key's local increment; adopt Redis's total and expiry."""
        now = trio.current_time()
        for key, entry in list(self.entries.items()):
            if entry.expires <= now and not entry.pending:
                del self.entries[key]
                continue
            if not entry.pending:
                continue
            sent = entry.pending
            with trio.move_on_after(self.timeout):
                try:
                    total, ttl_ms = await self.handle.run_script(
                        PUSH_SCRIPT, self.prefix + key, [sent, self.window_ms]
                    )
                except RedisUnavailable as exc:
                    log.warning("limit-count sync: %s", exc)
                    return
                entry.pending -= sent
                entry.known = total
                entry.expires = trio.current_time() + ttl_ms / 1000

    def stop(self) -> None:
        self.scope.cancel()
