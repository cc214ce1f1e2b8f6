"""Responses to the client, encoded by the gateway itself.

h11 parses what clients send (it is the parser of record); what the gateway writes back is
its own, and costs less encoded here than as h11 events (h11 re-validates every header and
runs its state machine per event: about 60 us per small response, see README,
Performance). The rules are the ones h11 0.16 applies, and tests/unit/test_response.py
checks every case against h11's output read back by an h11 client:

- RFC 9112 section 6.3: no body for a HEAD request or a 204/304 status; a HEAD response
  still states the framing a GET would get;
- a body of unknown length is chunked for an HTTP/1.1 client; an HTTP/1.0 client gets it
  close-delimited (no framing header), and the connection closes after it;
- RFC 9112 section 9.3: the connection stays open only when the request allowed it
  (HTTP/1.1 without `Connection: close`) and the gateway wants it; otherwise the head says
  `Connection: close`.

One rule is nginx's, not h11's: an HTTP/1.0 request with `Connection: keep-alive` keeps its
connection when the body's end is known, and the head says `Connection: keep-alive` (h11
never keeps an HTTP/1.0 connection).

Pure: no IO. Raises ValueError for a reason, name or value that would break the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gateway.http.headers import encode_head

Header = tuple[bytes, bytes]

LAST_CHUNK: Final = b"0\r\n\r\n"
_NO_BODY_STATUS: Final = frozenset({204, 304})
_CLOSE: Final = (b"connection", b"close")
_KEEP_ALIVE: Final = (b"connection", b"keep-alive")


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty piece would end the body: callers skip it)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def wants_keep_alive(http_version: bytes, headers: Sequence[Header]) -> bool:
    """True when the request lets the connection stay open after the response: HTTP/1.1
    without a `close` token in `Connection`, HTTP/1.0 with a `keep-alive` one."""
    if http_version != b"1.1":
        return _asks_keep_alive(headers)
    for name, value in headers:
        if name == b"connection" and b"close" in value.lower():
            for token in value.lower().split(b","):
                if token.strip() == b"close":
                    return False
    return True


def _asks_keep_alive(headers: Sequence[Header]) -> bool:
    keep = False
    for name, value in headers:
        if name == b"connection":
            for token in value.lower().split(b","):
                token = token.strip()
                if token == b"close":
                    return False
                keep = keep or token == b"keep-alive"
    return keep


class ResponseWriter:
    """Frames the body pieces of one response; `keep_alive` says whether the connection
    may carry another request after `end()`."""

    __slots__ = ("chunked", "keep_alive", "no_body")

    def __init__(self, chunked: bool, no_body: bool, keep_alive: bool) -> None:
        self.chunked = chunked
        self.no_body = no_body
        self.keep_alive = keep_alive

    def piece(self, data: bytes) -> bytes:
        """`data` framed for the client (b"" for nothing to send)."""
        if self.no_body or not data:
            return b""
        return encode_chunk(data) if self.chunked else data

    def end(self) -> bytes:
        """What marks the end of the body (only chunked bodies have a marker)."""
        return LAST_CHUNK if self.chunked and not self.no_body else b""


def start_response(
    status: int,
    reason: bytes,
    headers: Sequence[Header],
    *,
    request_method: bytes,
    http_version: bytes,
    keep_alive: bool,
    lines: bytes = b"",
) -> tuple[bytes, ResponseWriter]:
    """The encoded head of a final response, and the writer for its body.

    `headers` state the framing (Content-Length or `Transfer-Encoding: chunked`, or neither
    for a body that runs to the close); `lines` are header lines already encoded (relayed
    from the upstream, without framing or `Connection` headers), sent before `headers`;
    `keep_alive` is False when the request or the gateway wants the connection closed after
    this response.
    """
    content_length = False
    chunked = False
    has_connection = False
    for name, _ in headers:
        if name == b"content-length":
            content_length = True
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"connection":
            has_connection = True
    no_body_status = status in _NO_BODY_STATUS
    no_body = no_body_status or request_method == b"HEAD"
    old_client = http_version != b"1.1"
    out = headers
    unknown_length = not no_body_status and (chunked or not content_length)
    if unknown_length:
        # State the framing a GET would get: chunked for HTTP/1.1, nothing for HTTP/1.0
        # (the body then runs to the close).
        out = [h for h in headers if h[0] != b"content-length" and h[0] != b"transfer-encoding"]
        if old_client:
            if request_method != b"HEAD":
                keep_alive = False
        else:
            out.append((b"transfer-encoding", b"chunked"))
    if keep_alive and has_connection and not wants_keep_alive(b"1.1", headers):
        keep_alive = False  # a `Connection: close` among the headers (a plugin's, say)
    if not keep_alive:
        out = [h for h in out if h[0] != b"connection"]
        out.append(_CLOSE)
    elif old_client:
        out = [h for h in out if h[0] != b"connection"]
        out.append(_KEEP_ALIVE)
    head = encode_head(b"HTTP/1.1 %d %s" % (status, reason), out, lines)
    writer = ResponseWriter(unknown_length and not old_client, no_body, keep_alive)
    return head, writer
