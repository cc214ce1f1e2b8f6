"""response-rewrite: change the answer's status, headers and body, as APISIX's plugin does.

Priority 899, header filter: it applies to every answer of the route, the upstream's and
the gateway's own (a 401 included), when its `vars` hold (rules as route `vars`, which may
read the answer's `status`). `status_code` replaces the status; `body` (`body_base64`:
given in base64) replaces the body, and the headers that described the old one (ETag,
Last-Modified, Content-Encoding) go with it, its framing restated; the upstream's unread body is
dropped with its connection. `headers` is APISIX's `{add: ["Name: value"], set: {...},
remove: [...]}` (applied in that order) or a plain object to set; values take `$variables`.
`filters` (instead of `body`) rewrite the answer's body with regular expressions, in
order: `regex` with `options` (APISIX's PCRE letters: `i`, `m`, `s`, `x` taken, `j`, `o`,
`u` and the like change nothing here), each match (`scope: global`) or the first
(`once`) replaced by `replace` (`$0`..`$9` its groups, `$$` a dollar). The body is read
whole for it, a gzip body decoded first (and sent decoded); (ours) a body over 8 MiB gets
502, and one in another encoding is left as it is.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any, Literal

import msgspec

from gateway.config.fields import HEADER_TEXT, TOKEN
from gateway.context import RequestContext
from gateway.expr import compile_vars
from gateway.patterns import (
    BODY_BUDGET,
    DOTALL,
    IGNORECASE,
    MULTILINE,
    VERBOSE,
    Match,
    Pattern,
    PatternError,
)
from gateway.pipeline import Conf, Header, Plugin, PluginConf, PluginEnv
from gateway.template import Template, config_template

_NAME = TOKEN
HeaderName = Annotated[str, msgspec.Meta(pattern=_NAME)]
Value = str | int | float
# "Name: value", as APISIX's pattern (a value not ending in `/`), without control characters.
AddLine = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+:[^\x00-\x08\x0a-\x1f\x7f]*\Z")
]
# What described the old body (its framing is restated by whoever writes the new one).
BODY_HEADERS = frozenset((b"etag", b"last-modified", b"content-encoding"))
_FILTERED_BODY_HEADERS = BODY_HEADERS | {b"content-length"}


class HeaderOps(Conf, frozen=True, kw_only=True):
    add: Annotated[list[AddLine], msgspec.Meta(min_length=1)] | None = None
    set: Annotated[dict[HeaderName, Value], msgspec.Meta(min_length=1)] | None = None
    remove: Annotated[list[HeaderName], msgspec.Meta(min_length=1)] | None = None


_FLAGS = {"i": IGNORECASE, "m": MULTILINE, "s": DOTALL, "x": VERBOSE}
_IGNORED_FLAGS = frozenset("jouadDJ")
_PCRE_NAMED = re.compile(r"(?<!\\)\(\?<(?![=!])")
_DOLLAR = "\0dollar\0"  # a `$$` of `replace` while its groups are filled in


class BodyFilter(Conf, frozen=True, kw_only=True):
    regex: Annotated[str, msgspec.Meta(min_length=1)]
    scope: Literal["once", "global"] = "once"
    replace: str
    options: str = "jo"

    def compiled(self) -> tuple[Pattern, Template, int]:
        flags = 0
        for letter in self.options:
            if letter in _FLAGS:
                flags |= _FLAGS[letter]
            elif letter not in _IGNORED_FLAGS:
                raise ValueError(f"unknown regex option {letter!r}")
        # PCRE's named groups, `(?<name>...)`, are Python's `(?P<name>...)`.
        regex = _PCRE_NAMED.sub("(?P<", self.regex)
        try:
            pattern = Pattern(regex.encode().decode("latin-1"), flags, BODY_BUDGET)
        except PatternError as exc:
            raise ValueError(f"invalid regex: {exc}") from None
        replace = config_template(self.replace.replace("$$", _DOLLAR))
        if replace.variable_names:
            raise ValueError("`replace` takes only $0..$9 (the regex's groups)")
        return pattern, replace, 0 if self.scope == "global" else 1


class ResponseRewriteConf(PluginConf, frozen=True, kw_only=True):
    status_code: Annotated[int, msgspec.Meta(ge=200, le=598)] | None = None
    body: str | None = None
    body_base64: bool = False
    filters: Annotated[list[BodyFilter], msgspec.Meta(min_length=1)] | None = None
    # Either {add, set, remove} or a plain object of headers to set (checked below).
    headers: dict[str, Any] | None = None
    vars: list[Any] | None = None

    def ops(self) -> HeaderOps:
        if not self.headers:
            return HeaderOps()
        if set(self.headers) <= {"add", "set", "remove"}:
            return msgspec.convert(self.headers, HeaderOps)
        return HeaderOps(set=msgspec.convert(self.headers, dict[HeaderName, Value]))

    def __post_init__(self) -> None:
        try:
            ops = self.ops()
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid headers: {exc}") from None
        for value in (ops.set or {}).values():
            if HEADER_TEXT.match(str(value)) is None:
                raise ValueError("invalid headers: a control character in a value")
        if self.body_base64:
            if self.body is None:
                raise ValueError("`body_base64` needs `body`")
            try:
                base64.b64decode(self.body, validate=True)
            except binascii.Error:
                raise ValueError("`body` is not base64") from None
        if self.vars is not None:
            compile_vars(self.vars)
        if self.filters is not None:
            if self.body is not None:
                raise ValueError("`body` and `filters` do not go together")
            for index, rule in enumerate(self.filters):
                try:
                    rule.compiled()
                except ValueError as exc:
                    raise ValueError(f"filters[{index}]: {exc}") from None


class ResponseRewrite(Plugin):
    name = "response-rewrite"
    priority = 899
    Conf = ResponseRewriteConf

    def __init__(self, conf: ResponseRewriteConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.when = compile_vars(conf.vars) if conf.vars is not None else None
        self.status = conf.status_code
        self.body: bytes | None = None
        if conf.body is not None:
            self.body = base64.b64decode(conf.body) if conf.body_base64 else conf.body.encode()
        ops = conf.ops()
        adds = []
        for line in ops.add or ():
            name, _, value = line.partition(":")
            adds.append((name.strip().lower().encode(), config_template(str(value).strip())))
        self.add = tuple(adds)
        self.remove = frozenset(name.lower().encode() for name in ops.remove or ())
        # add, then set (replacing what add put there too), then remove (the same).
        self.set = tuple(
            (name.lower().encode(), config_template(str(value)))
            for name, value in (ops.set or {}).items()
            if name.lower().encode() not in self.remove
        )
        dropped = {name for name, _ in self.set} | self.remove
        if self.body is not None:
            dropped |= BODY_HEADERS  # the old body's own headers go with it
        self.dropped = frozenset(dropped)
        self.filters = [rule.compiled() for rule in conf.filters or ()]

    def header_filter(self, ctx: RequestContext, status: int, headers: list[Header]) -> None:
        if self.when is not None and not self.when(ctx):
            return
        if self.status is not None:
            ctx.status = self.status
        if self.body is not None:
            ctx.response_body = self.body
        elif self.filters:
            encoding = next((v for n, v in headers if n == b"content-encoding"), b"")
            if encoding.strip().lower() in (b"", b"identity", b"gzip"):
                ctx.body_rewrite = self._filter_body
                # The length is the new body's (a HEAD answer, never filtered, states none).
                headers[:] = [h for h in headers if h[0] not in _FILTERED_BODY_HEADERS]
        for name, value in self.add:
            headers.append((name, value.render(ctx).encode("latin-1")))
        if self.dropped:
            headers[:] = [h for h in headers if h[0] not in self.dropped]
        for name, value in self.set:
            headers.append((name, value.render(ctx).encode("latin-1")))

    def _filter_body(self, ctx: RequestContext, body: bytes) -> bytes:
        text = body.decode("latin-1")
        for pattern, replace, count in self.filters:

            def replaced(m: Match[str], template: Template = replace) -> str:
                rendered = template.render(ctx, (m.group(0), *m.groups()))
                return rendered.replace(_DOLLAR, "$")

            text = pattern.sub(replaced, text, count=count)
        return text.encode("latin-1")
