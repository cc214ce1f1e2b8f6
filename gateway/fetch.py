"""Small outbound HTTP requests the gateway makes itself (identity provider discovery, JWKS,
token introspection): one request per connection, h11 in the CLIENT role, http or https.

Not for proxying: bodies are read whole, up to `MAX_BODY`. Nothing here takes a timeout; the
caller wraps each call in the configured one. Raises `FetchError` for any failure.
"""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import h11
import trio

MAX_BODY = 1024 * 1024


class FetchError(Exception):
    """The request could not be completed (connect, TLS, protocol, or size)."""


def tls_context(verify: bool) -> ssl.SSLContext:
    """A TLS client context: the system's CAs and the host checked, or (`verify` false)
    nothing checked."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def wait_request(
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    verify_tls: bool = True,
) -> tuple[int, bytes]:
    """(status, body) of one request to `url`; raises FetchError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    request_headers = [("host", host), ("accept", "application/json"), ("connection", "close")]
    request_headers += headers or []
    if body:
        request_headers.append(("content-length", str(len(body))))
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
        if parts.scheme == "https":
            tls = trio.SSLStream(stream, tls_context(verify_tls), server_hostname=parts.hostname)
            await tls.do_handshake()
            stream = tls
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            data = conn.send(h11.Request(method=method, target=target, headers=request_headers))
            if body:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            status = 0
            out = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    out += event.data
                    if len(out) > MAX_BODY:
                        raise FetchError("response body too large")
                elif isinstance(event, h11.EndOfMessage):
                    return status, bytes(out)
                elif isinstance(event, h11.ConnectionClosed):
                    raise FetchError("connection closed before the response ended")
    except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
