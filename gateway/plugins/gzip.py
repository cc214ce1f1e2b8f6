"""gzip: compress the route's answers, as APISIX's plugin does (with nginx's gzip filter
under it, `gateway/http/compression.py`).

The plugin picks the answers: a Content-Type whose media type is one of `types` (`"*"`:
any; an answer without one never), a Content-Length of at least `min_length` when the
answer states one, a request of at least HTTP/`http_version`. For those it sets
`Vary: Accept-Encoding` when `vary` is on (whether or not this client takes gzip), and
asks for compression at `comp_level`; what the client accepts and the status decide the
rest. `buffers` is taken for APISIX's configs and changes nothing (zlib buffers itself).
Priority 995, header filter: every answer of the route, the gateway's own included.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.context import RequestContext
from gateway.pipeline import Conf, Header, Plugin, PluginConf, PluginEnv

VARY = (b"vary", b"Accept-Encoding")


class Buffers(Conf, frozen=True, kw_only=True):
    number: Annotated[int, msgspec.Meta(ge=1)] = 32
    size: Annotated[int, msgspec.Meta(ge=1)] = 4096


class GzipConf(PluginConf, frozen=True, kw_only=True):
    types: (
        Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
        | Literal["*"]
    ) = msgspec.field(default_factory=lambda: ["text/html"])
    min_length: Annotated[int, msgspec.Meta(ge=1)] = 20
    comp_level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1
    http_version: float = 1.1
    buffers: Buffers = msgspec.field(default_factory=Buffers)
    vary: bool | None = None

    def __post_init__(self) -> None:
        if self.http_version not in (1.0, 1.1):
            raise ValueError("`http_version` must be 1.1 or 1.0")


class Gzip(Plugin):
    name = "gzip"
    priority = 995
    Conf = GzipConf

    def __init__(self, conf: GzipConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.types = (
            None if conf.types == "*" else frozenset(t.encode("latin-1") for t in conf.types)
        )
        self.min_length = conf.min_length
        self.level = conf.comp_level
        self.versions = (b"1.1",) if conf.http_version == 1.1 else (b"1.0", b"1.1")
        self.vary = bool(conf.vary)

    def header_filter(self, ctx: RequestContext, status: int, headers: list[Header]) -> None:
        content_type = length = None
        for name, value in headers:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
        if content_type is None:
            return
        if self.types is not None and content_type.partition(b";")[0] not in self.types:
            return
        if length is not None and length.isdigit() and int(length) < self.min_length:
            return
        if ctx.http_version not in self.versions:
            return
        ctx.gzip = self.level
        if self.vary:
            headers.append(VARY)
