"""Request-head checks that h11 does not make, applied to the raw bytes before h11 parses.

h11 is the parser of record for what clients send, but it is lenient where a proxy must not
be: a message that two parsers could frame differently is how requests get smuggled. So
every request head is checked here first, and a failure is answered and the connection
closed; nothing reaches an upstream.

h11 (0.16) itself rejects, and the gateway relies on it for:
  - two Content-Length headers with different values; a non-numeric Content-Length (400)
  - a Transfer-Encoding other than `chunked`, a list of codings, two TE headers (501)
  - whitespace before the colon of a header, invalid header names and values (400)
  - an HTTP/1.1 request without Host (400); chunk sizes of more than 20 hex digits (400)

h11 accepts, and this module rejects:
  - Content-Length together with Transfer-Encoding (400; RFC 9112 section 6.3 allows a
    server to reject rather than prefer TE)
  - Content-Length as a list (`5, 5`) or repeated, even with equal values (400, as nginx)
  - obs-fold continuation lines (400; RFC 9112 section 5.2)
  - bare LF line ends, also at the end of the head (400; RFC 9112 section 2.2)
  - Transfer-Encoding in an HTTP/1.0 request (400; RFC 9112 section 6.1)
  - a header name with `_` that would alias a framing or identity header once `_` is read
    as `-` (400; servers such as WSGI apps merge them)
  - a request line, header line, whole head or header count over `server.limits`
    (414 / 431)

h11 refuses, and this module makes acceptable: a request target with bytes outside ASCII
(curl sends `/日本` as raw UTF-8, and nginx serves it) is handed to h11 with those bytes
percent-encoded, the URI it stands for (RFC 3987 section 3.1); see `escaped_request_line`.

Still accepted: chunk sizes of 17 to 20 hex digits (h11's bound) are not rejected; they
cannot mislead the upstream, which only ever sees chunks the gateway restated from the
bytes that actually arrived.

Pure: no IO.
"""

from __future__ import annotations

import re
from typing import Final

_ALIASED: Final = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"x-consumer-username",
        b"x-credential-identifier",
        b"x-consumer-custom-id",
        b"x-forwarded-for",
        b"x-real-ip",
    }
)


# A head that passes every check below whatever the limits, once it is shorter than each of
# them: CRLF line ends only, a request line, then `name:value` lines whose names are tokens
# without `_` (so no obs-fold, no missing colon, no alias). `_FRAMING_LINE` then finds any
# Content-Length or Transfer-Encoding line, which only the line-by-line check judges.
_PLAIN_HEAD: Final = re.compile(rb"[^\r\n]+\r\n(?:[!#$%&'*+\-.^`|~0-9A-Za-z]+:[^\r\n]*\r\n)*\r\n")
_FRAMING_LINE: Final = re.compile(rb"\n(?:content-length|transfer-encoding):", re.IGNORECASE)


_NOT_ASCII: Final = re.compile(rb"[\x80-\xff]")


