"""proxy-cache: answers kept in memory and served again without asking the upstream, as
APISIX's plugin with its memory strategy.

A request whose method is in `cache_method` is looked up by `cache_key` (variables and
constants, joined) in the zone `cache_zone`. A fresh entry is the answer (`Apisix-Cache-
Status: HIT`); otherwise the upstream's answer goes out marked `MISS` (`EXPIRED` when the
entry had aged out, `BYPASS` when a `cache_bypass` variable is set: not empty, not "0")
and is kept for `cache_ttl` seconds when its status is in `cache_http_status`, no
`no_cache` variable is set and the whole body went out. With `cache_control`, a request's
`Cache-Control: no-cache` / `no-store` bypasses the cache, and a response's `no-store`,
`no-cache` or `private` is not kept, its `s-maxage` / `max-age` (when given) setting the
time instead of `cache_ttl`. `hide_cache_headers` drops Cache-Control and Expires from the
answers. Priority 1085: access (lookup) and header filter.

(ours) `cache_strategy: disk` is served from memory as well. A zone holds 50 MiB, the least
recently used entries going first, and an entry at most 8 MiB; zones are per process and
outlive reloads. An answer with Set-Cookie is never kept (nginx's default), nor a HEAD
answer (it has no body to serve a GET); a HEAD request is served from a GET's entry.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

import msgspec

from gateway.cache import CacheZones, Entry
from gateway.context import BodyCopy, RequestContext
from gateway.http.headers import client_response_headers
from gateway.http.replies import Reply
from gateway.pipeline import Header, Plugin, PluginConf, PluginEnv
from gateway.template import Template, config_template
from gateway.upstream.framing import ResponseHead

MAX_ENTRY: Final = 8 * 1024 * 1024
STATUS_HEADER: Final = b"apisix-cache-status"
_NOT_KEPT: Final = frozenset(
    (b"content-length", b"transfer-encoding", b"date", STATUS_HEADER, b"connection")
)
_HIDDEN: Final = frozenset((b"cache-control", b"expires"))
_MAX_AGE: Final = re.compile(rb"(?:^|[,\s])(s-maxage|max-age)\s*=\s*\"?(\d+)")
_TOKEN: Final = re.compile(rb"[^,\s=]+")

CacheVar = Annotated[str, msgspec.Meta(pattern=r"^\$[A-Za-z0-9_]+\Z")]


class ProxyCacheConf(PluginConf, frozen=True, kw_only=True):
    cache_strategy: Literal["disk", "memory"] = "disk"
    cache_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "disk_cache_one"
    cache_key: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)
    ] = msgspec.field(default_factory=lambda: ["$host", "$request_uri"])
    cache_bypass: Annotated[list[CacheVar], msgspec.Meta(min_length=1)] | None = None
    cache_method: Annotated[list[Literal["GET", "POST", "HEAD"]], msgspec.Meta(min_length=1)] = (
        msgspec.field(default_factory=lambda: ["GET", "HEAD"])
    )
    cache_http_status: Annotated[
        list[Annotated[int, msgspec.Meta(ge=200, le=599)]], msgspec.Meta(min_length=1)
    ] = msgspec.field(default_factory=lambda: [200, 301, 404])
    hide_cache_headers: bool = False
    cache_control: bool = False
    no_cache: Annotated[list[CacheVar], msgspec.Meta(min_length=1)] | None = None
    cache_ttl: Annotated[int, msgspec.Meta(ge=1)] = 300


class Lookup:
    """A cacheable request's state between its lookup and its answer."""

    __slots__ = ("headers", "key", "label", "ttl")

    def __init__(self, key: bytes, label: bytes) -> None:
        self.key = key
        self.label = label
        self.ttl = 0.0
        self.headers: list[Header] = []  # the upstream's, once the answer may be kept


def _directives(value: bytes | None) -> set[bytes]:
    return {t.lower() for t in _TOKEN.findall(value)} if value else set()


