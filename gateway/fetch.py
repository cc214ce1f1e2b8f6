"""Small outbound HTTP requests the gateway makes itself (identity provider discovery, JWKS,
token introspection, forward-auth's checks, http-logger's batches): one request per
connection, h11 in the CLIENT role, http or https.

Not for proxying: bodies are read whole, up to `MAX_BODY`. `wait_request` takes no timeout
(the caller wraps each call in the configured one); `wait_response` takes one. Raises
`FetchError` for any failure.
"""

from __future__ import annotations

import ssl
from typing import NamedTuple
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


class Response(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    body: bytes


async def wait_request(
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    verify_tls: bool = True,
) -> tuple[int, bytes]:
    """(status, body) of one request to `url`; raises FetchError."""
    response = await _exchange(method, url, headers, body, verify_tls, accept_json=True)
    return response.status, response.body


async def wait_response(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    verify_tls: bool = True,
    within_s: float,
) -> Response:
    """The whole response to one request, within `within_s` seconds; raises FetchError."""
    with trio.move_on_after(within_s):
        return await _exchange(method, url, headers, body, verify_tls, accept_json=False)
    raise FetchError(f"no answer within {within_s:g} s")


async def _exchange(
    method: str,
    url: str,
    headers: list[tuple[str, str]] | None,
    body: bytes,
    verify_tls: bool,
    *,
    accept_json: bool,
) -> Response:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    request_headers = [("connection", "close")]
    if not any(name.lower() == "host" for name, _ in headers or ()):
        request_headers.insert(0, ("host", host))
    if accept_json:
        request_headers.append(("accept", "application/json"))
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
            response_headers: list[tuple[bytes, bytes]] = []
            out = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(65536)))
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
                    raise FetchError("connection closed before the response ended")
    except (OSError, trio.BrokenResourceError, h11.ProtocolError, ssl.SSLError) as exc:
        raise FetchError(f"{type(exc).__name__}: {exc}") from None
