"""Forward one request to its upstream and relay the response, streaming both bodies.

Owns the upstream exchange: node choice, pooled connection checkout, the one retry of a
stale pooled connection, timeouts, and the hand-over to the WebSocket tunnel after a 101
(`tunnel.py`). Bodies move one receive at a time (at most 64 KiB), and every event parsed
from one upstream read is sent to the client in a single write, so memory per request is
bounded and backpressure is whatever the slower side imposes.

Raises `UpstreamError` (the downstream loop answers 502/504, or aborts the client
connection when part of the response was already sent) and `DownstreamError` when the
client goes away.
"""

from __future__ import annotations

import logging
import zlib
from time import perf_counter
from typing import Protocol

import h11
import trio

from gateway.context import RequestContext
from gateway.errors import UpstreamError, UpstreamPhase
from gateway.http.compression import GzipStream, start_gzip
from gateway.http.headers import (
    client_response_headers,
    restated_framing,
    upstream_request_headers,
)
from gateway.http.replies import Header, reason
from gateway.http.response import LAST_CHUNK, ResponseWriter, encode_chunk
from gateway.pipeline import finish_whole_body, run_header_filters
from gateway.runtime import CompiledRoute, CompiledUpstream
from gateway.tunnel import tunnel
from gateway.upstream.balancer import Node
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.framing import (
    MAX_HEAD,
    BodyReader,
    FramingError,
    NoBody,
    ResponseHead,
    body_reader,
    encode_request_head,
    find_head_end,
    parse_response_head,
)
from gateway.upstream.health import TCP_FAILURE, TIMEOUT, Health
from gateway.upstream.pool import PoolKey, PoolManager
from gateway.upstream.tls import TlsConnection, tls_server_name

# The most of an upstream body read whole for response-rewrite's `filters`.
MAX_FILTERED_BODY = 8 * 1024 * 1024

log = logging.getLogger("gateway")

# RFC 9110 section 9.2.2: a request that may be sent twice with the same effect.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class Client(Protocol):
    """What the proxy needs of the downstream connection."""

    @property
    def h11(self) -> h11.Connection: ...

    def start_response(
        self,
        status: int,
        reason: bytes,
        headers: list[Header],
        close: bool = False,
        lines: bytes = b"",
    ) -> tuple[bytes, ResponseWriter]: ...

    def start_switching(self, headers: list[Header], reason: bytes) -> bytes: ...

    @property
    def stream(self) -> trio.abc.Stream: ...

    @property
    def body_started(self) -> bool: ...

    @property
    def body_length(self) -> int | None: ...

    @property
    def body_complete(self) -> bool: ...

    @property
    def receive_size(self) -> int: ...

    async def receive_body(self) -> bytes | None: ...

    async def send(self, data: bytes | bytearray) -> None: ...

    async def send_parts(self, parts: list[bytes]) -> None: ...


def _framing(ctx: RequestContext, body_length: int | None) -> tuple[bytes, bytes] | None:
    """The request body framing restated for the upstream, from the client's framing as
    `request_body` read it (`body_length` None: chunked)."""
    if ctx.body is not None:
        return (b"content-length", str(len(ctx.body)).encode()) if ctx.body else None
    if body_length is None:
        return (b"transfer-encoding", b"chunked")
    return (b"content-length", str(body_length).encode()) if body_length else None


def _host_header(
    ctx: RequestContext, upstream: CompiledUpstream, node_host: bytes, client_host: bytes | None
) -> bytes:
    if ctx.upstream_host is not None:
        return ctx.upstream_host
    if upstream.pass_host == "node":
        return node_host
    if upstream.pass_host == "rewrite" and upstream.upstream_host is not None:
        return upstream.upstream_host
    return client_host or node_host


