"""proxy-rewrite: change what the upstream receives (URI, method, Host, headers).

Matches APISIX 3.x: `use_real_request_uri_unsafe` (the target as the client sent it) beats
`uri`, which beats `regex_uri`; `regex_uri` is a flat list of pattern/template pairs, the
first matching pattern wins and only its match is replaced (`ngx.re.sub`); a new URI is
percent-encoded where a request line could not carry it; header actions run in the order
add, remove, set; a plain object under `headers` means `set`. The client's query string is
kept unless the new URI carries its own.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import quote

import msgspec

from gateway.config.fields import HEADER_TEXT, HeaderName, HostHeader
from gateway.context import RequestContext
from gateway.http.path import PATH_SAFE
from gateway.patterns import Pattern, any_of
from gateway.pipeline import Conf, Plugin, PluginConf, PluginEnv
from gateway.template import Template, config_template, substitute

# (Values are checked in __post_init__: msgspec crashes on a union of a pattern-checked
# str and a list, msgspec issue #717.)
HeaderValue = str | list[str]
_ACTIONS = frozenset({"add", "set", "remove"})
# What a request target keeps as it is (APISIX's `uri_safe_encode`): a path's characters,
# plus "?" for the query.
_TARGET_SAFE = PATH_SAFE + "?"
_UNSAFE = re.compile(f"[^A-Za-z0-9{re.escape(_TARGET_SAFE)}]")


def safe_target(text: str) -> bytes:
    """A rewritten URI, one character per byte (see `config_template`), ready for the
    request line: anything else percent-encoded byte by byte, so a space or a quote from
    the config or a variable cannot break the line."""
    if _UNSAFE.search(text) is None:
        return text.encode("ascii")
    return quote(text.encode("latin-1"), safe=_TARGET_SAFE).encode("ascii")


Method = Literal[
    "GET",
    "POST",
    "PUT",
    "HEAD",
    "DELETE",
    "OPTIONS",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "LOCK",
    "UNLOCK",
    "PATCH",
    "TRACE",
]


class HeaderActions(Conf, frozen=True, kw_only=True):
    add: dict[HeaderName, HeaderValue] = {}
    set: dict[HeaderName, HeaderValue] = {}
    remove: list[HeaderName] = []


class ProxyRewriteConf(PluginConf, frozen=True, kw_only=True):
    uri: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^/")] | None = None
    method: Method | None = None
    regex_uri: Annotated[list[str], msgspec.Meta(min_length=2)] | None = None
    host: HostHeader | None = None
    # Either {add, set, remove} or, in APISIX's older form, a plain object of headers to set.
    # (Checked as `HeaderActions` in __post_init__.)
    headers: dict[str, str | list[str] | dict[str, str | list[str]]] | None = None
    use_real_request_uri_unsafe: bool = False

    def header_actions(self) -> HeaderActions:
        """`headers` in the {add, set, remove} form, whichever form the config used."""
        if not self.headers:
            return HeaderActions()
        if set(self.headers) <= _ACTIONS:
            return msgspec.convert(self.headers, HeaderActions)
        return HeaderActions(set=msgspec.convert(self.headers, dict[HeaderName, HeaderValue]))

    def __post_init__(self) -> None:
        if self.headers:
            try:
                actions = self.header_actions()
            except msgspec.ValidationError as exc:
                raise ValueError(f"invalid headers: {exc}") from None
            for name, value in (*actions.add.items(), *actions.set.items()):
                for text in value if isinstance(value, list) else [value]:
                    if HEADER_TEXT.match(text) is None:
                        raise ValueError(f"invalid headers: {name}: a control character")
        if self.regex_uri is not None:
            if len(self.regex_uri) % 2:
                raise ValueError("regex_uri must hold pattern/template pairs (an even length)")
            for pattern in self.regex_uri[::2]:
                any_of([pattern], "regex_uri pattern")


def _values(value: HeaderValue) -> list[Template]:
    return [config_template(v) for v in (value if isinstance(value, list) else [value])]


class ProxyRewrite(Plugin):
    name = "proxy-rewrite"
    priority = 1008
    Conf = ProxyRewriteConf

    def __init__(self, conf: ProxyRewriteConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.real_request_uri = conf.use_real_request_uri_unsafe
        self.uri = config_template(conf.uri) if conf.uri is not None else None
        pairs = conf.regex_uri or []
        self.regex_uri = tuple(
            (Pattern(pairs[i]), config_template(pairs[i + 1])) for i in range(0, len(pairs), 2)
        )
        self.method = conf.method.encode() if conf.method else None
        self.host = conf.host.encode("latin-1") if conf.host else None
        actions = conf.header_actions()
        self.add = tuple((n.lower().encode("latin-1"), _values(v)) for n, v in actions.add.items())
        self.remove = frozenset(n.lower().encode("latin-1") for n in actions.remove)
        self.set = tuple((n.lower().encode("latin-1"), _values(v)) for n, v in actions.set.items())

    def rewrite(self, ctx: RequestContext) -> None:
        groups: tuple[str | None, ...] = ()
        new_path: str | None = None
        if self.real_request_uri:
            # As the client sent it: neither normalised nor rewritten (APISIX's option).
            ctx.upstream_uri = ctx.request_target
        elif self.uri is not None:
            new_path = self.uri.render(ctx)
        elif self.regex_uri:
            path = ctx.path.decode("latin-1")
            for pattern, template in self.regex_uri:
                replaced = substitute(pattern, template, path, ctx)
                if replaced is not None:
                    new_path, groups = replaced
                    break
        if new_path is not None:
            uri = safe_target(new_path)
            if ctx.query and b"?" not in uri:
                uri += b"?" + ctx.query
            ctx.upstream_uri = uri
        if self.method is not None:
            ctx.upstream_method = self.method
        if self.host is not None:
            ctx.upstream_host = self.host
        headers = ctx.headers
        for name, templates in self.add:
            headers.extend((name, t.render(ctx, groups).encode("latin-1")) for t in templates)
        if self.remove:
            headers[:] = [h for h in headers if h[0] not in self.remove]
        for name, templates in self.set:
            headers[:] = [h for h in headers if h[0] != name]
            headers.extend((name, t.render(ctx, groups).encode("latin-1")) for t in templates)
