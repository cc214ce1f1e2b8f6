"""HTTPS on `server.ssl_listen`: the certificates of `ssls`, picked by the client's SNI.

`Certificates` is built with each config. Its `context` answers every handshake; the SNI
the client sent picks the entry's own context during the handshake, as APISIX's SNI router
does: the exact name first, then `*.parent` for a name one label below `parent`, then `*`.
A client that sends no SNI, or one no entry names, gets no certificate: the handshake fails
(APISIX: "failed to find SNI", "failed to find any SSL certificate by SNI"). TLS 1.2 and
1.3 are offered (APISIX's default `ssl_protocols`), with ALPN `http/1.1`.

`TlsIO` gives a client connection the same calls as `fastio.FastSocket`, through trio's
`SSLStream`: a TLS record cannot be read or written directly on the socket, so every read
and write takes the waiting path.
"""

from __future__ import annotations

import math
import socket
import ssl
import tempfile
from pathlib import Path

import trio

from gateway.config.ssl import Ssl, normal_sni
from gateway.fastio import socket_has_input
from gateway.http.replies import error_msg

ALPN = ["http/1.1"]
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
    """A server context holding every (certificate chain, key) pair of one entry.

    OpenSSL loads certificates from files only: the PEM text is written to a directory only
    this process can read and removed as soon as it is loaded."""
    context = _base_context()
    with tempfile.TemporaryDirectory(prefix="gateway-tls-") as directory:
        cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        for cert, key in pairs:
            cert_path.write_text(cert)
            key_path.touch(mode=0o600)
            key_path.write_text(key)
            context.load_cert_chain(cert_path, key_path)
    return context


def _base_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
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


def sent_server_name(stream: trio.SSLStream[trio.SocketStream]) -> str | None:
    """The SNI a handshake on `stream` asked for, if it got that far (trio keeps the
    SSLObject private: read defensively)."""
    return getattr(getattr(stream, "_ssl_object", None), _SNI_ATTR, None)


def handshake_failure(stream: trio.SSLStream[trio.SocketStream], failure: BaseException) -> str:
    """Why a handshake failed, for the log."""
    if not isinstance(failure, ssl.SSLError):
        return str(failure) or type(failure).__name__
    if failure.reason == "CALLBACK_FAILED":
        name = sent_server_name(stream)
        return "the client sent no SNI" if name is None else f"no certificate for SNI {name!r}"
    return failure.reason or str(failure)


class TlsSession:
    """A client connection's finished handshake: its stream and the SNI it was for."""

    __slots__ = ("server_name", "stream")

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.server_name = sent_server_name(stream)


class TlsIO:
    """A client connection's reads and writes through TLS (see the module docstring).

    Raises OSError like `FastSocket`: TimeoutError when a write makes no progress within
    `send_timeout`, ConnectionError when the stream broke."""

    __slots__ = ("send_timeout", "sock", "tls")

    def __init__(self, tls: trio.SSLStream[trio.SocketStream], sock: socket.socket) -> None:
        self.tls = tls
        self.sock = sock
        self.send_timeout = math.inf

    def try_receive(self, max_bytes: int) -> bytes | None:
        return None

    async def wait_receive(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self.tls.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionError(str(exc.__cause__ or exc)) from None

    async def receive(self, max_bytes: int) -> bytes:
        return await self.wait_receive(max_bytes)

    def send_some(self, data: bytes | bytearray) -> int:
        return 0

    async def wait_send_rest(self, data: bytes | bytearray, sent: int) -> None:
        with trio.move_on_after(self.send_timeout) as waited:
            try:
                await self.tls.send_all(memoryview(data)[sent:])
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionError(str(exc.__cause__ or exc)) from None
        if waited.cancelled_caught:
            raise TimeoutError("no write progress within the send timeout")

    async def send_parts(self, parts: list[bytes]) -> None:
        await self.wait_send_rest(b"".join(parts), 0)

    async def send_all(self, data: bytes | bytearray) -> None:
        await self.wait_send_rest(data, 0)

    def has_input(self) -> bool:
        """Whether bytes (or the peer's close) wait to be read: decrypted ones TLS holds
        (read through trio's private attributes, defensively) or ones on the socket."""
        ssl_object = getattr(self.tls, "_ssl_object", None)
        if ssl_object is not None and ssl_object.pending():
            return True
        return socket_has_input(self.sock)
