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
from gateway.pipeline import Conf, Plugin, PluginEnv
from gateway.plugins.limit_rules import VariedLimits, check_rule_key, is_variable
from gateway.plugins.rate_limits import RedisPolicyConf, check_key, key_reader, rejected_reply
from gateway.ratelimit import Decision, RedisUnavailable

log = logging.getLogger("gateway")

LIMIT = b"x-ratelimit-limit"
REMAINING = b"x-ratelimit-remaining"
RESET = b"x-ratelimit-reset"
FAILED = error_msg(500, "failed to limit count")


# A count or a window: a positive integer, or (APISIX 3.16) a variable's name, read per
# request (see `limit_rules`).
Amount = (
    Annotated[int, msgspec.Meta(gt=0)]
    | Annotated[str, msgspec.Meta(pattern=r"^(\$[A-Za-z_][A-Za-z0-9_]*|[1-9][0-9]{0,15})\Z")]
)


class LimitRule(Conf, frozen=True, kw_only=True):
    count: Amount
    time_window: Amount
    key: Annotated[str, msgspec.Meta(min_length=1)]
    header_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+\Z")] | None = None

    def __post_init__(self) -> None:
        check_rule_key(self.key)


class LimitCountConf(RedisPolicyConf, frozen=True, kw_only=True):
    count: Amount | None = None
    time_window: Amount | None = None
    rules: Annotated[list[LimitRule], msgspec.Meta(min_length=1)] | None = None
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
        if self.rules is None and (self.count is None or self.time_window is None):
            raise ValueError("takes `count` and `time_window`, or `rules`")
        if self.rules is not None and (self.count is not None or self.time_window is not None):
            raise ValueError("takes `rules` or `count` and `time_window`, not both")
        if self.sync_interval is not None and self.varied:
            raise ValueError("`sync_interval` takes a fixed `count` and `time_window`")
        if self.sync_interval is not None:
            if self.policy == "local":
                raise ValueError("`sync_interval` applies to the redis policies only")
            if self.window_type == "sliding":
                raise ValueError("`sync_interval` supports fixed windows only")
        check_key(self.key_type, self.key)

    @property
    def varied(self) -> bool:
        """Rules, or an amount read per request (`limit_rules`)."""
        return self.rules is not None or is_variable(self.count) or is_variable(self.time_window)


class LimitCount(Plugin):
    name = "limit-count"
    priority = 1002
    Conf = LimitCountConf

    def __new__(cls, conf: LimitCountConf, env: PluginEnv) -> LimitCount:
        # The Redis policy's hook is its own class's method: a bound method stored on the
        # instance would hold it in a reference cycle (one per consumer with a limit).
        if cls is LimitCount and conf.policy != "local" and not conf.varied:
            cls = _RedisLimitCount
        return super().__new__(cls)

    def __init__(self, conf: LimitCountConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        scope = f"group:{conf.group}" if conf.group else env.scope
        self.now = env.monotonic
        # APISIX's `plugin_metadata` for limit-count may rename the three quota headers.
        shared = env.metadata.get("limit-count")

        def header(field: str, default: bytes) -> bytes:
            value = getattr(shared, field, None)
            return value.lower().encode() if value else default

        names = (
            header("limit_header", LIMIT),
            header("remaining_header", REMAINING),
            header("reset_header", RESET),
        )
        self.rejected = rejected_reply(conf.rejected_code, conf.rejected_msg)
        self.rejected_code = conf.rejected_code
        self.show_headers = conf.show_limit_quota_header
        self.degrade = conf.allow_degradation
        if conf.varied:
            varied = VariedLimits(conf, env, scope, names, self.rejected, FAILED)
            self.access = varied.access  # type: ignore[method-assign,assignment]
            return
        assert conf.count is not None
        assert conf.time_window is not None
        if isinstance(conf.count, str) or isinstance(conf.time_window, str):  # "100"
            conf = msgspec.structs.replace(
                conf, count=int(conf.count), time_window=int(conf.time_window)
            )
        self.store = env.limits.store(scope, conf)
        self.limit_header = (names[0], str(conf.count).encode())
        self.remaining_name, self.reset_name = names[1], names[2]
        self.key = key_reader(conf.key_type, conf.key)

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


class _RedisLimitCount(LimitCount):
    """limit-count with `policy: redis` or `redis-cluster` (see `LimitCount.__new__`)."""

    access = LimitCount._access_redis  # type: ignore[assignment]
