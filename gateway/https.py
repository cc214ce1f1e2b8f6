"""HTTPS on `server.ssl_listen`: the certificates of `ssls`, picked by the client's SNI.

`Certificates` is built with each config. The SNI in a client's ClientHello (read by
`tlshello` before TLS starts) picks the entry whose context answers the handshake, as
APISIX's SNI router does: the exact name first, then `*.parent` for a name one label below
`parent`, then `*`. A client that sends no SNI, or one no entry names, gets no certificate:
the handshake fails (APISIX: "failed to find SNI", "failed to find any SSL certificate by
SNI"). TLS 1.2 and 1.3 are offered (APISIX's default `ssl_protocols`), with ALPN
`http/1.1`. An entry's `client` (mutual TLS) is its context's verify settings, so it
applies from the handshake on.

`TlsConnection` is one client connection over TLS, with the calls of `fastio.FastSocket`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import socket
import ssl

import trio
from cryptography import x509

from gateway.config.ssl import Ssl, load_pairs, normal_sni, sni_keys
from gateway.fastio import FastSocket
from gateway.http.replies import error_msg
from gateway.patterns import PatternTimeout
from gateway.tlshello import NEED_MORE, read_hello

log = logging.getLogger("gateway")

ALPN = ["http/1.1"]
RECORD_READ = 64 * 1024  # socket bytes read per try: several TLS records (16 KiB each)
# What OpenSSL takes for plain HTTP on a TLS port: a request line's method and a space.
_PLAIN_HTTP = re.compile(rb"[A-Z]{3,10} ")


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


_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def _base_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION  # a TLS 1.2 client cannot restart the handshake
    context.set_alpn_protocols(ALPN)
    return context


class ServerEntry:
    """One enabled `ssls` entry: its context, and its client certificate rules."""

    __slots__ = ("context", "depth", "mutual", "optional", "skip")

    def __init__(self, entry: Ssl) -> None:
        self.context = context = _server_context(entry.pairs)
        if entry.ssl_protocols is not None:
            versions = [_VERSIONS[name] for name in entry.ssl_protocols]
            context.minimum_version, context.maximum_version = min(versions), max(versions)
        client = entry.client
        self.mutual = client is not None
        self.depth = client.depth if client is not None else 0
        self.skip = client.skip if client is not None else None
        # With URIs to let through, a client without a certificate finishes its handshake
        # and each of its other requests is refused (APISIX: not rejected in the handshake).
        self.optional = self.skip is not None
        if client is not None:
            context.load_verify_locations(cadata=client.ca)
            context.verify_mode = ssl.CERT_OPTIONAL if self.optional else ssl.CERT_REQUIRED


class Certificates:
    """The server side of TLS for one config: its enabled `ssls` entries by SNI."""

    def __init__(self, ssls: list[Ssl], fallback_sni: str | None = None) -> None:
        self.fallback_sni = fallback_sni
        # By name as written: `api.example.com`, `*.example.com` or `*`.
        self.by_name: dict[str, ServerEntry] = {}
        for conf in ssls:
            entry = ServerEntry(conf)
            for name in conf.names:
                self.by_name[normal_sni(name)] = entry
        # For a handshake no entry answers: no certificate, and TLS's "unrecognized name".
        self.refuse = _base_context()
        self.refuse.sni_callback = _unrecognized

    def pick(self, server_name: str | None) -> ServerEntry | None:
        """The entry for a handshake that asked for `server_name` (or, asking for none, for
        the fallback SNI), if any names it."""
        if server_name is None:
            server_name = self.fallback_sni
            if server_name is None:
                return None
        for key in sni_keys(server_name):
            entry = self.by_name.get(key)
            if entry is not None:
                return entry
        return None


def _unrecognized(connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int:
    return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME


class HandshakeRefused(ConnectionError):
    """A handshake the gateway ends itself; `plain_http` when the client spoke HTTP."""

    def __init__(self, reason: str, plain_http: bool = False) -> None:
        super().__init__(reason)
        self.plain_http = plain_http


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

    __slots__ = (
        "_client",
        "_incoming",
        "_outgoing",
        "_sni_host",
        "entry",
        "obj",
        "raw",
        "server_name",
        "verify",
    )

    obj: ssl.SSLObject

    def __init__(self, sock: socket.socket) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.raw = FastSocket(sock)
        # Set by the handshake: the SNI asked for (as sent, and as a Host compares with
        # it) and the entry that answered it.
        self.server_name: str | None = None
        self._sni_host = b""
        self.entry: ServerEntry | None = None
        # nginx's `$ssl_client_verify`: SUCCESS, NONE, or FAILED:reason.
        self.verify = "NONE"
        self._client: ClientCertificate | None = None

    @property
    def send_timeout(self) -> float:
        return self.raw.send_timeout

    @send_timeout.setter
    def send_timeout(self, seconds: float) -> None:
        self.raw.send_timeout = seconds

    async def handshake(self, certificates: Certificates) -> None:
        """Shake hands (within the caller's deadline) with the entry the ClientHello's SNI
        picks; raises OSError: ssl.SSLError for TLS's own faults (its alert offered to the
        client), HandshakeRefused for the gateway's."""
        hello = NEED_MORE
        arrived = bytearray()
        while not hello.complete:
            data = await self.raw.receive(RECORD_READ)
            if not data:
                raise ConnectionError("the client closed before its ClientHello")
            arrived += data
            hello = read_hello(arrived)
        if not hello.tls:
            raise HandshakeRefused("not TLS", plain_http=_PLAIN_HTTP.match(arrived) is not None)
        self.server_name = hello.server_name
        self._sni_host = normal_sni(hello.server_name or "").encode()
        self.entry = entry = certificates.pick(hello.server_name)
        context = entry.context if entry is not None else certificates.refuse
        self.obj = obj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._incoming.write(arrived)
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
        if entry is not None and entry.mutual:
            self._check_client(entry)

    def _check_client(self, entry: ServerEntry) -> None:
        """`verify` from the client's certificate (TLS checked it against `client.ca`),
        and its chain against `client.depth`; HandshakeRefused when a certificate is
        required and the chain is too long."""
        if not self.obj.getpeercert():
            return  # none sent (the entry takes that: URIs to let through)
        chain = _verified_chain(self.obj)
        if chain is not None and len(chain) - 2 > entry.depth:
            self.verify = "FAILED:certificate chain too long"
            if not entry.optional:
                raise HandshakeRefused(
                    f"the client certificate's chain has {len(chain) - 2} intermediate"
                    f" certificates, client.depth allows {entry.depth}"
                )
            return
        self.verify = "SUCCESS"

    def refuses(self, path: bytes, host: bytes) -> str | None:
        """Why a request must get 400 on this connection, by its entry's client certificate
        rules (APISIX's checks before routing), or None."""
        entry = self.entry
        if entry is None or not entry.mutual:
            return None
        if self.verify != "SUCCESS":
            skip = entry.skip
            if skip is not None:
                try:
                    if skip.search(path.decode("latin-1")) is not None:
                        return None
                except PatternTimeout as exc:  # not shown to skip: the certificate is needed
                    log.warning("%s", exc)
            if self.verify == "NONE":
                return "client certificate was not present"
            return f"client certificate verification is not passed: {self.verify}"
        if host != self._sni_host:
            # A `*.example.com` entry: the client's certificate was checked for the name
            # in its SNI, not for another host of the same entry.
            return (
                f"client certificate verified with SNI {self.server_name},"
                f" but the host is {host.decode('latin-1')}"
            )
        return None

    @property
    def client(self) -> ClientCertificate | None:
        """The client's verified certificate, read once."""
        if self._client is None and self.verify == "SUCCESS":
            self._client = ClientCertificate(self.obj.getpeercert(binary_form=True) or b"")
        return self._client

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
        obj = getattr(self, "obj", None)
        pending = obj is not None and obj.pending()
        return bool(pending or self._incoming.pending) or self.raw.has_input()

    async def aclose(self) -> None:
        """Offer TLS's close (no waiting for the client's), then close the socket."""
        sock = self.raw.sock
        if sock.fileno() < 0:
            return
        obj = getattr(self, "obj", None)  # none before the ClientHello was read
        with contextlib.suppress(ssl.SSLError, OSError):
            if obj is not None:
                obj.unwrap()
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            self.raw.send_some(self._outgoing.read())
        trio.lowlevel.notify_closing(sock)
        sock.close()
        await trio.lowlevel.checkpoint()


