"""What limit-count and limit-req share: the policy with its Redis fields (APISIX's
`redis` and `redis-cluster` schemas), and the key a request counts under.

The key comes from request variables (`remote_addr` by default, or `consumer_name`,
`route_id`, `service_id`, `http_<header>`, `arg_<name>`; `var_combination` joins several,
`"$consumer_name-$http_x_app"`); an absent or empty value falls back to `remote_addr`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, error_msg, status_reply
from gateway.pipeline import PluginConf
from gateway.variables import Getter, getter

_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
# `http_<header name>` (`_` for `-`) or `arg_<query argument>`.
_REQUEST_VARIABLE = re.compile(r"http_[A-Za-z0-9_-]+|arg_.+")
_KEY_VARIABLES = frozenset(("remote_addr", "consumer_name", "route_id", "service_id"))

KeyReader = Callable[[RequestContext], str]
# resty.limit.req / resty.limit.conn and APISIX skip waits below a millisecond.
MIN_DELAY_S = 0.001


class RedisPolicyConf(PluginConf, frozen=True, kw_only=True):
    """`policy` and the fields of the Redis it names."""

    policy: Literal["local", "redis", "redis-cluster"] = "local"
    allow_degradation: bool = False
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


class KeyedLimitConf(RedisPolicyConf, frozen=True, kw_only=True):
    """limit-req's and limit-conn's common fields: a required key, and the refusal."""

    key: Annotated[str, msgspec.Meta(min_length=1)]
    key_type: Literal["var", "var_combination"] = "var"
    rejected_code: Annotated[int, msgspec.Meta(ge=200, le=599)] = 503
    rejected_msg: Annotated[str, msgspec.Meta(min_length=1)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_key(self.key_type, self.key)


@functools.lru_cache(maxsize=1024)
def rejected_reply(code: int, text: str | None) -> Reply:
    """A limit's refusal: `{"error_msg": rejected_msg}`, or the status's own text (one
    Reply for every conf that says the same: a Reply is never changed)."""
    return error_msg(code, text) if text is not None else status_reply(code)


def check_key(key_type: str, key: str) -> None:
    """Raises ValueError for a key that names a variable the limits cannot read."""
    if key_type == "var" and not _var_supported(key):
        raise ValueError(f"unsupported key variable {key!r}")
    if key_type == "var_combination":
        names = _VARIABLE.findall(key)
        if not names:
            raise ValueError("var_combination `key` must name variables like `$remote_addr`")
        for name in names:
            if not _var_supported(name):
                raise ValueError(f"unsupported key variable {name!r}")


def _var_supported(name: str) -> bool:
    return name in _KEY_VARIABLES or _REQUEST_VARIABLE.fullmatch(name) is not None


@functools.lru_cache(maxsize=1024)
def key_reader(key_type: str, key: str) -> KeyReader:
    """The function giving a request's key (`constant`, `var` or `var_combination`); one
    per key for every conf that names it (a limit per consumer would otherwise hold a
    closure each)."""
    if key_type == "constant":
        return lambda ctx: key
    if key_type == "var":
        key_var = getter(key)
        return lambda ctx: key_var(ctx) or ctx.remote_addr
    parts: list[str | Getter] = []
    pos = 0
    for m in _VARIABLE.finditer(key):
        if m.start() > pos:
            parts.append(key[pos : m.start()])
        parts.append(getter(m.group(1)))
        pos = m.end()
    if pos < len(key):
        parts.append(key[pos:])

    def combined(ctx: RequestContext) -> str:
        joined = "".join([p if isinstance(p, str) else (p(ctx) or "") for p in parts])
        return joined if joined.strip() else ctx.remote_addr

    return combined