async def forward(
    client: Client, ctx: RequestContext, route: CompiledRoute, pools: PoolManager
) -> None:
    """Proxy the request in `ctx` to `route`'s upstream and stream the response to `client`.

    A node that cannot be connected to never saw the request: up to the upstream's
    `retries` other nodes are tried, whatever the method, and the balancer leaves it out
    of its picks for a while (see `upstream.balancer`)."""
    upstream = ctx.upstream or route.upstream
    assert upstream is not None  # the caller answers a route without one
    key = "" if upstream.hash_key is None else upstream.hash_key(ctx)
    node = upstream.balancer.pick(ctx.start, key)
    framing = _framing(ctx, client.body_length)
    method = ctx.upstream_method or ctx.method
    head, pool_key, server_name = _request_head(ctx, upstream, node, method, framing)
    chunked = framing is not None and framing[0] == b"transfer-encoding"
    started = perf_counter()  # a duration only: cheaper than trio's clock
    fresh_only = False
    tried: list[Node] | None = None
    try:
        while True:
            # The request's start is recent enough to judge which pooled connections idled out.
            conn = None if fresh_only else pools.checkout(pool_key, ctx.start)
            if conn is None:
                try:
                    if upstream.tls is None:
                        conn = await UpstreamConnection.wait_open(node, upstream.connect_timeout)
                    else:
                        conn = await TlsConnection.wait_open_tls(
                            node, upstream.connect_timeout, upstream.tls, server_name, pool_key
                        )
                except UpstreamError as exc:
                    now = trio.current_time()
                    upstream.balancer.mark_failed(node, now)
                    if upstream.health is not None:
                        _report_failure(upstream.health, node, exc)
                    if tried is None:
                        tried = [node]
                    next_node = (
                        upstream.balancer.pick_untried(tried, now, key)
                        if len(tried) <= upstream.retries
                        and (
                            upstream.retry_timeout == 0
                            or perf_counter() - started < upstream.retry_timeout
                        )
                        else None
                    )
                    if next_node is None:
                        raise
                    log.warning(
                        "upstream %s failed for route %s: %s; trying %s",
                        node.label, route.id, exc, next_node.label,
                    )  # fmt: skip
                    upstream.balancer.release(node)
                    node = next_node
                    tried.append(node)
                    head, pool_key, server_name = _request_head(
                        ctx, upstream, node, method, framing
                    )
                    continue
                pools.opened()
            try:
                await _exchange(
                    client, ctx, conn, method, head, framing is not None, chunked, upstream, pools
                )
                if upstream.health is not None and upstream.health.passive is not None:
                    upstream.health.report_status(node, ctx.status, upstream.health.passive)
                return
            except UpstreamError as exc:
                conn.close()
                if (
                    exc.reused
                    and not exc.responded
                    and not fresh_only
                    and not client.body_started
                    and method in IDEMPOTENT
                ):
                    fresh_only = True  # RFC 9112 section 9.3.1: retry once on a new connection
                    continue
                if upstream.health is not None:
                    _report_failure(upstream.health, node, exc)
                raise
            except BaseException:
                conn.close()
                raise
    finally:
        ctx.upstream_time = elapsed = perf_counter() - started
        # The answer's time (about when it ended on the picks' clock), for ewma.
        upstream.balancer.release(node, elapsed, ctx.start + elapsed)


def _report_failure(health: Health, node: Node, exc: UpstreamError) -> None:
    """A failed exchange with `node`, for passive health checks."""
    if health.passive is not None:
        health.report(node, TIMEOUT if exc.timeout else TCP_FAILURE, health.passive)


def _request_head(
    ctx: RequestContext,
    upstream: CompiledUpstream,
    node: Node,
    method: bytes,
    framing: tuple[bytes, bytes] | None,
) -> tuple[bytes, PoolKey, str | None]:
    """The request head for `node` (its Host with `pass_host: node`), the pool its
    connection comes from, and for TLS the server name (from that same Host); raises
    UpstreamError."""
    ctx.upstream_addr = node.label
    host = _host_header(ctx, upstream, node.host_header, ctx.header(b"host"))
    headers = upstream_request_headers(
        ctx.headers,
        host=host,
        remote_addr=ctx.remote_addr.encode(),
        forwarded_host=ctx.host,
        server_port=str(ctx.server_port).encode(),
        proto=b"http" if ctx.tls is None else b"https",
        framing=framing,
        websocket=ctx.websocket,
    )
    try:
        head = encode_request_head(method, ctx.upstream_uri or ctx.target, headers)
    except FramingError as exc:
        raise UpstreamError(UpstreamPhase.SEND, str(exc)) from None
    if upstream.tls is None:
        return head, node.address, None
    server_name = tls_server_name(host)
    return head, (*node.address, server_name, *upstream.tls_identity), server_name


async def _send_upstream(conn: UpstreamConnection, data: bytes, upstream: CompiledUpstream) -> None:
    """Send within the upstream's configured send timeout; raises UpstreamError (504 on timeout).

    The timeout scope is entered only when the kernel cannot take everything at once."""
    sent = conn.send_some(data)
    if sent == len(data):
        return
    with trio.move_on_after(upstream.send_timeout):
        await conn.wait_send_rest(data, sent)
        return
    raise UpstreamError(UpstreamPhase.SEND, "timed out", timeout=True, reused=conn.reused)


async def _send_request(
    client: Client,
    ctx: RequestContext,
    conn: UpstreamConnection,
    head: bytes,
    chunked: bool,
    upstream: CompiledUpstream,
) -> bool:
    """Send the request head and its body; False when the upstream answered (or closed)
    before it took the whole body, which is then not sent on (see `_send_body`)."""
    if ctx.body is not None:
        # A plugin already read the whole body: send it with the head.
        return await _send_body(conn, head + ctx.body, upstream)
    await _send_upstream(conn, head, upstream)
    while (chunk := await client.receive_body()) is not None:
        if not await _send_body(conn, encode_chunk(chunk) if chunked else chunk, upstream):
            return False
    return not chunked or await _send_body(conn, LAST_CHUNK, upstream)


