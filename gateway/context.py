"""Per-request state, shared by the router, the plugins and the proxy.

One `RequestContext` per request, with slots; lazy fields (query arguments) are parsed on
first use and cached. Nothing here does IO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from gateway.runtime import CompiledRoute

Header = tuple[bytes, bytes]


class RequestContext:
    """What one request carries through the pipeline.

    `headers` starts as the client's request headers (lower-case names) and is edited in
    place by plugins; what remains after the pipeline is what the upstream receives, once
    hop-by-hop headers are removed. `upstream_uri` and `upstream_host` are set by plugins
    such as proxy-rewrite; None means "as the client sent it".
    """

    __slots__ = (
        "_args",
        "consumer",
        "headers",
        "host",
        "http_version",
        "method",
        "path",
        "query",
        "remote_addr",
        "remote_port",
        "route",
        "server_port",
        "start",
        "status",
        "target",
        "upstream_addr",
        "upstream_host",
        "upstream_method",
        "upstream_time",
        "upstream_uri",
        "websocket",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[Header],
        http_version: bytes,
        remote_addr: str,
        remote_port: int,
        server_port: int,
        start: float,
    ) -> None:
        self.method = method
        self.target = target
        path, sep, query = target.partition(b"?")
        self.path = path
        self.query = query if sep else b""
        self.headers = headers
        self.http_version = http_version
        self.remote_addr = remote_addr
        self.remote_port = remote_port
        self.server_port = server_port
        self.start = start
        self.host = b""
        self.route: CompiledRoute | None = None
        self.consumer: Any = None  # the consumer model arrives with authentication
        self.status = 0
        self.upstream_uri: bytes | None = None
        self.upstream_host: bytes | None = None
        self.upstream_method: bytes | None = None
        self.upstream_addr = ""
        self.upstream_time = -1.0
        self.websocket = False
        self._args: dict[str, str] | None = None

    @property
    def args(self) -> dict[str, str]:
        """Query arguments, first value wins (parsed once)."""
        if self._args is None:
            self._args = {}
            for key, value in parse_qsl(self.query.decode("latin-1"), keep_blank_values=True):
                self._args.setdefault(key, value)
        return self._args

    def header(self, name: bytes) -> bytes | None:
        """The first value of request header `name` (lower-case bytes), or None."""
        for n, v in self.headers:
            if n == name:
                return v
        return None