def _percent(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


def escaped_request_line(head: bytes) -> tuple[int, bytes] | None:
    """For a checked head whose request target has bytes outside ASCII: where its request
    line ends in `head`, and the line with those bytes percent-encoded. None when there is
    nothing to escape there (the bytes are in the method, the version or a header value,
    or the line is not `method SP target SP version`): h11 judges such a head as it is."""
    start = len(head) - len(head.lstrip(b"\r\n"))
    stop = head.find(b"\r\n", start)
    line = head[start:stop]
    if line.isascii():
        return None
    method, space, rest = line.partition(b" ")
    target, space_after, version = rest.rpartition(b" ")
    if not (space and space_after and method.isascii() and version.isascii()):
        return None
    return stop, b"%s %s %s" % (method, _NOT_ASCII.sub(_percent, target), version)


class HeadError(Exception):
    """A request head the gateway refuses: `status` (400, 414, 431, 501) and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int | None:
    """The offset just past the blank line that ends the head, or None if not there yet.

    Accepts CRLF CRLF and, so that it can be refused, a bare LF blank line. Leading empty
    lines (allowed before a request line, RFC 9112 section 2.2) are skipped. `start` lets
    a caller resume where an earlier search of the same growing buffer stopped (less the
    3 bytes a terminator split across reads may have begun with).
    """
    n = len(buffer)
    if start == 0:
        while start < n and buffer[start] in (13, 10):
            start += 1
    crlf = buffer.find(b"\n\r\n", start)
    # A bare LF blank line counts only before the CRLF one: the search stops there, so
    # that a body that came with the head is not scanned (64 KiB of it per POST).
    lf = buffer.find(b"\n\n", start, crlf + 1 if crlf >= 0 else n)
    if crlf < 0 and lf < 0:
        return None
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 3
    return lf + 2


def check_incomplete(buffer: bytes | bytearray, max_request_line: int, max_head: int) -> None:
    """Refuse a head that is still arriving but already too long; raises HeadError."""
    first_line_end = buffer.find(b"\n")
    if first_line_end < 0 and len(buffer.lstrip(b"\r\n")) > max_request_line:
        raise HeadError(414, "request line too long")
    if len(buffer) > max_head:
        raise HeadError(431, "request head too large")


def check_head(
    head: bytes, *, max_request_line: int, max_header_line: int, max_head: int, max_headers: int
) -> None:
    """Check one complete request head (as found by `find_head_end`); raises HeadError."""
    size = len(head)
    if (
        size <= max_request_line
        and size <= max_header_line
        and size <= max_head
        and head.count(b"\n") - 2 <= max_headers
        and _PLAIN_HEAD.fullmatch(head) is not None
        and _FRAMING_LINE.search(head) is None
    ):
        return  # the common case: two scans in C leave nothing to check line by line
    check_lines(
        head,
        max_request_line=max_request_line,
        max_header_line=max_header_line,
        max_head=max_head,
        max_headers=max_headers,
    )


def check_lines(
    head: bytes, *, max_request_line: int, max_header_line: int, max_head: int, max_headers: int
) -> None:
    """`check_head` line by line: finds and names the fault."""
    if len(head) > max_head:
        raise HeadError(431, "request head too large")
    lines = head.lstrip(b"\r\n").split(b"\n")
    # The head ends with an empty line, so the split ends with two empty pieces.
    lines = lines[:-2] if len(lines) >= 2 else lines
    if not lines:
        raise HeadError(400, "empty request head")
    for line in lines:
        if not line.endswith(b"\r"):
            raise HeadError(400, "bare LF line end")
    if not head.endswith(b"\r\n\r\n"):
        raise HeadError(400, "bare LF line end")
    request_line = lines[0][:-1]
    if len(request_line) > max_request_line:
        raise HeadError(414, "request line too long")
    http10 = request_line.endswith(b" HTTP/1.0")
    if len(lines) - 1 > max_headers:
        raise HeadError(431, "too many header fields")
    content_lengths: list[bytes] = []
    transfer_encodings: list[bytes] = []
    for raw in lines[1:]:
        line = raw[:-1]
        if len(line) > max_header_line:
            raise HeadError(431, "header line too long")
        if line[:1] in (b" ", b"\t"):
            raise HeadError(400, "obs-fold header continuation")
        name, colon, value = line.partition(b":")
        if not colon:
            raise HeadError(400, "header line without a colon")
        lname = name.lower()
        if b"_" in lname and lname.replace(b"_", b"-") in _ALIASED:
            raise HeadError(400, "header name with `_` aliasing a framing or identity header")
        if lname == b"content-length":
            content_lengths.append(value.strip())
        elif lname == b"transfer-encoding":
            transfer_encodings.append(value.strip())
    if len(content_lengths) > 1:
        raise HeadError(400, "repeated Content-Length")
    if content_lengths and (not content_lengths[0].isdigit()):
        raise HeadError(400, "invalid Content-Length")
    if transfer_encodings:
        if content_lengths:
            raise HeadError(400, "both Content-Length and Transfer-Encoding")
        if http10:
            raise HeadError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if len(transfer_encodings) > 1 or transfer_encodings[0].lower() != b"chunked":
            raise HeadError(501, "Transfer-Encoding other than chunked")
