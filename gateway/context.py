"""Per-request state, shared by the router, the plugins and the proxy.

One `RequestContext` per request, with slots; lazy fields (query arguments) are parsed on
first use and cached. Nothing here does IO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus

if TYPE_CHECKING:
    from gateway.consumers import Consumer, Credential
    from gateway.pipeline import Chain
    from gateway.runtime import CompiledRoute


Header = tuple[bytes, bytes]


def add_repeated(table: dict[str, Any], name: str, value: Any) -> None:
    """Put `value` under `name` as nginx's header and argument tables do: a name that
    comes again holds the list of its values."""
    held = table.get(name)
    if held is None:
        table[name] = value
    elif isinstance(held, list):
        held.append(value)
    else:
        table[name] = [held, value]


def arg_name(raw: bytes) -> str:
    """A query argument's name as `args` has it (percent- and `+`-decoded)."""
    return unquote_plus(raw.decode("latin-1"))


class BodyCopy:
    """The first `limit` bytes of a body as it goes by (for the loggers' `include_*_body`
    and proxy-cache); `truncated` once more came, `complete` once the whole body went out."""

    __slots__ = ("complete", "data", "limit", "truncated")

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit
        self.truncated = False
        self.complete = False

    def add(self, piece: bytes) -> None:
        room = self.limit - len(self.data)
        if len(piece) > room:
            self.truncated = True
        if room > 0:
            self.data += piece[:room]

    @staticmethod
    def asked(copy: BodyCopy | None, limit: int) -> BodyCopy:
        """`copy` made to keep at least `limit` bytes, or a new one: several plugins may
        ask for the same body."""
        if copy is None:
            return BodyCopy(limit)
        copy.limit = max(copy.limit, limit)
        return copy


