"""cors: answer browsers' cross-origin checks, as APISIX's plugin does.

Priority 4000, above the auth plugins: an `OPTIONS` request (a preflight) is answered 200
in the rewrite phase, before any credential is asked for. The CORS headers are set in the
header filter, so they reach the client on every answer of the route: the upstream's (whose
own copies they replace) and the gateway's (a 401 included, which the browser could not
read otherwise).

The allowed origin is `allow_origins` (`*`; `**`, the request's Origin whatever it is; one
origin; or a comma-separated list, of which the request's Origin is echoed), or, when
given, the first match of `allow_origins_by_regex` (searched, not anchored, as APISIX's
`ngx.re.find`). With `allow_origins_by_metadata`, the named lists of `plugin_metadata`
cors' `allow_origins` come first (then the conf's own only if `allow_origins` is not `*`).
An Origin that is not allowed gets no CORS header. `Timing-Allow-Origin`
follows `timing_allow_origins(_by_regex)` the same way.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.config.fields import HeaderText
from gateway.context import RequestContext
from gateway.http.replies import Reply
from gateway.patterns import Pattern, any_of
from gateway.pipeline import Header, Plugin, PluginConf, PluginEnv

# APISIX's pattern for an origin list, without control characters (they would break the
# response head), and `\Z` for Lua's end of string.
_ORIGIN = r"\w+://[^,\x00-\x1f\x7f]+"
Origins = Annotated[str, msgspec.Meta(pattern=rf"^(\*|\*\*|null|{_ORIGIN}(,{_ORIGIN})*)\Z")]
OriginRegexes = Annotated[
    list[Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]], msgspec.Meta(min_length=1)
]

ALL_METHODS = b"GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE"
ALLOW_ORIGIN = b"access-control-allow-origin"
ALLOW_METHODS = b"access-control-allow-methods"
ALLOW_HEADERS = b"access-control-allow-headers"
EXPOSE_HEADERS = b"access-control-expose-headers"
MAX_AGE = b"access-control-max-age"
ALLOW_CREDENTIALS = b"access-control-allow-credentials"
TIMING_ALLOW_ORIGIN = b"timing-allow-origin"
REQUEST_HEADERS = b"access-control-request-headers"
VARY_ORIGIN = (b"vary", b"Origin")
TIMING_ONLY = frozenset({TIMING_ALLOW_ORIGIN})
PREFLIGHT = Reply(200, [])


class CorsConf(PluginConf, frozen=True, kw_only=True):
    allow_origins: Origins = "*"
    allow_methods: HeaderText = "*"
    allow_headers: HeaderText = "*"
    expose_headers: HeaderText | None = None
    max_age: int = 5
    allow_credential: bool = False
    allow_origins_by_regex: OriginRegexes | None = None
    timing_allow_origins: Origins | None = None
    timing_allow_origins_by_regex: OriginRegexes | None = None
    # Keys of `plugin_metadata` cors' `allow_origins` (a key it lacks allows nothing).
    allow_origins_by_metadata: Annotated[list[str], msgspec.Meta(min_length=1)] | None = None

    def __post_init__(self) -> None:
        if self.allow_credential and "*" in (
            self.allow_origins,
            self.allow_methods,
            self.allow_headers,
            self.expose_headers,
        ):
            raise ValueError("you can not set '*' for other option when 'allow_credential' is true")
        for regexes in (self.allow_origins_by_regex, self.timing_allow_origins_by_regex):
            if regexes is not None:
                if len(set(regexes)) != len(regexes):
                    raise ValueError("origin regexes must be unique")
                _compile(regexes)


def _compile(regexes: list[str]) -> Pattern:
    """One pattern for the list (APISIX joins them with `|`); ValueError when one is bad."""
    return any_of(regexes, "origin regex")


class OriginRule:
    """Which origin a request's Origin is allowed as (None: not allowed), for one
    `*_origins` / `*_origins_by_regex` pair."""

    __slots__ = ("listed", "regex", "value")

    def __init__(self, origins: str, regexes: list[str] | None) -> None:
        self.regex = _compile(regexes) if regexes is not None else None
        self.value = origins.encode()
        self.listed = frozenset(self.value.split(b",")) if b"," in self.value else None

    def allowed(self, origin: bytes | None) -> bytes | None:
        if self.regex is not None:
            if origin is not None and self.regex.search(origin.decode("latin-1")):
                return origin
            return None
        value = self.value
        if value == b"**":
            if origin is None:
                return b"*"
            if b"," in origin:  # APISIX splits the echoed Origin as a list: never in it
                return None
            return origin
        if self.listed is not None:
            return origin if origin in self.listed else None
        return value if value == b"*" or value == origin else None


class Cors(Plugin):
    name = "cors"
    priority = 4000
    Conf = CorsConf

    def __init__(self, conf: CorsConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.origins = OriginRule(conf.allow_origins, conf.allow_origins_by_regex)
        self.by_metadata: list[OriginRule] | None = None
        if conf.allow_origins_by_metadata is not None:
            shared = getattr(env.metadata.get("cors"), "allow_origins", None) or {}
            self.by_metadata = [
                OriginRule(shared[key], None)
                for key in conf.allow_origins_by_metadata
                if key in shared
            ]
        # APISIX asks the conf's own origins (or regexes) after the metadata's only when
        # `allow_origins` is set to something other than the default `*`.
        self.own_after_metadata = conf.allow_origins != "*"
        self.timing = (
            OriginRule(conf.timing_allow_origins or "", conf.timing_allow_origins_by_regex)
            if conf.timing_allow_origins or conf.timing_allow_origins_by_regex
            else None
        )
        self.vary = conf.allow_origins != "*" or self.by_metadata is not None
        methods = conf.allow_methods.encode()
        # The headers set whatever the request, after Access-Control-Allow-Origin.
        fixed: list[Header] = [
            (ALLOW_METHODS, ALL_METHODS if methods == b"**" else methods),
            (MAX_AGE, str(conf.max_age).encode()),
        ]
        if conf.expose_headers:
            fixed.append((EXPOSE_HEADERS, conf.expose_headers.encode()))
        self.echo_request_headers = conf.allow_headers == "**"
        if not self.echo_request_headers:
            fixed.append((ALLOW_HEADERS, conf.allow_headers.encode()))
        if conf.allow_credential:
            fixed.append((ALLOW_CREDENTIALS, b"true"))
        self.fixed = fixed
        # Every name this plugin sets replaces the upstream's copies.
        self.replaced = frozenset({ALLOW_ORIGIN, ALLOW_HEADERS, *(n for n, _ in fixed)})
        self.replaced_with_timing = self.replaced | {TIMING_ALLOW_ORIGIN}

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        """Keeps the client's Origin; answers a preflight (any OPTIONS) with 200."""
        ctx.request_origin = ctx.header(b"origin")
        return PREFLIGHT if ctx.method == b"OPTIONS" else None

    def header_filter(self, ctx: RequestContext, status: int, headers: list[Header]) -> None:
        origin = ctx.request_origin
        if self.vary:
            headers.append(VARY_ORIGIN)
        if self.by_metadata is None:
            allowed = self.origins.allowed(origin)
        else:
            allowed = None
            for rule in self.by_metadata:
                allowed = rule.allowed(origin)
                if allowed is not None:
                    break
            if allowed is None and self.own_after_metadata:
                allowed = self.origins.allowed(origin)
        timing = self.timing.allowed(origin) if self.timing is not None else None
        if allowed is None and timing is None:
            return
        out: list[Header] = []
        if allowed is not None:
            out.append((ALLOW_ORIGIN, allowed))
            out += self.fixed
            if self.echo_request_headers:
                requested = ctx.header(REQUEST_HEADERS)
                if requested is not None:
                    out.append((ALLOW_HEADERS, requested))
            replaced = self.replaced if timing is None else self.replaced_with_timing
        else:
            replaced = TIMING_ONLY
        if timing is not None:
            out.append((TIMING_ALLOW_ORIGIN, timing))
        headers[:] = [h for h in headers if h[0] not in replaced]
        headers += out
