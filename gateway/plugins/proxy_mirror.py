"""proxy-mirror: a copy of each request to another server, as APISIX's plugin (nginx's
`mirror`) sends it; its answer is ignored and never waited for.

`host` is `http(s)://host[:port]`; the copy has the request's method, headers (its Host
too) and body, and the URI the upstream gets, or `path` with `path_concat_mode`
`replace` (`path?args`) or `prefix` (`path` + URI). `sample_ratio` of the requests are
copied. A request refused on the way (authentication, limits) is not copied: the copy
goes in before_proxy. A body is copied when its length is known and at most 1 MiB (it is
read whole, then sent to both); a chunked or larger one is not mirrored. Priority 1010.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

import msgspec

from gateway.context import RequestContext
from gateway.fetch import MAX_BODY
from gateway.pipeline import Plugin, PluginConf, PluginEnv

_NOT_COPIED = frozenset({b"content-length", b"transfer-encoding", b"expect"})


class ProxyMirrorConf(PluginConf, frozen=True, kw_only=True):
    host: Annotated[
        str, msgspec.Meta(pattern=r"^https?://([\da-zA-Z.-]+|\[[\da-fA-F:]+\])(:\d+)?\Z")
    ]
    path: Annotated[str, msgspec.Meta(pattern=r"^/[^?&]+\Z")] | None = None
    path_concat_mode: Literal["replace", "prefix"] = "replace"
    sample_ratio: Annotated[float, msgspec.Meta(ge=0.00001, le=1)] = 1


class ProxyMirror(Plugin):
    name = "proxy-mirror"
    priority = 1010
    Conf = ProxyMirrorConf

    def __init__(self, conf: ProxyMirrorConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.host = conf.host
        self.verify = conf.host.startswith("https:")
        self.path = conf.path
        self.prefix = conf.path_concat_mode == "prefix"
        self.ratio = conf.sample_ratio
        self.mirrors = env.mirrors

    def _uri(self, ctx: RequestContext) -> str:
        uri = (ctx.upstream_uri or ctx.target).decode("latin-1")
        if self.path is None:
            return uri
        if self.prefix:
            return self.path + uri
        query = ctx.query.decode("latin-1")
        return self.path + (f"?{query}" if query else "")

    async def before_proxy(self, ctx: RequestContext) -> None:
        if self.ratio < 1 and random.random() >= self.ratio:
            return
        body = ctx.body
        if body is None:
            length = ctx.request_body.length if ctx.request_body is not None else 0
            if length is None or length > MAX_BODY:
                return  # chunked or large: streamed to the upstream, not copied
            if length:
                body = ctx.body = await ctx.request_body.read_whole(MAX_BODY)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in ctx.headers
            if name not in _NOT_COPIED
        ]
        method = (ctx.upstream_method or ctx.method).decode("latin-1")
        self.mirrors.send(method, self.host + self._uri(ctx), headers, body or b"", False)
