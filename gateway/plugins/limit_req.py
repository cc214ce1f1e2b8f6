"""limit-req: hold requests to `rate` per second per key, with `burst` more waiting, as
APISIX's plugin (resty.limit.req's leaky bucket) does.

A request more than `burst` over the rate is refused with `rejected_code` (503); one within
the burst waits until the rate lets it through (`excess / rate` seconds; answered at once
with `nodelay`). A refused request changes nothing. Buckets are scoped like limit-count's
counters: the resource holding the conf, and the conf. `policy: redis` / `redis-cluster`
keep them in Redis (one atomic script per request); when Redis fails the request gets 500,
or passes with `allow_degradation`.
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


class LimitReqConf(KeyedLimitConf, frozen=True, kw_only=True):
    rate: Annotated[float, msgspec.Meta(gt=0)]
    burst: Annotated[float, msgspec.Meta(ge=0)]
    nodelay: bool = False


class LimitReq(Plugin):
    name = "limit-req"
    priority = 1001
    Conf = LimitReqConf

    def __new__(cls, conf: LimitReqConf, env: PluginEnv) -> LimitReq:
        # Each variant's hook is its own class's method: a bound method stored on the
        # instance would hold it in a reference cycle (one per consumer with a limit).
        if cls is LimitReq:
            if conf.policy != "local":
                cls = _RedisLimitReq
            elif conf.nodelay:
                cls = _NodelayLimitReq
        return super().__new__(cls)

    def __init__(self, conf: LimitReqConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.store = env.limits.buckets(env.scope, conf)
        self.sleep = env.limits.sleep
        self.now = env.monotonic
        self.key = key_reader(conf.key_type, conf.key)
        self.nodelay = conf.nodelay
        self.degrade = conf.allow_degradation
        self.rejected = rejected_reply(conf.rejected_code, conf.rejected_msg)
        self.failed = status_reply(500)

    async def access(self, ctx: RequestContext) -> Reply | None:
        """The local bucket's answer, waiting out the delay within the burst."""
        delay = self.store.incoming(self.key(ctx), self.now())
        if delay is None:
            return self.rejected
        if delay >= MIN_DELAY_S:
            await self.sleep(delay)
        return None

    def _access_nodelay(self, ctx: RequestContext) -> Reply | None:
        if self.store.incoming(self.key(ctx), self.now()) is None:
            return self.rejected
        return None

    async def _access_redis(self, ctx: RequestContext) -> Reply | None:
        try:
            delay = await self.store.incoming(self.key(ctx))
        except RedisUnavailable as exc:
            log.error("limit-req: redis failed: %s", exc)
            return None if self.degrade else self.failed
        if delay is None:
            return self.rejected
        if delay >= MIN_DELAY_S and not self.nodelay:
            await self.sleep(delay)
        return None


class _RedisLimitReq(LimitReq):
    """limit-req with `policy: redis` or `redis-cluster` (see `LimitReq.__new__`)."""

    access = LimitReq._access_redis


class _NodelayLimitReq(LimitReq):
    """limit-req with `policy: local` and `nodelay` (see `LimitReq.__new__`)."""

    access = LimitReq._access_nodelay  # type: ignore[assignment]
