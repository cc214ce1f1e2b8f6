"""limit-conn: at most `conn` requests in flight per key, `burst` more waiting, as APISIX's
plugin (resty.limit.conn) does.

A request that would make more than `conn + burst` in flight is refused with
`rejected_code` (503). Beyond `conn` it goes on after `default_conn_delay` for every `conn`
ahead of it; unless `only_use_default_delay`, that delay follows the upstream's answer
times. The place is given back in the log phase, when the request has ended whatever the
outcome. Counts are scoped like limit-count's counters; `policy: redis` / `redis-cluster`
keep them in Redis (an expiry of `key_ttl` seconds frees places a killed gateway never gave
back). When Redis fails the request gets 500, or passes with `allow_degradation`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, status_reply
from gateway.pipeline import Plugin, PluginEnv
from gateway.plugins.rate_limits import (
    MIN_DELAY_S,
    KeyedLimitConf,
    key_reader,
    rejected_reply,
)
from gateway.ratelimit import RedisUnavailable

log = logging.getLogger("gateway")


class LimitConnConf(KeyedLimitConf, frozen=True, kw_only=True):
    conn: Annotated[int, msgspec.Meta(gt=0)]
    burst: Annotated[int, msgspec.Meta(ge=0)]
    default_conn_delay: Annotated[float, msgspec.Meta(gt=0)]
    only_use_default_delay: bool = False
    key_ttl: Annotated[int, msgspec.Meta(gt=0)] = 3600  # s; the redis policies


class LimitConn(Plugin):
    name = "limit-conn"
    priority = 1003
    Conf = LimitConnConf
    # `_meta.filter` never skips `log`: a place taken is given back whatever the filter
    # says by then.
    log_gives_back = True

    def __init__(self, conf: LimitConnConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.store = env.limits.conns(env.scope, conf)
        self.sleep = env.limits.sleep
        self.key = key_reader(conf.key_type, conf.key)
        self.redis = conf.policy != "local"
        self.degrade = conf.allow_degradation
        self.learn = not conf.only_use_default_delay
        self.rejected = rejected_reply(conf.rejected_code, conf.rejected_msg)
        self.failed = status_reply(500)

    async def access(self, ctx: RequestContext) -> Reply | None:
        """Takes a place (kept in `ctx.leases` until `log`), waiting when beyond `conn`."""
        key = self.key(ctx)
        if self.redis:
            try:
                delay = await self.store.incoming(key)
            except RedisUnavailable as exc:
                log.error("limit-conn: redis failed: %s", exc)
                return None if self.degrade else self.failed
        else:
            delay = self.store.incoming(key)
        if delay is None:
            return self.rejected
        if ctx.leases is None:
            ctx.leases = []
        ctx.leases.append((self.store, key))
        if delay >= MIN_DELAY_S:
            await self.sleep(delay)
        return None

    def log(self, ctx: RequestContext) -> None:
        """Gives this plugin's places back; the answer time teaches the delay."""
        leases = ctx.leases
        if not leases:
            return
        latency = ctx.upstream_time if self.learn and ctx.upstream_time >= 0 else None
        store = self.store
        for held, key in leases:
            if held is store:
                store.leaving(key, latency)