def handshake_failure(connection: TlsConnection, failure: BaseException) -> str:
    """Why a handshake failed, for the log."""
    if not isinstance(failure, ssl.SSLError):
        return str(failure) or type(failure).__name__
    if failure.reason == "CALLBACK_FAILED" and connection.entry is None:
        name = connection.server_name
        return "the client sent no SNI" if name is None else f"no certificate for SNI {name!r}"
    return failure.reason or str(failure)


def _verified_chain(obj: ssl.SSLObject) -> list[object] | None:
    """The client's chain as TLS verified it, from its certificate to the CA (public from
    Python 3.13; before, on the SSLObject's C object), or None when not available."""
    method = getattr(obj, "get_verified_chain", None)
    if method is None:
        method = getattr(getattr(obj, "_sslobj", None), "get_verified_chain", None)
    if method is None:
        return None
    try:
        chain = method()
    except (ssl.SSLError, ValueError):
        return None
    return list(chain) if chain is not None else None


class ClientCertificate:
    """nginx's `$ssl_client_*` of a verified client certificate."""

    __slots__ = ("fingerprint", "issuer", "serial", "subject")

    def __init__(self, der: bytes) -> None:
        cert = x509.load_der_x509_certificate(der)
        self.subject = cert.subject.rfc4514_string()  # nginx: RFC 2253 since 1.11.6
        self.issuer = cert.issuer.rfc4514_string()
        self.serial = format(cert.serial_number, "X")
        self.fingerprint = hashlib.sha1(der).hexdigest()
