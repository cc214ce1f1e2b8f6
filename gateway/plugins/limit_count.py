"""limit-count: at most `count` requests per `time_window` seconds per key.

The key comes from request variables (`remote_addr` by default, or `consumer_name`,
`route_id`, `service_id`, `http_<header>`, `arg_<name>`; an absent value falls back to
`remote_addr`). Counters are scoped by the resource that holds the conf (route, service,
consumer, consumer group) and the conf; `group` shares one counter among every resource
using that name. `policy: local` counts in process; `redis` / `redis-cluster` share the
quota among every gateway using that Redis, with `redis_timeout` (ms) per decision and
500 `{"error_msg":"failed to limit count"}` when Redis fails (or a pass with
`allow_degradation`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, error_msg
from gateway.pipeline import Plugin, PluginEnv
from gateway.plugins.rate_limits import RedisPolicyConf, check_key, key_reader, rejected_reply
from gateway.ratelimit import Decision, RedisUnavailable

log = logging.getLogger("gateway")

LIMIT = b"x-ratelimit-limit"
REMAINING = b"x-ratelimit-remaining"
RESET = b"x-ratelimit-reset"
FAILED = error_msg(500, "failed to limit count")


class LimitCountConf(RedisPolicyConf, frozen=True, kw_only=True):
    count: Annotated[int, msgspec.Meta(gt=0)]
    time_window: Annotated[int, msgspec.Meta(gt=0)]
    window_type: Literal["fixed", "sliding"] = "fixed"
    key_type: Literal["var", "var_combination", "constant"] = "var"
    key: Annotated[str, msgspec.Meta(min_length=1)] = "remote_addr"
    rejected_code: Annotated[int, msgspec.Meta(ge=200, le=599)] = 503
    rejected_msg: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    show_limit_quota_header: bool = True
    group: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    sync_interval: Annotated[float, msgspec.Meta(gt=0)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sync_interval is not None:
            if self.policy == "local":
                raise ValueError("`sync_interval` applies to the redis policies only")
            if self.window_type == "sliding":
                raise ValueError("`sync_interval` supports fixed windows only")
        check_key(self.key_type, self.key)


class LimitCount(Plugin):
    name = "limit-count"
    priority = 1002
    Conf = LimitCountConf

    def __init__(self, conf: LimitCountConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        scope = f"group:{conf.group}" if conf.group else env.scope
        self.store = env.limits.store(scope, conf)
        self.now = env.monotonic
        # APISIX's `plugin_metadata` for limit-count may rename the three quota headers.
        shared = env.metadata.get("limit-count")
        names = [
            (getattr(shared, field, None) or "").lower().encode() or default
            for field, default in (
                ("limit_header", LIMIT),
                ("remaining_header", REMAINING),
                ("reset_header", RESET),
            )
        ]
        self.limit_header = (names[0], str(conf.count).encode())
        self.remaining_name, self.reset_name = names[1], names[2]
        self.show_headers = conf.show_limit_quota_header
        self.degrade = conf.allow_degradation
        self.rejected_code = conf.rejected_code
        self.rejected = rejected_reply(conf.rejected_code, conf.rejected_msg)
        self.key = key_reader(conf.key_type, conf.key)
        if conf.policy != "local":
            self.access = self._access_redis  # type: ignore[method-assign,assignment]

    def access(self, ctx: RequestContext) -> Reply | None:
        decision = self.store.incoming(self.key(ctx), 1, self.now())
        return self._apply(ctx, decision)

    async def _access_redis(self, ctx: RequestContext) -> Reply | None:
        try:
            decision = await self.store.incoming(self.key(ctx), 1)
        except RedisUnavailable as exc:
            log.error("limit-count: redis failed: %s", exc)
            return None if self.degrade else FAILED
        return self._apply(ctx, decision)

    def _apply(self, ctx: RequestContext, decision: Decision) -> Reply | None:
        if self.show_headers:
            headers = [
                self.limit_header,
                (self.remaining_name, str(decision.remaining).encode()),
                (self.reset_name, str(decision.reset).encode()),
            ]
            ctx.add_response_headers(headers)
        if decision.allowed:
            return None
        return self.rejected