class RequestContext:
    """What one request carries through the pipeline.

    `headers` starts as the client's request headers (lower-case names) and is edited in
    place by plugins; what remains after the pipeline is what the upstream receives, once
    hop-by-hop headers are removed. `upstream_uri` and `upstream_host` are set by plugins
    such as proxy-rewrite; None means "as the client sent it".
    """

    __slots__ = (
        "_args",
        "_cookies",
        "body",
        "body_rewrite",
        "bytes_sent",
        "chain",
        "connection",
        "consumer",
        "credential",
        "end",
        "gzip",
        "headers",
        "host",
        "http_version",
        "leases",
        "method",
        "path",
        "proxy_cache",
        "query",
        "remote_addr",
        "remote_port",
        "request_body",
        "request_length",
        "request_origin",
        "request_target",
        "response_body",
        "response_copy",
        "response_head",
        "response_headers",
        "route",
        "server_port",
        "span",
        "start",
        "status",
        "target",
        "tls",
        "upstream",
        "upstream_addr",
        "upstream_host",
        "upstream_method",
        "upstream_time",
        "upstream_uri",
        "websocket",
        "zipkin",
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
        request_target: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        # The target as the client sent it, before its path was normalised (hmac-auth signs
        # it, as APISIX's `request_uri`); `target` is what routing and the upstream see.
        self.request_target = target if request_target is None else request_target
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
        self.chain: Chain | None = None
        self.consumer: Consumer | None = None
        self.credential: Credential | None = None
        # The request's body as it streams in (a `request_body.RequestBody`: its declared
        # `length`, the `limit` client-control puts on it). A plugin that needs the whole
        # body (hmac-auth's digest) reads it with `request_body.read_whole(limit)` into
        # `body`, which the proxy then sends instead of streaming.
        self.request_body: Any = None
        self.body: bytes | None = None
        self._cookies: dict[str, str] | None = None
        # limit-conn's places taken by this request, (store, key), given back at its end.
        self.leases: list[tuple[Any, str]] | None = None  # Any: a store of ratelimit
        # The client's Origin as cors read it before other plugins could rewrite headers.
        self.request_origin: bytes | None = None
        # Headers plugins add to the response, whoever produces it (upstream or gateway).
        self.response_headers: list[Header] | None = None
        # A body a header filter put in place of the answer's own (response-rewrite).
        self.response_body: bytes | None = None
        # What rewrites the answer's whole body, read first (response-rewrite's `filters`).
        self.body_rewrite: Callable[[RequestContext, bytes], bytes] | None = None
        # The gzip level a header filter asked for (the gzip plugin; 0: none); nginx's
        # rules then decide (`http.compression.start_gzip`).
        self.gzip = 0
        # A copy of the answer's body as it goes out, when a logger asked for one.
        self.response_copy: BodyCopy | None = None
        # The answer's head for the loggers: the upstream's `ResponseHead` or the gateway's
        # `Reply` (both have `headers`).
        self.response_head: Any = None
        self.status = 0
        # Set when the request is over, before the log phase: its end on the `start` clock,
        # the bytes read from the client (head and body) and written to it.
        self.end = 0.0
        self.request_length = 0
        self.bytes_sent = 0
        self.upstream_uri: bytes | None = None
        # Another upstream than the route's, chosen by a plugin (traffic-split); Any: a
        # runtime.CompiledUpstream.
        self.upstream: Any = None
        self.upstream_host: bytes | None = None
        self.upstream_method: bytes | None = None
        self.upstream_addr = ""
        self.upstream_time = -1.0
        self.websocket = False
        # The client connection serving this request (a `downstream.ClientConnection`), for
        # batch-requests' sub-requests: `await ctx.connection.serve_internal(sock)`.
        self.connection: Any = None
        # The client connection when it came to an HTTPS address (an
        # `https.TlsConnection`: the SNI asked for).
        self.tls: Any = None
        # The opentelemetry plugin's span of a sampled request (a plugins.opentelemetry.Span).
        self.span: Any = None
        # The zipkin plugin's spans of a sampled request (a plugins.zipkin.Trace).
        self.zipkin: Any = None
        # proxy-cache's lookup of this request (a plugins.proxy_cache.Lookup).
        self.proxy_cache: Any = None
        self._args: dict[str, str] | None = None

    @property
    def upstream_status(self) -> int | None:
        """nginx's `$upstream_status`: the status of the answer once an upstream was asked
        (the gateway's own 502 or 504 when it failed), None when none was."""
        head = self.response_head
        return head.status if self.upstream_time >= 0 and head is not None else None

    @property
    def args(self) -> dict[str, str]:
        """Query arguments, first value wins (parsed once)."""
        if self._args is None:
            self._args = {}
            for key, value in parse_qsl(self.query.decode("latin-1"), keep_blank_values=True):
                self._args.setdefault(key, value)
        return self._args

    def raw_arg(self, name: str) -> bytes | None:
        """The first query argument `name` as the client sent it (still percent-encoded),
        or None. nginx's `$arg_name`; `unquote_to_bytes` gives its exact bytes."""
        for part in self.query.split(b"&"):
            key, _, value = part.partition(b"=")
            if key and arg_name(key) == name:
                return value
        return None

    def add_response_headers(self, headers: list[Header]) -> None:
        if self.response_headers is None:
            self.response_headers = headers
        else:
            self.response_headers.extend(headers)

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies from the Cookie headers, first value wins (parsed once)."""
        if self._cookies is None:
            self._cookies = {}
            for name, value in self.headers:
                if name == b"cookie":
                    for part in value.decode("latin-1").split(";"):
                        key, sep, val = part.strip().partition("=")
                        if sep:
                            self._cookies.setdefault(key, val)
        return self._cookies

    def remove_query_arg(self, name: str) -> None:
        """Drop every `name` argument from the query the upstream will receive."""
        kept = [
            part
            for part in self.query.split(b"&")
            if part and arg_name(part.partition(b"=")[0]) != name
        ]
        self.query = b"&".join(kept)
        self.target = self.path + b"?" + self.query if self.query else self.path
        self._args = None

    def remove_cookie(self, name: str) -> None:
        """Drop only the cookie `name` from the Cookie headers; empty headers go away."""
        out = []
        for header, value in self.headers:
            if header == b"cookie":
                parts = [
                    p
                    for p in value.split(b";")
                    if p.strip() and p.strip().partition(b"=")[0].decode("latin-1") != name
                ]
                if not parts:
                    continue
                value = b";".join(parts).strip()
            out.append((header, value))
        self.headers[:] = out
        self._cookies = None

    def remove_header(self, name: bytes) -> None:
        """Drop every `name` header (lower-case bytes)."""
        self.headers[:] = [h for h in self.headers if h[0] != name]

    @property
    def scheme(self) -> str:
        """nginx's `$scheme`: `https` when the request came over TLS."""
        return "https" if self.tls is not None else "http"

    def header(self, name: bytes) -> bytes | None:
        """The first value of request header `name` (lower-case bytes), or None."""
        for n, v in self.headers:
            if n == name:
                return v
        return None
