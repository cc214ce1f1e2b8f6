"""The client side: one h11 SERVER connection loop per accepted socket.

Owns keep-alive, pipelining (what arrives early waits for the next request's parser;
requests are answered in order), HTTP/1.0 clients, the keep-alive idle timeout, the head
deadline counted from the first byte, the response's framing and keep-alive decision (via
`http.response`), and the answer to bad input. Request bodies are read by `request_body`.
It is the IO boundary on the client side: trio, h11 and OSError exceptions become
`DownstreamError` here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from typing import TYPE_CHECKING, Protocol

import h11
import trio

from gateway import proxy
from gateway.accesslog import AccessLog
from gateway.context import RequestContext
from gateway.errors import DownstreamError, UpstreamError, protocol_fault
from gateway.fastio import ClientIO, FastSocket
from gateway.http.framing import (
    HeadError,
    check_head,
    check_incomplete,
    escaped_request_line,
    find_head_end,
)
from gateway.http.headers import client_request_headers, is_websocket_upgrade
from gateway.http.path import PathError, absolute_form, host_without_port, normalized_target
from gateway.http.replies import (
    ROUTE_NOT_FOUND,
    Header,
    Reply,
    date_header,
    error_msg,
    reason,
    status_reply,
)
from gateway.http.response import ResponseWriter, start_response, wants_keep_alive
from gateway.https import TlsConnection
from gateway.patterns import PatternTimeout
from gateway.pipeline import finish_whole_body, run_header_filters, run_log, run_request_phases
from gateway.request_body import CLIENT_GONE, RequestBody
from gateway.upstream.pool import PoolManager

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = logging.getLogger("gateway")

HEAD_SLACK = 1024
LINGER_S = 2.0  # nginx: lingering_timeout 5 s; shorter, we only need the answer read
LINGER_BYTES = 1024 * 1024
_IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)
# Refused before routing, as nginx (and so APISIX) refuses them: TRACE would echo the
# request's headers (cookies, credentials) back, CONNECT asks for a tunnel.
NOT_ALLOWED = frozenset({b"TRACE", b"CONNECT"})
# What nginx takes for a method (upper-case letters, `_`, `-`): `get` or `G3T` is a 400
# there, and an upstream might read `get` as GET past a route's `methods`.
_COMMON_METHODS = frozenset(
    {b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"PURGE"}
)
_METHOD = re.compile(rb"[A-Z_-]+")
_VERSIONS = (b"1.1", b"1.0")
# APISIX's answer when a route reaches the proxy without an upstream.
NO_UPSTREAM = error_msg(503, "missing upstream configuration in Route or Service")


def _with_host(headers: list[Header], host: bytes) -> list[Header]:
    """`headers` with `host` as the Host header's value (first when there was none)."""
    if any(name == b"host" for name, _ in headers):
        return [(name, host) if name == b"host" else (name, value) for name, value in headers]
    return [(b"host", host), *headers]


class Shared(Protocol):
    """What every connection reads from the server: the current runtime and shared pools."""

    runtime: Runtime
    pools: PoolManager
    access_log: AccessLog
    draining: bool
    requests: int  # every request read, refused ones too (nginx's stub_status `requests`)


