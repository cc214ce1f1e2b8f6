"""Small outbound HTTP requests the gateway makes itself (identity provider discovery, JWKS,
token introspection, forward-auth's and opa's checks, http-logger's batches, proxy-mirror's
copies): h11 in the CLIENT role, http or https.

Connections are kept for the next request to the same origin (`KeepAlive`: how many idle
ones, for how long; `None` closes each after its answer, with `Connection: close`). An
idle connection the server closed or wrote to is dropped when taken; one that fails
before any byte of the answer (the server closed it as the request went out) is replaced
by a fresh one, once. The idle connections belong to the trio run and are closed by
`close_idle()` when the gateway stops.

Not for proxying: bodies are read whole, up to `MAX_BODY`. `wait_request` takes no timeout
(the caller wraps each call in the configured one); `wait_response` takes one. Raises
`FetchError` for any failure.
"""

from __future__ import annotations

import functools
import os
import select
import ssl
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import h11
import trio

from gateway.config.ssl import load_pairs

MAX_BODY = 1024 * 1024


class FetchError(Exception):
    """The request could not be completed (connect, TLS, protocol, or size)."""


class _Stale(Exception):
    """A kept connection failed before any byte of the answer: try a fresh one."""


def tls_context(verify: bool, client: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A TLS client context: the system's CAs (or `SSL_CERT_FILE` / `SSL_CERT_DIR`'s) and
    the host checked, or (`verify` false) nothing checked; with `client`, a (certificate
    chain, key) PEM pair to show a server that asks. Built again only when the CA bundle
    changes (loading it takes milliseconds)."""
    paths = ssl.get_default_verify_paths()
    try:
        stamp = os.stat(paths.cafile).st_mtime_ns if paths.cafile else 0
    except OSError:
        stamp = 0
    return _tls_context(verify, client, paths.cafile, paths.capath, stamp)


@functools.lru_cache(maxsize=64)
def _tls_context(
    verify: bool,
    client: tuple[str, str] | None,
    _cafile: str | None,
    _capath: str | None,
    _stamp: int,
) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client is not None:
        load_pairs(context, [client])
    return context


class Response(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    body: bytes


class KeepAlive(NamedTuple):
    """How many idle connections to an origin are kept (`pool`), each for `idle_s`."""

    pool: int = 5
    idle_s: float = 60.0


DEFAULT_KEEPALIVE = KeepAlive()

Origin = tuple[str, str, int, bool]  # scheme, host, port, verify


class Idle(NamedTuple):
    """A kept connection and what its protocol needs to go on with it (h11's parser here,
    the next message id for LDAP)."""

    stream: trio.abc.Stream
    state: Any
    expires: float


_IDLE: trio.lowlevel.RunVar[dict[Origin, list[Idle]]] = trio.lowlevel.RunVar("fetch_idle")


def _idle_lists() -> dict[Origin, list[Idle]]:
    try:
        return _IDLE.get()
    except LookupError:
        lists: dict[Origin, list[Idle]] = {}
        _IDLE.set(lists)
        return lists


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket


def _close_now(stream: trio.abc.Stream) -> None:
    """Close without a TLS goodbye or a checkpoint (for idle connections)."""
    _socket_of(stream).close()


def _readable(sock: trio.socket.SocketType) -> bool:
    """Whether an idle connection has something to read (a FIN, or bytes out of turn): a
    zero-timeout poll (select() cannot take descriptors past 1023)."""
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return bool(poll.poll(0))


def take_idle(origin: Origin, now: float) -> Idle | None:
    """The newest idle connection to `origin` that is still quiet, or None."""
    kept = _idle_lists().get(origin)
    while kept:
        idle = kept.pop()
        if now < idle.expires and not _readable(_socket_of(idle.stream)):
            return idle
        _close_now(idle.stream)  # expired, or the server closed it or wrote out of turn
    return None


def give_idle(origin: Origin, idle: Idle, pool: int, now: float) -> None:
    lists = _idle_lists()
    for kept in lists.values():  # expired connections go, whichever origin they are for
        while kept and kept[0].expires <= now:
            _close_now(kept.pop(0).stream)
    kept = lists.setdefault(origin, [])
    kept.append(idle)
    while len(kept) > pool:
        _close_now(kept.pop(0).stream)


def close_idle() -> None:
    """Close every idle connection of this trio run."""
    lists = _idle_lists()
    for kept in lists.values():
        for idle in kept:
            _close_now(idle.stream)
    lists.clear()


async def wait_request(
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    verify_tls: bool = True,
    keepalive: KeepAlive | None = DEFAULT_KEEPALIVE,
) -> tuple[int, bytes]:
    """(status, body) of one request to `url`; raises FetchError."""
    response = await _exchange(
        method, url, headers, body, verify_tls, accept_json=True, keepalive=keepalive
    )
    return response.status, response.body


async def wait_response(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    verify_tls: bool = True,
    within_s: float,
    keepalive: KeepAlive | None = DEFAULT_KEEPALIVE,
) -> Response:
    """The whole response to one request, within `within_s` seconds; raises FetchError."""
    with trio.move_on_after(within_s):
        return await _exchange(
            method, url, headers, body, verify_tls, accept_json=False, keepalive=keepalive
        )
    raise FetchError(f"no answer within {within_s:g} s")


async def _exchange(
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None,
    body: bytes,
    verify_tls: bool,
    *,
    accept_json: bool,
    keepalive: KeepAlive | None,
) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    origin: Origin = (parts.scheme, parts.hostname, port, verify_tls)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request_headers = [] if keepalive is not None else [("connection", "close")]
    if not any(name.lower() == "host" for name, _ in headers or ()):
        request_headers.insert(0, ("host", parts.netloc.rpartition("@")[2]))
    if accept_json:
        request_headers.append(("accept", "application/json"))
    request_headers += headers or []
    if body:
        request_headers.append(("content-length", str(len(body))))
    request = h11.Request(method=method, target=target, headers=request_headers)
    idle = take_idle(origin, trio.current_time()) if keepalive is not None else None
    while True:
        try:
            if idle is not None:
                stream, conn = idle.stream, idle.state
            else:
                stream = await open_stream(
                    parts.hostname, port, parts.scheme == "https", verify_tls
                )
                conn = h11.Connection(h11.CLIENT)
            try:
                response = await _round_trip(stream, conn, request, body, idle is not None)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        except _Stale:
            idle = None  # once more, on a fresh connection
            continue
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from None
        break
    if keepalive is not None and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        now = trio.current_time()
        give_idle(origin, Idle(stream, conn, now + keepalive.idle_s), keepalive.pool, now)
    else:
        await trio.aclose_forcefully(stream)
    return response


async def open_stream(host: str, port: int, tls: bool, verify_tls: bool) -> trio.abc.Stream:
    """A connection to `host:port`, over TLS (handshake done) when `tls`; raises OSError,
    ssl.SSLError."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if tls:
        tls_stream = trio.SSLStream(stream, tls_context(verify_tls), server_hostname=host)
        try:
            await tls_stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        stream = tls_stream
    return stream


async def _round_trip(
    stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request, body: bytes, kept: bool
) -> Response:
    """One request and its whole answer; raises _Stale when a kept connection fails before
    any byte of the answer came."""
    data = conn.send(request) or b""
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    answered = False
    try:
        await stream.send_all(data)
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        out = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = bytes(await stream.receive_some(65536))
                answered = answered or bool(chunk)
                conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
                response_headers = list(event.headers)
            elif isinstance(event, h11.Data):
                out += event.data
                if len(out) > MAX_BODY:
                    raise FetchError("response body too large")
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, response_headers, bytes(out))
            elif isinstance(event, h11.ConnectionClosed):
                if kept and not answered:
                    raise _Stale
                raise FetchError("connection closed before the response ended")
    except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
        if kept and not answered:
            raise _Stale from None
        raise
