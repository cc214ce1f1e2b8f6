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
import re
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, error_msg, status_reply
from gateway.pipeline import Plugin, PluginConf, PluginEnv
from gateway.ratelimit import Decision, RedisUnavailable
from gateway.variables import Getter, getter

log = logging.getLogger("gateway")

_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# `http_<header name>` (`_` for `-`) or `arg_<query argument>`.
_REQUEST_VARIABLE = re.compile(r"http_[A-Za-z0-9_-]+|arg_.+")
_KEY_VARIABLES = frozenset(("remote_addr", "consumer_name", "route_id", "service_id"))
LIMIT = b"x-ratelimit-limit"
REMAINING = b"x-ratelimit-remaining"
RESET = b"x-ratelimit-reset"


class LimitCountConf(PluginConf, frozen=True, kw_only=True):
    count: Annotated[int, msgspec.Meta(gt=0)]
    time_window: Annotated[int, msgspec.Meta(gt=0)]
    window_type: Literal["fixed", "sliding"] = "fixed"
    key_type: Literal["var", "var_combination", "constant"] = "var"
    key: Annotated[str, msgspec.Meta(min_length=1)] = "remote_addr"
    rejected_code: Annotated[int, msgspec.Meta(ge=200, le=599)] = 503
    rejected_msg: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    policy: Literal["local", "redis", "redis-cluster"] = "local"
    allow_degradation: bool = False
    show_limit_quota_header: bool = True
    group: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    sync_interval: Annotated[float, msgspec.Meta(gt=0)] | None = None
    redis_host: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    redis_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 6379
    redis_username: str | None = None
    redis_password: str | None = None
    redis_database: Annotated[int, msgspec.Meta(ge=0)] = 0
    redis_timeout: Annotated[int, msgspec.Meta(ge=1)] = 1000
    redis_ssl: bool = False
    redis_ssl_verify: bool = False
    # The client's pool: at most this many connections, each closed after this idle time.
    redis_keepalive_pool: Annotated[int, msgspec.Meta(ge=1)] = 100
    redis_keepalive_timeout: Annotated[int, msgspec.Meta(ge=1000)] = 10000  # ms
    redis_cluster_nodes: (
        Annotated[
            list[Annotated[str, msgspec.Meta(pattern=r"^.+:[0-9]{1,5}\Z")]],
            msgspec.Meta(min_length=1),
        ]
        | None
    ) = None
    redis_cluster_name: str | None = None
    redis_cluster_ssl: bool = False
    redis_cluster_ssl_verify: bool = False

    def __post_init__(self) -> None:
        if self.policy != "local" and self.redis_host is None and not self.redis_cluster_nodes:
            raise ValueError(f"policy `{self.policy}` needs `redis_host`")
        if self.sync_interval is not None:
            if self.policy == "local":
                raise ValueError("`sync_interval` applies to the redis policies only")
            if self.window_type == "sliding":
                raise ValueError("`sync_interval` supports fixed windows only")
        if self.key_type == "var" and not _var_supported(self.key):
            raise ValueError(f"unsupported key variable {self.key!r}")
        if self.key_type == "var_combination":
            names = _VARIABLE.findall(self.key)
            if not names:
                raise ValueError("var_combination `key` must name variables like `$remote_addr`")
            for name in names:
                if not _var_supported(name):
                    raise ValueError(f"unsupported key variable {name!r}")


def _var_supported(name: str) -> bool:
    return name in _KEY_VARIABLES or _REQUEST_VARIABLE.fullmatch(name) is not None


class LimitCount(Plugin):
    name = "limit-count"
    priority = 1002
    Conf = LimitCountConf

    def __init__(self, conf: LimitCountConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        scope = f"group:{conf.group}" if conf.group else env.scope
        self.store = env.limits.store(scope, conf)
        self.now = env.monotonic
        self.limit_header = (LIMIT, str(conf.count).encode())
        self.show_headers = conf.show_limit_quota_header
        self.degrade = conf.allow_degradation
        self.rejected_code = conf.rejected_code
        if conf.rejected_msg is not None:
            self.rejected = error_msg(conf.rejected_code, conf.rejected_msg)
        else:
            self.rejected = status_reply(conf.rejected_code)
        self.failed = error_msg(500, "failed to limit count")
        if conf.key_type == "constant":
            constant = conf.key
            self.key: Callable[[RequestContext], str] = lambda ctx: constant
        elif conf.key_type == "var":
            key_var = getter(conf.key)
            self.key = lambda ctx: key_var(ctx) or ctx.remote_addr
        else:
            self.key = self._combination(conf.key)
        if conf.policy != "local":
            self.access = self._access_redis  # type: ignore[method-assign,assignment]

    @staticmethod
    def _combination(template: str) -> Callable[[RequestContext], str]:
        parts: list[str | Getter] = []
        pos = 0
        for m in _VARIABLE.finditer(template):
            if m.start() > pos:
                parts.append(template[pos : m.start()])
            parts.append(getter(m.group(1)))
            pos = m.end()
        if pos < len(template):
            parts.append(template[pos:])

        def key(ctx: RequestContext) -> str:
            values = [p if isinstance(p, str) else (p(ctx) or "") for p in parts]
            joined = "".join(values)
            return joined if joined.strip() else ctx.remote_addr

        return key

    def access(self, ctx: RequestContext) -> Reply | None:
        decision = self.store.incoming(self.key(ctx), 1, self.now())
        return self._apply(ctx, decision)

    async def _access_redis(self, ctx: RequestContext) -> Reply | None:
        try:
            decision = await self.store.incoming(self.key(ctx), 1)
        except RedisUnavailable as exc:
            log.error("limit-count: redis failed: %s", exc)
            return None if self.degrade else self.failed
        return self._apply(ctx, decision)

    def _apply(self, ctx: RequestContext, decision: Decision) -> Reply | None:
        if self.show_headers:
            headers = [
                self.limit_header,
                (REMAINING, str(decision.remaining).encode()),
                (RESET, str(decision.reset).encode()),
            ]
            ctx.add_response_headers(headers)
        if decision.allowed:
            return None
        return self.rejected