class ClientConnection:
    """Serves requests on one client connection until it closes or must close."""

    def __init__(
        self,
        shared: Shared,
        sock: socket.socket,
        remote: tuple[str, int],
        server_port: int,
        tls: TlsConnection | None = None,
    ) -> None:
        self.shared = shared
        # Requests and responses go through `io`; the trio stream serves the WebSocket
        # tunnel, the lingering close and the final close. Over TLS both are the connection.
        self.tls = tls
        self.io: ClientIO
        self.stream: trio.abc.HalfCloseableStream | TlsConnection
        if tls is None:
            self.io = FastSocket(sock)
            self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        else:
            self.io = self.stream = tls
        self.io.send_timeout = shared.runtime.limits.send_timeout
        self.remote_addr, self.remote_port = remote
        self.server_port = server_port
        limits = shared.runtime.limits
        # The framing checks refuse an oversized head first; h11's own bound is a backstop.
        self.max_event = limits.max_head + HEAD_SLACK
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_event)
        # The request being served: what the response's framing and keep-alive depend on.
        self.request_method = b"GET"
        self.http_version = b"1.1"
        self.request_keep_alive = False
        self.response_started = False
        self.response_keep_alive = False
        # server.limits.buffer_size: at most this much is read from the client at a time,
        # and a read waits until the previous piece went to the upstream (backpressure).
        self.receive_size = limits.buffer_size
        self.body: RequestBody | None = None
        # For the log phase: the current request head's length, the bytes written so far.
        self.head_length = 0
        self.sent = 0
        self.idle_scope: trio.CancelScope | None = None
        # After an early error reply the client may still be sending: read and discard for
        # a moment before closing, so that our close does not reset the answer away.
        self.linger = False

    @property
    def draining(self) -> bool:
        return self.shared.draining

    @property
    def body_started(self) -> bool:
        return self.body is not None and self.body.started

    @property
    def body_complete(self) -> bool:
        return self.body is None or self.body.complete()

    @property
    def body_length(self) -> int | None:
        return self.body.length if self.body is not None else 0

    async def receive_body(self) -> bytes | None:
        """The next piece of the request body, or None at its end (see `request_body`)."""
        return await self.body.receive() if self.body is not None else None

    # --- IO boundary -------------------------------------------------------------------

    async def send(self, data: bytes | bytearray) -> None:
        """Write to the client; raises DownstreamError(499) when it went away."""
        self.sent += len(data)
        try:
            await self.io.send_all(data)
        except OSError:
            raise DownstreamError(CLIENT_GONE, "client closed the connection") from None

    async def send_parts(self, parts: list[bytes]) -> None:
        """Write `parts` back to back; raises DownstreamError(499) when the client went away."""
        self.sent += sum(map(len, parts))
        try:
            await self.io.send_parts(parts)
        except OSError:
            raise DownstreamError(CLIENT_GONE, "client closed the connection") from None

    async def _linger(self) -> None:
        """Half-close, then discard what the client still sends, for a bounded time/size."""
        with trio.move_on_after(LINGER_S):
            try:
                if not isinstance(self.stream, TlsConnection):  # TLS has no half-close
                    await self.stream.send_eof()
                discarded = 0
                while discarded < LINGER_BYTES:
                    data = await self.stream.receive_some(self.receive_size)
                    if not data:
                        return
                    discarded += len(data)
            except _IO_ERRORS:
                return

    def _try_receive(self) -> bytes | None:
        """What the client already sent (b"" at EOF or error), or None when nothing is there."""
        try:
            return self.io.try_receive(self.receive_size)
        except OSError:
            return b""

    async def _wait_receive(self) -> bytes:
        try:
            return await self.io.wait_receive(self.receive_size)
        except OSError:
            return b""

    # --- the loop ----------------------------------------------------------------------

    async def serve(self) -> None:
        """Answer requests until the connection ends; never raises for client faults."""
        try:
            while True:
                request = await self._wait_request()
                if request is None:
                    break
                if not await self._handle(request):
                    break
                if self.body is None or not self.body.complete():
                    break
                self._next_cycle()
            if self.linger:
                await self._linger()
        except DownstreamError:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    def client_gone(self) -> bool:
        """Whether the client closed or reset its connection (a peek at the socket: what
        it may have sent ahead stays unread). For work done on its behalf that would
        otherwise go on for nobody (batch-requests' later items)."""
        raw = self.io.raw if isinstance(self.io, TlsConnection) else self.io
        if not isinstance(raw, FastSocket):
            return False
        try:
            return raw.sock.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    async def serve_internal(self, sock: socket.socket) -> None:
        """Serve the requests written to `sock` (one end of a socket pair) as if this
        connection's client had sent them: batch-requests' sub-requests, which meet every
        route rule and plugin from the client's address and port."""
        remote = (self.remote_addr, self.remote_port)
        await ClientConnection(self.shared, sock, remote, self.server_port).serve()

    def _next_cycle(self) -> None:
        """A fresh h11 parser for the next request, holding what already arrived of it.

        (h11's own `start_next_cycle` would need the response sent through h11 too; the
        gateway writes responses itself, see `http.response`.)"""
        trailing, closed = self.body.rest() if self.body is not None else self.h11.trailing_data
        self.body = None
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_event)
        self.request_method = b"GET"  # until the next head is parsed (a reject has a body)
        self.http_version = b"1.1"
        self.response_started = False
        if trailing:
            self.h11.receive_data(trailing)
        if closed:
            self.h11.receive_data(b"")

    async def _wait_request(self) -> h11.Request | None:
        """The next request head, checked by `http.framing` before h11 parses it; None when
        the connection should close (EOF, idle timeout, drain, or a refused head)."""
        limits = self.shared.runtime.limits
        head_deadline: float | None = None
        # What has arrived of this head so far (pipelined bytes included), searched for its
        # end incrementally: a slow sender must not make each read rescan the whole head.
        buffered = self.h11.trailing_data[0]
        pending: bytes | bytearray | None = buffered or None
        searched = 0
        while True:
            if pending is not None:
                end = find_head_end(pending, max(0, searched - 3))
                try:
                    if end is None:
                        searched = len(pending)
                        check_incomplete(pending, limits.max_request_line, limits.max_head)
                    else:
                        self.head_length = end
                        head = bytes(pending[:end])
                        check_head(
                            head,
                            max_request_line=limits.max_request_line,
                            max_header_line=limits.max_header_line,
                            max_head=limits.max_head,
                            max_headers=limits.max_headers,
                        )
                        if not head.isascii():
                            self._escape_target(head)
                        return await self._parse_request()
                except HeadError as exc:
                    await self._refuse_head(exc.status, exc.reason)
                    return None
            if pending is None:
                # Between requests: the keep-alive idle timeout applies, and a graceful stop
                # may cancel the wait.
                if self.shared.draining:
                    return None
                data = self._try_receive()
                if data is None:
                    # Let the other connections run first: under load the next request
                    # has usually arrived by then, and is read without registering a wait
                    # or entering the idle scope (see `fastio`).
                    await trio.lowlevel.checkpoint()
                    data = self._try_receive()  # an arrived request is served, even draining
                if data is None:
                    if self.shared.draining:
                        return None
                    with trio.CancelScope() as scope:
                        scope.deadline = trio.current_time() + limits.keepalive_timeout
                        self.idle_scope = scope
                        data = await self._wait_receive()
                    self.idle_scope = None
                    if scope.cancelled_caught:
                        return None
            else:
                # The head deadline runs from its first byte and is not extended by later
                # bytes: a slow sender (slowloris) is cut when it passes.
                if head_deadline is None:
                    head_deadline = trio.current_time() + limits.head_timeout
                data = self._try_receive()
                if data is None:
                    with trio.move_on_at(head_deadline) as scope:
                        data = await self._wait_receive()
                    if scope.cancelled_caught:
                        await self._refuse_head(408, "request head timed out")
                        return None
            if not data:
                return None
            self.h11.receive_data(data)
            if pending is None:
                pending = data  # usually the whole head: no copy
            elif isinstance(pending, bytes):
                pending = bytearray(pending) + data
            else:
                pending += data

    def _escape_target(self, head: bytes) -> None:
        """Hand h11 the head with the target's bytes outside ASCII percent-encoded, when
        that is where they are (see `http.framing.escaped_request_line`)."""
        escaped = escaped_request_line(head)
        if escaped is None:
            return
        stop, line = escaped
        buffered, closed = self.h11.trailing_data  # the head and whatever followed it
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_event)
        self.h11.receive_data(line + buffered[stop:])
        if closed:
            self.h11.receive_data(b"")

    async def _parse_request(self) -> h11.Request | None:
        """Let h11 parse a head that passed the checks (it is already in h11's buffer)."""
        try:
            event = self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            await self._refuse_head(exc.error_status_hint, protocol_fault(exc))
            return None
        if type(event) is h11.Request:
            return event
        return None

    # --- one request -------------------------------------------------------------------

    async def _handle(self, request: h11.Request) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        shared = self.shared
        shared.requests += 1
        sent_before = self.sent
        runtime = shared.runtime  # read once: a reload does not change a request in flight
        # Copied once, names lower-cased as h11 gives them (its public `raw_items` is a list;
        # iterating `Headers` goes through a Python-level __getitem__ per header).
        raw_headers = [(name.lower(), value) for name, value in request.headers.raw_items()]
        self.body = RequestBody(
            self, raw_headers, self.receive_size, runtime.limits.body_idle_timeout
        )
        self.request_method = request.method
        self.http_version = request.http_version
        self.request_keep_alive = wants_keep_alive(request.http_version, raw_headers)
        target = request.target
        if request.http_version not in _VERSIONS:  # h11 takes any `HTTP/d.d`
            # As nginx: a later major version is not supported, HTTP/0.x is no request.
            later = request.http_version[:1] != b"0"
            await self._refuse(505 if later else 400, "HTTP version not supported")
            return False
        if request.method not in _COMMON_METHODS and _METHOD.fullmatch(request.method) is None:
            await self._refuse(400, "invalid method")
            return False
        if request.method in NOT_ALLOWED:
            path = request.target.partition(b"?")[0]
            await self._refuse(405, "method not allowed", request.method, path)
            return False
        try:
            if not target.startswith(b"/"):  # absolute-form (or `*`): rare
                absolute = absolute_form(target)
                if absolute is not None:
                    # RFC 9112 section 3.2.2: the target's host replaces the Host header.
                    authority, target = absolute
                    raw_headers = _with_host(raw_headers, authority)
            sent = target
            target = normalized_target(target)
        except PathError as exc:
            path = request.target.partition(b"?")[0]
            await self._refuse(400, f"bad request path: {exc}", request.method, path)
            return False
        # Client-sent identity headers are removed on every route, authenticated or not.
        ctx = RequestContext(
            request.method,
            target,
            client_request_headers(raw_headers),
            request.http_version,
            self.remote_addr,
            self.remote_port,
            self.server_port,
            trio.current_time(),
            sent,
        )
        ctx.connection = self
        tls = self.tls
        host = ctx.header(b"host")
        if host is not None:  # an empty one is a 400 too, as in nginx
            try:
                ctx.host = host_without_port(host)
            except PathError as exc:
                await self._refuse(400, f"bad Host header: {exc}", ctx.method, ctx.path)
                return False
        if tls is not None:
            ctx.tls = tls
            refused = tls.refuses(ctx.path, ctx.host)  # its client certificate rules
            if refused is not None:
                await self._refuse(400, refused, ctx.method, ctx.path)
                return False
        keep = True
        reply: Reply | None
        try:
            route = runtime.router.match(ctx.method, ctx.path, ctx.host, self.remote_addr, ctx)
            if route is None:
                reply = ROUTE_NOT_FOUND
            else:
                ctx.route = route
                ctx.chain = route.chain
                ctx.request_body = self.body
                ctx.websocket = route.enable_websocket and is_websocket_upgrade(ctx.headers)
                # A plugin that reads the body (hmac-auth) meets its faults here too.
                reply = await run_request_phases(route.chain, ctx)
            # A route without an upstream whose answering plugin was left out (`_meta.filter`).
            if (
                reply is None
                and route is not None
                and route.upstream is None
                and ctx.upstream is None
            ):
                reply = NO_UPSTREAM
            if reply is None and route is not None:
                try:
                    await proxy.forward(self, ctx, route, shared.pools)
                    keep = self.response_keep_alive and not (ctx.websocket and ctx.status == 101)
                except UpstreamError as exc:
                    log.warning(
                        "upstream %s failed for route %s: %s", ctx.upstream_addr, route.id, exc
                    )
                    if not self.response_started:
                        reply = status_reply(exc.status)
                    else:
                        keep = False  # part of the response went out: cut it, never fake an end
                        ctx.status = ctx.status or exc.status
            if reply is not None:
                keep = await self._send_reply(ctx, reply)
        except DownstreamError as exc:
            ctx.status = ctx.status or exc.status
            keep = False
            if exc.status != CLIENT_GONE and not self.response_started:
                # A bad body (e.g. an invalid chunk) before any answer: say so, then close.
                await self._reject(exc.status, exc.reason)
        except PatternTimeout as exc:
            # A config regex that backtracks without end on this input (see `patterns`).
            log.warning("request from %s refused: %s", self.remote_addr, exc)
            ctx.status = 500
            keep = False
            await self._reject(500, "internal error")
        except Exception:
            # A bug met by this request: answer it as nginx answers a failed handler, then
            # close (its state is unknown); the other connections go on.
            log.exception("request from %s failed", self.remote_addr)
            ctx.status = 500
            keep = False
            await self._reject(500, "internal error")
        finally:
            chain = ctx.chain
            if chain is not None and chain.logs:
                ctx.end = now = trio.current_time()
                ctx.request_length = self.head_length + self.body.received
                ctx.bytes_sent = self.sent - sent_before
                run_log(chain, ctx)
            else:
                now = trio.current_time() if shared.access_log.enabled else 0.0
            shared.access_log.write(ctx, now)
        return keep

    async def _send_reply(self, ctx: RequestContext, reply: Reply) -> bool:
        """Write a gateway-made response; False when the connection must close."""
        ctx.status = reply.status
        ctx.response_head = reply
        headers = [*reply.headers, date_header(int(time.time()))]
        if ctx.response_headers:
            headers.extend(ctx.response_headers)
        chain = ctx.chain
        body = reply.body
        if chain is not None and chain.header_filters:
            run_header_filters(chain, ctx, reply.status, headers)
            if ctx.response_body is not None:  # response-rewrite's
                body = ctx.response_body
            elif ctx.body_rewrite is not None:  # response-rewrite's filters
                body = ctx.body_rewrite(ctx, body)
            body = finish_whole_body(ctx, ctx.method, ctx.status, headers, body)
        headers.append((b"content-length", str(len(body)).encode()))
        # An unread request body cannot be skipped safely: close instead of guessing.
        unread = False
        if self.body is not None:
            self.body.skip_buffered()
            unread = not self.body.complete()
        status = ctx.status  # a header filter may have changed it
        head, writer = self.start_response(status, reason(status), headers, unread)
        await self.send(head + writer.piece(body))
        return writer.keep_alive

    def start_switching(self, headers: list[Header], reason: bytes) -> bytes:
        """The `101 Switching Protocols` head (through h11, which then hands the connection
        over: its trailing data are the client's first tunnel bytes)."""
        self.response_started = True
        self.response_keep_alive = False
        return (
            self.h11.send(
                h11.InformationalResponse(status_code=101, headers=headers, reason=reason)
            )
            or b""
        )

    def start_response(
        self,
        status: int,
        reason: bytes,
        headers: list[Header],
        close: bool = False,
        lines: bytes = b"",
    ) -> tuple[bytes, ResponseWriter]:
        """The head of the final response to the current request and its body writer
        (`lines`: relayed header lines, see `http.response.start_response`); decides whether
        the connection stays open (`response_keep_alive`). Raises DownstreamError(500) for a
        header the head cannot carry."""
        self.response_started = True
        if close:
            # The client may still be sending: closing at once could reset the answer away.
            self.linger = True
        keep = self.request_keep_alive and not close and not self.shared.draining
        try:
            head, writer = start_response(
                status,
                reason,
                headers,
                request_method=self.request_method,
                http_version=self.http_version,
                keep_alive=keep,
                lines=lines,
            )
        except ValueError as exc:
            self.response_started = False
            raise DownstreamError(500, str(exc)) from None
        self.response_keep_alive = writer.keep_alive
        return head, writer

    async def _refuse_head(self, status: int, why: str) -> None:
        """`_refuse` a request whose head was refused before `_handle` counted it."""
        self.shared.requests += 1
        await self._refuse(status, why)

    async def _refuse(
        self, status: int, why: str, method: bytes | None = None, path: bytes | None = None
    ) -> None:
        """`_reject` a request refused before routing, and give it its access-log line."""
        await self._reject(status, why)
        self.shared.access_log.write_refused(self.remote_addr, status, method, path)

    async def _reject(self, status: int, why: str) -> None:
        """Answer bad input with `status` and close; nothing reached an upstream."""
        log.info("rejecting request from %s: %s", self.remote_addr, why)
        if self.response_started:
            return
        reply = status_reply(status)
        headers = [
            *reply.headers,
            date_header(int(time.time())),
            (b"content-length", str(len(reply.body)).encode()),
        ]
        head, writer = self.start_response(status, reason(status), headers, close=True)
        with contextlib.suppress(DownstreamError):  # the client may be gone
            await self.send(head + writer.piece(reply.body))
