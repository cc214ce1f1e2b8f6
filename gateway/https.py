"""HTTPS on `server.ssl_listen`: the certificates of `ssls`, picked by the client's SNI.

`Certificates` is built with each config. Its `context` answers every handshake; the SNI
the client sent picks the entry's own context during the handshake, as APISIX's SNI router
does: the exact name first, then `*.parent` for a name one label below `parent`, then `*`.
A client that sends no SNI, or one no entry names, gets no certificate: the handshake fails
(APISIX: "failed to find SNI", "failed to find any SSL certificate by SNI"). TLS 1.2 and
1.3 are offered (APISIX's default `ssl_protocols`), with ALPN `http/1.1`.

`TlsConnection` is one client connection over TLS, with the calls of `fastio.FastSocket`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import trio

from gateway.config.ssl import Ssl, load_pairs, normal_sni
from gateway.fastio import FastSocket
from gateway.http.replies import error_msg

ALPN = ["http/1.1"]
RECORD_READ = 64 * 1024  # socket bytes read per try: several TLS records (16 KiB each)
# Where the SNI callback leaves the name the client asked for, on the handshake's SSLObject
# (a server-side SSLObject does not keep it).
_SNI_ATTR = "gateway_server_name"


def plain_http_answer() -> bytes:
    """The answer to plain HTTP sent to an HTTPS address (nginx's 400 "The plain HTTP
    request was sent to HTTPS port"), in the gateway's error shape; then the connection
    closes."""
    reply = error_msg(400, "400 The plain HTTP request was sent to HTTPS port")
    head = b"HTTP/1.1 400 Bad Request\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in reply.headers
    )
    length = str(len(reply.body)).encode()
    return head + b"content-length: " + length + b"\r\nconnection: close\r\n\r\n" + reply.body


PLAIN_HTTP_TO_HTTPS = plain_http_answer()


def _server_context(pairs: list[tuple[str, str]]) -> ssl.SSLContext:
    """A server context holding every (certificate chain, key) pair of one entry."""
    context = _base_context()
    load_pairs(context, pairs)
    return context


def _base_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION  # a TLS 1.2 client cannot restart the handshake
    context.set_alpn_protocols(ALPN)
    return context


class Certificates:
    """The server side of TLS for one config."""

    def __init__(self, ssls: list[Ssl]) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}  # "*.example.com" under "example.com"
        self.any: ssl.SSLContext | None = None
        for entry in ssls:
            if entry.status != 1:
                continue
            context = _server_context(entry.pairs)
            for name in map(normal_sni, entry.names):
                if name == "*":
                    self.any = context
                elif name.startswith("*."):
                    self.wildcard[name[2:]] = context
                else:
                    self.exact[name] = context
        self.context = _base_context()
        self.context.sni_callback = self._on_server_name

    def pick(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context for a handshake that asked for `server_name`, if any entry names it."""
        if server_name is None:
            return None
        name = normal_sni(server_name)
        context = self.exact.get(name)
        if context is None:
            _, dot, parent = name.partition(".")
            if dot:
                context = self.wildcard.get(parent)
        return context if context is not None else self.any

    def _on_server_name(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        setattr(connection, _SNI_ATTR, server_name)
        context = self.pick(server_name)
        if context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        connection.context = context
        return None


class TlsConnection(trio.abc.Stream):
    """A client connection over TLS, with `fastio.FastSocket`'s calls (see the module
    docstring).

    The TLS records go between an `ssl.SSLObject` and the socket through memory buffers, so
    a read or write tries the socket directly and waits only when the kernel would block,
    as on a plain connection (trio's `SSLStream` passes through the scheduler, a lock and a
    conflict check on every call: this way a small HTTPS request costs about a third less).
    As a `trio.abc.Stream` it also serves the WebSocket tunnel and the lingering close.

    Only writes send records. A read that makes TLS answer (a TLS 1.3 key update) leaves
    that answer for the next write: never two tasks writing records at once.
    Raises OSError like `FastSocket` (ssl.SSLError is one): ConnectionError when the peer
    went away in the middle of a record, TimeoutError when a write makes no progress
    within `send_timeout`.
    """

    __slots__ = ("_incoming", "_outgoing", "obj", "raw")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.raw = FastSocket(sock)

    @property
    def send_timeout(self) -> float:
        return self.raw.send_timeout

    @send_timeout.setter
    def send_timeout(self, seconds: float) -> None:
        self.raw.send_timeout = seconds

    @property
    def server_name(self) -> str | None:
        """The SNI the client's handshake asked for, if it got that far."""
        return getattr(self.obj, _SNI_ATTR, None)

    async def handshake(self) -> None:
        """Shake hands (within the caller's deadline); raises OSError, ssl.SSLError for
        TLS's own faults (then its alert has been offered to the client)."""
        obj = self.obj
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._flush()
                    data = await self.raw.receive(RECORD_READ)
                    if not data:
                        raise ConnectionError("the client closed during the handshake") from None
                    self._incoming.write(data)
        except ssl.SSLError:
            self.raw.send_some(self._outgoing.read())
            raise
        await self._flush()

    def _decrypted(self, max_bytes: int) -> bytes | None:
        """Bytes TLS has ready, b"" at the client's close, None when it needs more records."""
        try:
            return self.obj.read(max_bytes)
        except ssl.SSLWantReadError:
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def try_receive(self, max_bytes: int) -> bytes | None:
        data = self._decrypted(max_bytes)
        while data is None:
            records = self.raw.try_receive(RECORD_READ)
            if records is None:
                return None
            if not records:
                return self._closed()
            self._incoming.write(records)
            data = self._decrypted(max_bytes)
        return data

    async def wait_receive(self, max_bytes: int) -> bytes:
        data = self._decrypted(max_bytes)
        while data is None:
            records = await self.raw.wait_receive(RECORD_READ)
            if not records:
                return self._closed()
            self._incoming.write(records)
            data = self._decrypted(max_bytes)
        return data

    def _closed(self) -> bytes:
        """The socket's end: b"" between records (nginx and APISIX take such a close as an
        end too), ConnectionError in the middle of one."""
        if self._incoming.pending:
            raise ConnectionError("the client closed in the middle of a TLS record")
        return b""

    async def receive(self, max_bytes: int) -> bytes:
        data = self.try_receive(max_bytes)
        if data is None:
            return await self.wait_receive(max_bytes)
        return data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.receive(max_bytes or RECORD_READ)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.obj.write(data)
        await self._flush()

    async def send_parts(self, parts: list[bytes]) -> None:
        self.obj.write(b"".join(parts))
        await self._flush()

    async def _flush(self) -> None:
        records = self._outgoing.read()
        if records:
            await self.raw.send_all(records)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.raw.sock)

    def has_input(self) -> bool:
        """Whether bytes (or the client's close) wait to be read, in TLS or on the socket."""
        return bool(self.obj.pending() or self._incoming.pending) or self.raw.has_input()

    async def aclose(self) -> None:
        """Offer TLS's close (no waiting for the client's), then close the socket."""
        sock = self.raw.sock
        if sock.fileno() < 0:
            return
        with contextlib.suppress(ssl.SSLError, OSError):
            self.obj.unwrap()
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.raw.send_some(self._outgoing.read())
        trio.lowlevel.notify_closing(sock)
        sock.close()
        await trio.lowlevel.checkpoint()


def handshake_failure(connection: TlsConnection, failure: BaseException) -> str:
    """Why a handshake failed, for the log."""
    if not isinstance(failure, ssl.SSLError):
        return str(failure) or type(failure).__name__
    if failure.reason == "CALLBACK_FAILED":
        name = connection.server_name
        return "the client sent no SNI" if name is None else f"no certificate for SNI {name!r}"
    return failure.reason or str(failure)