class ProxyCache(Plugin):
    name = "proxy-cache"
    priority = 1085
    Conf = ProxyCacheConf

    def __init__(self, conf: ProxyCacheConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        zones: CacheZones = env.caches if env.caches is not None else CacheZones()
        self.zone = zones.zone(conf.cache_zone)
        self.methods = frozenset(m.encode() for m in conf.cache_method)
        self.key_parts: list[Template] = [config_template(part) for part in conf.cache_key]
        self.bypass = [config_template(v) for v in conf.cache_bypass or ()]
        self.no_cache = [config_template(v) for v in conf.no_cache or ()]
        self.statuses = frozenset(conf.cache_http_status)
        self.ttl = float(conf.cache_ttl)
        self.respect = conf.cache_control
        self.hide = conf.hide_cache_headers
        self.monotonic = env.monotonic

    @staticmethod
    def _any_set(templates: list[Template], ctx: RequestContext) -> bool:
        for template in templates:
            value = template.render(ctx)
            if value and value != "0":
                return True
        return False

    def access(self, ctx: RequestContext) -> Reply | None:
        if ctx.method not in self.methods:
            return None
        key = "\0".join(part.render(ctx) for part in self.key_parts).encode("latin-1")
        if self._any_set(self.bypass, ctx) or (
            self.respect and _directives(ctx.header(b"cache-control")) & {b"no-cache", b"no-store"}
        ):
            ctx.proxy_cache = Lookup(key, b"BYPASS")
            return None
        cache = self.zone
        entry = cache.get(key)
        if entry is not None:
            if self.monotonic() < entry.expires:
                ctx.proxy_cache = Lookup(key, b"HIT")
                return Reply(entry.status, [*entry.headers, (STATUS_HEADER, b"HIT")], entry.body)
            cache.drop(key)
            ctx.proxy_cache = Lookup(key, b"EXPIRED")
            return None
        ctx.proxy_cache = Lookup(key, b"MISS")
        return None

    def header_filter(self, ctx: RequestContext, status: int, headers: list[Header]) -> None:
        lookup: Lookup | None = ctx.proxy_cache
        if lookup is None:
            return
        if self.hide:
            headers[:] = [h for h in headers if h[0] not in _HIDDEN]
        if lookup.label == b"HIT":
            return
        headers.append((STATUS_HEADER, lookup.label))
        head = ctx.response_head
        if (
            status not in self.statuses
            or ctx.method == b"HEAD"
            or not isinstance(head, ResponseHead)
            or self._any_set(self.no_cache, ctx)
        ):
            return
        ttl = self.ttl
        kept = head.headers
        if any(name == b"set-cookie" for name, _ in kept):
            return
        if self.respect:
            control = b",".join(v for n, v in kept if n == b"cache-control")
            if _directives(control) & {b"no-store", b"no-cache", b"private"}:
                return
            ages = dict((m.group(1).lower(), int(m.group(2))) for m in _MAX_AGE.finditer(control))
            given = ages.get(b"s-maxage", ages.get(b"max-age"))
            if given is not None:
                if given <= 0:
                    return
                ttl = float(given)
        lookup.ttl = ttl
        lookup.headers = kept
        ctx.response_copy = BodyCopy.asked(ctx.response_copy, MAX_ENTRY)

    def log(self, ctx: RequestContext) -> None:
        lookup: Lookup | None = ctx.proxy_cache
        copy = ctx.response_copy
        if lookup is None or not lookup.ttl or copy is None:
            return
        if not copy.complete or copy.truncated or len(copy.data) > MAX_ENTRY:
            return
        head = ctx.response_head
        assert isinstance(head, ResponseHead)
        headers = [
            h
            for h in client_response_headers(lookup.headers, status=head.status, no_body=False)
            if h[0] not in _NOT_KEPT
        ]
        entry = Entry(head.status, headers, bytes(copy.data), self.monotonic() + lookup.ttl)
        self.zone.put(lookup.key, entry)
