"""Upstream connections over TLS (`scheme: https`).

The plain connection's fast path tries each read and write directly on the socket; a TLS
record cannot be read or written that way, so here every read and write goes through
trio's `SSLStream` (the sync attempts report "would block" and the callers take their
waiting paths). The handshake runs within the connect timeout. As nginx and APISIX do by
default, the server's certificate is not checked unless `tls.verify`; then it must chain
to the system's CAs (`SSL_CERT_FILE` names another bundle) and name the host. SNI is the
Host sent upstream (APISIX's `$upstream_host`), unless that is an IP address.
The contexts are `fetch.tls_context`'s, as for every TLS client of the gateway.
"""

from __future__ import annotations

import ssl

import trio

from gateway.errors import UpstreamError, UpstreamPhase
from gateway.upstream.balancer import Node
from gateway.upstream.connection import ConnState, UpstreamConnection, fail


def tls_server_name(host_header: bytes) -> str | None:
    """The name a connection whose Host is `host_header` checks the certificate against:
    its host without a port (Python sends it as SNI unless it is an IP address, which is
    then matched against the certificate's IP addresses)."""
    host = host_header.decode("latin-1")
    if host.startswith("["):
        return host[1 : host.find("]")] or None
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host.lower() or None


class TlsConnection(UpstreamConnection):
    """An `UpstreamConnection` whose bytes go through TLS."""

    __slots__ = ("tls",)

    tls: trio.SSLStream[trio.SocketStream]

    @classmethod
    async def wait_open_tls(
        cls,
        node: Node,
        connect_timeout: float,
        context: ssl.SSLContext,
        server_name: str | None,
        pool_key: tuple[str | int | bool | None, ...],
    ) -> TlsConnection:
        """Connect and shake hands within `connect_timeout`; raises UpstreamError(CONNECT)
        (a timeout one, 504, when the handshake did not finish in time). The connection
        goes back to the pool of `pool_key` (the node, SNI and TLS identity)."""
        conn = await cls.wait_open(node, connect_timeout)
        assert isinstance(conn, TlsConnection)
        conn.tls = trio.SSLStream(
            conn.stream, context, server_hostname=server_name, https_compatible=True
        )
        with trio.move_on_after(connect_timeout):
            try:
                await conn.tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                conn.close()
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
                fail(UpstreamPhase.CONNECT, cause or exc, reused=False, responded=False)
            except BaseException:
                conn.close()
                raise
            conn.stream = conn.tls  # type: ignore[assignment]  # the WebSocket tunnel's
            conn.pool_key = pool_key
            return conn
        conn.close()
        raise UpstreamError(UpstreamPhase.CONNECT, "TLS handshake timed out", timeout=True)

    def has_unexpected_input(self) -> bool:
        """Also bytes TLS already took off the socket (trio keeps them in its SSL object:
        read through its private attributes, defensively)."""
        ssl_object = getattr(self.tls, "_ssl_object", None)
        if ssl_object is not None and ssl_object.pending():
            return True
        incoming = getattr(self.tls, "_incoming", None)
        if incoming is not None and incoming.pending:
            return True
        return super().has_unexpected_input()

    def send_some(self, data: bytes | bytearray) -> int:
        return 0

    def send_body_some(self, data: bytes | bytearray) -> int | None:
        return 0

    async def wait_send_rest(self, data: bytes | bytearray, sent: int) -> None:
        try:
            await self.tls.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            fail(UpstreamPhase.SEND, exc, reused=self.reused, responded=False)

    async def wait_send_body_rest(self, data: bytes | bytearray, sent: int) -> bool:
        # No early-answer watch through TLS: the answer is read once the body is out.
        try:
            await self.tls.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    def try_receive(self, responded: bool, max_bytes: int) -> bytes | None:
        return None

    async def wait_receive(self, responded: bool, max_bytes: int) -> bytes:
        try:
            return bytes(await self.tls.receive_some(max_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            fail(UpstreamPhase.READ, exc, reused=self.reused, responded=responded)

    def close(self) -> None:
        if self.state is not ConnState.CLOSED:
            self.state = ConnState.CLOSED
            self._sock.close()
