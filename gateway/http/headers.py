"""Header rules for a proxy (RFC 9110 section 7.6.1): hop-by-hop removal and forwarding.

Headers are kept as h11 gives them: a list of `(name, value)` with lower-case byte names.
Nothing here allocates per header beyond the outgoing list itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

Header = tuple[bytes, bytes]

# Connection-scoped headers that never cross the proxy. Transfer-Encoding and
# Content-Length are framing: the proxy restates framing for the next hop itself.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Identity headers the gateway sets after authentication; a client copy is never trusted.
# (A spelling with `_` for `-` never gets this far: `http.framing` refuses it with 400.)
IDENTITY: Final = frozenset(
    (b"x-consumer-username", b"x-credential-identifier", b"x-consumer-custom-id")
)


# Headers meant for every recipient (RFC 9110 section 7.6.1: a sender must not list them in
# `Connection`): a client that does keeps them, as nginx ignores such tokens, so that it
# cannot take its own Host away from routing and the upstream. Framing is restated anyway.
_NEVER_LISTED: Final = HOP_BY_HOP | {b"host", b"content-length"}

# The bytes that may end a line of a head (or cut it short, NUL), and only where it says.
_LINE_BREAKING: Final = b"\r\n\0"

FORWARDING: Final = frozenset(
    {
        b"x-real-ip",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
    }
)


def connection_tokens(headers: Sequence[Header]) -> frozenset[bytes]:
    """The lower-case names listed in every `Connection` header (also hop-by-hop)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    tokens.add(token)
    return frozenset(tokens)


def is_websocket_upgrade(headers: list[Header]) -> bool:
    """True when the request asks to switch to WebSocket (RFC 6455 section 4.1)."""
    upgrade = False
    connection_upgrade = False
    for name, value in headers:
        if name == b"upgrade" and value.strip().lower() == b"websocket":
            upgrade = True
        elif name == b"connection" and b"upgrade" in value.lower():
            connection_upgrade = True
    return upgrade and connection_upgrade


def client_request_headers(raw: Sequence[Header]) -> list[Header]:
    """The client's headers as plugins see them: without client copies of identity headers
    and without the headers its `Connection` header names (they were for this hop only).

    Done once, before any plugin runs, so a header a plugin sets later is never dropped
    because the client listed its name in `Connection`. `Connection`, `Upgrade` and the
    other standard hop-by-hop headers stay until the upstream head is built: the WebSocket
    decision needs them.
    """
    listed: frozenset[bytes] | tuple[()] = ()
    for name, _ in raw:
        if name == b"connection":
            listed = connection_tokens(raw) - _NEVER_LISTED
            break
    return [h for h in raw if h[0] not in listed and h[0] not in IDENTITY]


def upstream_request_headers(
    headers: list[Header],
    *,
    host: bytes,
    remote_addr: bytes,
    forwarded_host: bytes,
    server_port: bytes,
    framing: Header | None,
    websocket: bool,
    proto: bytes = b"http",
) -> list[Header]:
    """The head the upstream receives: the request headers (already cleaned by
    `client_request_headers`, then edited by plugins) minus hop-by-hop, forwarding and
    framing headers, then Host, the forwarding headers and the restated framing.

    X-Forwarded-For appends the client address to what the client sent (nginx's
    `$proxy_add_x_forwarded_for`); the other forwarding headers are always the gateway's own:
    X-Forwarded-Host is `forwarded_host`, the host the client named without its port (as
    APISIX sends nginx's `$host`); X-Forwarded-Proto is `proto`, the scheme the request came
    by.
    """
    out: list[Header] = [(b"host", host)]
    xff: list[bytes] = []
    for name, value in headers:
        if name in HOP_BY_HOP or name in FORWARDING:
            if websocket and name == b"upgrade":
                out.append((name, value))
            continue
        if name == b"host" or name == b"content-length" or name == b"expect":
            continue
        if name == b"x-forwarded-for":
            xff.append(value)
            continue
        out.append((name, value))
    if websocket:
        out.append((b"connection", b"upgrade"))
    xff.append(remote_addr)
    out.append((b"x-forwarded-for", b", ".join(xff)))
    out.append((b"x-real-ip", remote_addr))
    out.append((b"x-forwarded-proto", proto))
    if forwarded_host:  # nginx's `$host`: none when the client named no host
        out.append((b"x-forwarded-host", forwarded_host))
    out.append((b"x-forwarded-port", server_port))
    if framing is not None:
        out.append(framing)
    return out


def restated_framing(
    status: int, content_length: bytes | None, chunked: bool, no_body: bool
) -> list[Header]:
    """The framing header the client receives: the upstream's Content-Length when it sent
    one without chunking; otherwise chunked (`http.response` makes that close-delimited
    for HTTP/1.0 clients), or nothing for a response without a body. A 204 never has one
    (RFC 9110 section 8.6), whatever the upstream sent."""
    if content_length is not None and not chunked and status != 204:
        return [(b"content-length", content_length)]
    return [] if no_body else [(b"transfer-encoding", b"chunked")]


def client_response_headers(
    headers: list[Header], *, status: int, no_body: bool, websocket: bool = False
) -> list[Header]:
    """The head the client receives, decoded (for header filters and the WebSocket
    handshake): the upstream's headers minus hop-by-hop ones, with the framing restated
    (see `restated_framing`).
    """
    listed = connection_tokens(headers) if any(n == b"connection" for n, _ in headers) else ()
    out: list[Header] = []
    content_length: bytes | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            content_length = value
            continue
        if name == b"transfer-encoding":
            chunked = True
            continue
        if name in HOP_BY_HOP or name in listed:
            if websocket and name == b"upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    if websocket:
        out.append((b"connection", b"upgrade"))
    else:
        out += restated_framing(status, content_length, chunked, no_body)
    return out


def encode_head(start_line: bytes, headers: Sequence[Header], lines: bytes = b"") -> bytes:
    """A message head (start line without its CRLF, then `lines`, header lines already
    encoded, then the headers), ready to send.

    Raises ValueError when a CR, LF or NUL in the start line, a name or a value would split
    the head (e.g. from a config template). Every line brings exactly one CR and one LF
    (`lines` are CRLF lines), so counting the CR, LF and NUL bytes of the finished head
    finds any other: one pass in C (`translate` deleting them), no work per header.
    """
    parts = [start_line, b"\r\n", lines]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    line_ends = len(headers) + 2 + lines.count(b"\n")
    if len(head) - len(head.translate(None, _LINE_BREAKING)) != 2 * line_ends:
        raise ValueError("a line break in the head's start line or in a header")
    return head