async def _send_body(conn: UpstreamConnection, data: bytes, upstream: CompiledUpstream) -> bool:
    """Send a piece of the request body within the send timeout (504 after it); False when
    the upstream answered, closed or reset instead of taking it: an upstream may answer
    before it reads the body (a 413, a 401), and that answer is what the client gets."""
    sent = conn.send_body_some(data)
    if sent == len(data):
        return True
    if sent is None:
        return False
    with trio.move_on_after(upstream.send_timeout):
        return await conn.wait_send_body_rest(data, sent)
    raise UpstreamError(UpstreamPhase.SEND, "timed out", timeout=True, reused=conn.reused)


async def _receive_upstream(
    conn: UpstreamConnection, upstream: CompiledUpstream, responded: bool, size: int
) -> bytes:
    """Some bytes within the read timeout (b"" at EOF); raises UpstreamError (504 on timeout).

    Bytes already there are taken without entering a timeout scope."""
    data = conn.try_receive(responded, size)
    if data is not None:
        return data
    return await _wait_upstream(conn, upstream, responded, size)


async def _wait_upstream(
    conn: UpstreamConnection, upstream: CompiledUpstream, responded: bool, size: int
) -> bytes:
    with trio.move_on_after(upstream.read_timeout):
        return await conn.wait_receive(responded, size)
    raise UpstreamError(
        UpstreamPhase.READ, "timed out", timeout=True, reused=conn.reused, responded=responded
    )


async def _exchange(
    client: Client,
    ctx: RequestContext,
    conn: UpstreamConnection,
    method: bytes,
    head: bytes,
    has_body: bool,
    chunked: bool,
    upstream: CompiledUpstream,
    pools: PoolManager,
) -> None:
    conn.requests += 1
    if has_body or ctx.body is not None:
        whole = await _send_request(client, ctx, conn, head, chunked, upstream)
    else:
        # Advance the client's parser past the (empty) body before answering.
        while await client.receive_body() is not None:
            pass
        await _send_upstream(conn, head, upstream)
        whole = True

    size = client.receive_size
    # Usually one read holds the whole head: kept as bytes, no copies. It may have begun to
    # arrive while the body was going out.
    buffer = conn.take_early() if conn.early else b""
    responded = False
    while True:  # the response head, skipping interim 1xx answers
        end = find_head_end(buffer)
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise UpstreamError(UpstreamPhase.READ, "response head too large", responded=True)
            if not responded:
                # The answer cannot be there yet: let the other connections run first,
                # after which it often is (no wait registered, no timeout scope entered).
                await trio.lowlevel.checkpoint()
            data = await _receive_upstream(conn, upstream, responded, size)
            if not data:
                raise UpstreamError(
                    UpstreamPhase.READ, "closed before the response ended",
                    reused=conn.reused, responded=responded,
                )  # fmt: skip
            responded = True
            buffer = buffer + data if buffer else data
            continue
        try:
            response = parse_response_head(buffer[:end])
        except FramingError as exc:
            raise UpstreamError(
                UpstreamPhase.READ, f"invalid response: {exc}", responded=True
            ) from None
        buffer = buffer[end:]
        if response.status >= 200:
            break
        if response.status == 101 and ctx.websocket:
            await tunnel(client, ctx, conn, response, buffer, upstream)
            return
        # 100 Continue is the gateway's own business with the client; 103 is dropped.

    try:
        body = body_reader(method, response)
    except FramingError as exc:
        raise UpstreamError(
            UpstreamPhase.READ, f"invalid response: {exc}", responded=True
        ) from None
    status = response.status
    ctx.status = status
    ctx.response_head = response
    no_body = isinstance(body, NoBody)
    # The chain when it has header filters (looked up once).
    filter_chain = ctx.chain if ctx.chain is not None and ctx.chain.header_filters else None
    gzip: GzipStream | None = None  # the gzip plugin's compressor, when nginx's rules agree
    if filter_chain is not None:
        # Filters see and edit every header: decoded for them.
        lines = b""
        headers = client_response_headers(response.headers, status=status, no_body=no_body)
    else:
        # The upstream's end-to-end lines go out as they came, after the restated framing.
        lines = response.lines
        headers = restated_framing(
            status, response.content_length, response.transfer_encoding is not None, no_body
        )
    if ctx.response_headers:
        headers.extend(ctx.response_headers)
    if filter_chain is not None:
        run_header_filters(filter_chain, ctx, status, headers)
        status = ctx.status  # a filter may change it, or the body (response-rewrite)
        if ctx.body_rewrite is not None and ctx.response_body is None and not no_body:
            whole_body = await _read_whole_body(conn, upstream, body, buffer, size)
            ctx.response_body = ctx.body_rewrite(ctx, _decoded(whole_body, response))
        if ctx.response_body is not None:
            body_out = finish_whole_body(ctx, method, status, headers, ctx.response_body)
            await _send_replaced(client, body_out, status, headers, whole)
            conn.close()  # its body goes unread
            return
        if ctx.gzip:
            gzip = start_gzip(ctx.gzip, method, status, ctx.headers, headers)
    # The body bytes that came with the head are checked before the head is accepted: a
    # body that cannot be framed from its first byte is a 502, not a head and a cut.
    pieces = _feed(body, buffer)
    head, writer = client.start_response(
        status,
        reason(status) or response.reason,
        headers,
        # The upstream answered before the whole body went out: the rest of it is not read.
        close=not whole and not client.body_complete,
        lines=lines,
    )
    # Everything parsed from one upstream read goes out in one write (joined when small,
    # gathered with sendmsg when not: large pieces are not copied into one buffer first).
    pending = [head]
    copy = ctx.response_copy
    while True:
        if copy is not None:
            for piece in pieces:
                copy.add(piece)
        if gzip is not None:
            pieces = [gzip.feed(piece) for piece in pieces]
        for piece in pieces:
            pending.append(writer.piece(piece))
        if body.done:
            break
        await client.send_parts(pending)
        pending = []
        data = await _receive_upstream(conn, upstream, True, size)
        if not data:
            if body.ends_at_close:
                break
            raise UpstreamError(UpstreamPhase.READ, "closed mid-body", responded=True)
        pieces = _feed(body, data)
    if gzip is not None:
        pending.append(writer.piece(gzip.end()))
    pending.append(writer.end())
    await client.send_parts(pending)
    if copy is not None:
        copy.complete = True
    # Reuse only a connection both sides keep, whose response ended where its framing said,
    # with nothing after it (bytes nobody asked for must never be read as the next answer).
    if whole and response.keep_alive and not body.ends_at_close and not body.leftover:
        pools.checkin(
            conn,
            upstream.pool_size,
            upstream.max_requests,
            upstream.idle_timeout,
            trio.current_time(),
        )
    else:
        conn.close()


