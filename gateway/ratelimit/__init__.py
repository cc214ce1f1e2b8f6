"""Rate-limit stores: in process (`local`) or in Redis (`redis`), and the registry that
hands them to limit-count (counters), limit-req (leaky buckets) and limit-conn (requests
in flight) so that they survive a reload.

A store is identified by the resource that holds the plugin conf (route, service,
consumer, consumer group, or a shared `group` name) plus the conf itself. A reload that
compiles the same scope and conf gets the same store back, so its counts carry on; a
changed conf gets a fresh store; stores no config uses any more are dropped.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from gateway.ratelimit.bucket import LeakyBucketStore
from gateway.ratelimit.conn import ConnCounts
from gateway.ratelimit.local import Decision, FixedWindowStore, SlidingWindowStore
from gateway.ratelimit.redis import (
    RedisClients,
    RedisHandle,
    RedisTarget,
    RedisUnavailable,
    RedisWindowStore,
    SyncedRedisStore,
)
from gateway.ratelimit.redis_bucket import RedisBucketStore
from gateway.ratelimit.redis_conn import RedisConnCounts

__all__ = [
    "Decision",
    "FixedWindowStore",
    "LimitRegistry",
    "RedisClients",
    "RedisUnavailable",
    "RedisWindowStore",
    "SlidingWindowStore",
]

_ENCODE = msgspec.json.Encoder().encode


def _prefix(plugin: str, scope: str, encoded: bytes) -> str:
    """The Redis key prefix of one store: its scope and conf, hashed."""
    digest = hashlib.sha256(scope.encode() + b"\0" + encoded).hexdigest()[:32]
    return f"gateway:{plugin}:{digest}:"


class LimitRegistry:
    """Counter stores by (scope, conf); lives as long as the server, across reloads."""

    def __init__(self, redis: RedisClients | None = None) -> None:
        self.redis = redis if redis is not None else RedisClients()
        self._stores: dict[tuple[str, bytes], Any] = {}
        self._used: set[tuple[str, bytes]] = set()

    def store(self, scope: str, conf: Any) -> Any:
        """limit-count's counters for `scope` and `conf`, created on first use."""
        return self._get(scope, "limit-count", conf, self._counters)

    def buckets(self, scope: str, conf: Any) -> Any:
        """limit-req's leaky buckets for `scope` and `conf`, created on first use."""
        return self._get(scope, "limit-req", conf, self._buckets)

    def conns(self, scope: str, conf: Any) -> Any:
        """limit-conn's counts of requests in flight for `scope` and `conf`."""
        return self._get(scope, "limit-conn", conf, self._conns)

    def _get(self, scope: str, plugin: str, conf: Any, create: Callable[[Any, str], Any]) -> Any:
        encoded = _ENCODE(conf)
        key = (scope, plugin.encode() + b":" + encoded)
        self._used.add(key)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = create(conf, _prefix(plugin, scope, encoded))
        return store

    def connect(self, conf: Any) -> None:
        """Have the Redis client of `conf`'s policy connected when serving starts, for
        stores made per request later (limit-count's amounts read from variables)."""
        if conf.policy != "local":
            self._redis_handle(conf)

    @staticmethod
    async def sleep(seconds: float) -> None:
        """limit-req's wait for a request within its burst."""
        await trio.sleep(seconds)

    def _redis_handle(self, conf: Any) -> RedisHandle:
        host, port = conf.redis_host, conf.redis_port
        cluster = conf.policy == "redis-cluster"
        if cluster and conf.redis_cluster_nodes:
            # Any node introduces the client to the whole cluster.
            host, _, node_port = conf.redis_cluster_nodes[0].rpartition(":")
            port = int(node_port)
        return self.redis.handle(
            RedisTarget(
                host,
                port,
                conf.redis_username,
                conf.redis_password,
                conf.redis_database,
                cluster,
                conf.redis_cluster_ssl if cluster else conf.redis_ssl,
                conf.redis_cluster_ssl_verify if cluster else conf.redis_ssl_verify,
                conf.redis_keepalive_pool,
                math.ceil(conf.redis_keepalive_timeout / 1000),
            )
        )

    def _counters(self, conf: Any, prefix: str) -> Any:
        sliding = conf.window_type == "sliding"
        if conf.policy == "local":
            cls = SlidingWindowStore if sliding else FixedWindowStore
            return cls(conf.count, conf.time_window)
        handle = self._redis_handle(conf)
        timeout = conf.redis_timeout / 1000
        if conf.sync_interval is not None:
            synced = SyncedRedisStore(
                handle, prefix, conf.count, conf.time_window, timeout, conf.sync_interval
            )
            self.redis.add_sync(synced)
            return synced
        return RedisWindowStore(handle, prefix, conf.count, conf.time_window, sliding, timeout)

    def _buckets(self, conf: Any, prefix: str) -> Any:
        if conf.policy == "local":
            return LeakyBucketStore(conf.rate, conf.burst)
        handle = self._redis_handle(conf)
        return RedisBucketStore(handle, prefix, conf.rate, conf.burst, conf.redis_timeout / 1000)

    def _conns(self, conf: Any, prefix: str) -> Any:
        counts = ConnCounts(
            conf.conn, conf.burst, conf.default_conn_delay, not conf.only_use_default_delay
        )
        if conf.policy == "local":
            return counts
        handle = self._redis_handle(conf)
        store = RedisConnCounts(handle, prefix, counts, conf.key_ttl, conf.redis_timeout / 1000)
        self.redis.add_sync(store)
        return store

    def take_used(self) -> frozenset[tuple[str, bytes]]:
        """The stores asked for since the last call (one compile's worth)."""
        used = frozenset(self._used)
        self._used.clear()
        return used

    def retain(self, keys: frozenset[tuple[str, bytes]]) -> None:
        """Drop every store the live config no longer uses."""
        for key in [k for k in self._stores if k not in keys]:
            store = self._stores.pop(key)
            if isinstance(store, SyncedRedisStore | RedisConnCounts):
                store.stop()

    def __len__(self) -> int:
        return len(self._stores)