async def _send_replaced(
    client: Client, body: bytes, status: int, headers: list[Header], whole: bool
) -> None:
    """The answer with a header filter's body in place of the upstream's."""
    headers[:] = [h for h in headers if h[0] != b"content-length" and h[0] != b"transfer-encoding"]
    headers.append((b"content-length", str(len(body)).encode()))
    head, writer = client.start_response(
        status, reason(status), headers, close=not whole and not client.body_complete
    )
    await client.send_parts([head, writer.piece(body), writer.end()])


async def _read_whole_body(
    conn: UpstreamConnection, upstream: CompiledUpstream, body: BodyReader, buffer: bytes, size: int
) -> bytes:
    """The rest of the upstream's body, for a filter that rewrites it whole (502 past
    `MAX_FILTERED_BODY`)."""
    out = bytearray().join(_feed(body, buffer))
    while not body.done:
        data = await _receive_upstream(conn, upstream, True, size)
        if not data:
            if body.ends_at_close:
                break
            raise UpstreamError(UpstreamPhase.READ, "closed mid-body", responded=True)
        for piece in _feed(body, data):
            out += piece
        if len(out) > MAX_FILTERED_BODY:
            raise UpstreamError(UpstreamPhase.READ, "body too large to rewrite", responded=True)
    return bytes(out)


def _decoded(data: bytes, response: ResponseHead) -> bytes:
    """The body without its gzip Content-Encoding (the only one rewritten)."""
    encoding = next((v for n, v in response.headers if n == b"content-encoding"), b"")
    if encoding.strip().lower() != b"gzip":
        return data
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(data, MAX_FILTERED_BODY + 1)
    except zlib.error as exc:
        raise UpstreamError(UpstreamPhase.READ, f"bad gzip body: {exc}", responded=True) from None
    if len(out) > MAX_FILTERED_BODY:
        raise UpstreamError(UpstreamPhase.READ, "body too large to rewrite", responded=True)
    return out


def _feed(body: BodyReader, data: bytes) -> list[bytes]:
    """The body pieces in `data`; raises UpstreamError for a body that cannot be framed."""
    try:
        return body.feed(data)
    except FramingError as exc:
        raise UpstreamError(UpstreamPhase.READ, f"bad body: {exc}", responded=True) from None
