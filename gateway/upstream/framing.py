"""HTTP/1.1 framing toward the upstream, without h11: the request head is encoded once from
bytes the gateway already holds, and the response is relayed with a lean parser.

h11 stays the parser of what clients send. On the upstream side a full parse-and-reserialise
costs more than the rest of the request path together (see README, Performance), so this
module does the minimum RFC 9112 asks of a client, and the tests check it against h11's own
behaviour (tests/unit/test_upstream_framing.py):

- response head: status line, header lines (names lower-cased), CRLF or LF line ends (RFC
  9112 section 2.2 lets a recipient accept a bare LF); obs-fold is refused (h11 unfolds it);
  repeated identical Content-Length headers count once, differing ones are refused;
- reuse: only an HTTP/1.1 response without `Connection: close` whose body ended where its
  framing said, with no byte after it (h11 too never reuses an HTTP/1.0 connection);
- body framing (RFC 9112 section 6.3): no body for HEAD, 1xx, 204 and 304; otherwise
  `Transfer-Encoding: chunked` (final coding) wins, else `Content-Length`, else the body runs
  to the close of the connection;
- chunked bodies are decoded (sizes, extensions ignored, trailers dropped).

Pure: no IO. Raises `FramingError` for a response that cannot be framed.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from gateway.http.headers import encode_head

Header = tuple[bytes, bytes]
MAX_HEAD: Final = 64 * 1024
_NO_BODY_STATUS: Final = frozenset({204, 304})
# RFC 9110 section 5.1 token for names; values without controls (obs-text allowed), as h11
# checks them: a header the client side would refuse to send is refused here, as a 502.
_TOKEN: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE_CHAR: Final = rb"[^\x00-\x08\x0a-\x1f\x7f]"  # HTAB, SP, visible, obs-text
_NAME: Final = re.compile(rb"^%s$" % _TOKEN)
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The same rules for a whole block of header lines at once (the common case: two scans in C
# instead of two per line): every line is `name:value` ending in CRLF or LF, then the blank
# line; `_FIELD` takes each name and its value without surrounding spaces and tabs (the
# value ends on a character that is neither).
_FIELD_BLOCK: Final = re.compile(rb"(?:%s:%s*\r?\n)*\r?\n" % (_TOKEN, _VALUE_CHAR))
_FIELD: Final = re.compile(
    rb"(%s):[ \t]*((?:%s*[^\x00-\x20\x7f])?)[ \t]*\r?\n" % (_TOKEN, _VALUE_CHAR)
)


class FramingError(Exception):
    """The upstream's response cannot be framed safely."""


class Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"


def encode_request_head(method: bytes, target: bytes, headers: list[Header]) -> bytes:
    """`METHOD target HTTP/1.1` and the headers, ready to send; raises FramingError when a
    value would break the head (CR, LF or NUL: e.g. from a config template)."""
    try:
        return encode_head(b"%s %s HTTP/1.1" % (method, target), headers)
    except ValueError as exc:
        raise FramingError(str(exc)) from None


class ResponseHead:
    __slots__ = ("headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: bytes, headers: list[Header], keep_alive: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keep_alive = keep_alive


def find_head_end(buffer: bytes | bytearray) -> int:
    """Offset just past the blank line ending the head, or -1."""
    crlf = buffer.find(b"\r\n\r\n")
    # A bare-LF end only counts before the CRLF one: never scan the body behind the head.
    lf = buffer.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else len(buffer))
    if crlf < 0 and lf < 0:
        return -1
    if lf < 0 or (0 <= crlf < lf):
        return crlf + 4
    return lf + 2


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parse a complete response head (up to and including its blank line)."""
    first = raw.find(b"\n") + 1
    version, _, rest = raw[: first - 1].rstrip(b"\r").partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise FramingError("not an HTTP/1.x response")
    code, _, reason = rest.partition(b" ")
    if len(code) != 3 or not code.isdigit():
        raise FramingError("bad status code")
    if _FIELD_BLOCK.fullmatch(raw, first) is not None:
        fields = _FIELD.findall(raw, first)  # every line is well formed: names and values
    else:
        fields = _checked_fields(raw[first:])
    headers: list[Header] = []
    connection = b""
    for name, value in fields:
        name = name.lower()
        if name == b"connection":
            connection += b"," + value.lower()
        elif name == b"content-length" and (name, value) in headers:
            continue  # a repeated identical Content-Length is one (RFC 9110 section 8.6)
        headers.append((name, value))
    # HTTP/1.1 keeps the connection unless told to close. An HTTP/1.0 upstream is not reused,
    # even with `Connection: keep-alive` (as h11 does: that extension is too easily wrong).
    keep_alive = version == b"HTTP/1.1" and (
        not connection or b"close" not in {t.strip() for t in connection.split(b",")}
    )
    return ResponseHead(int(code), reason, headers, keep_alive)


def _checked_fields(block: bytes) -> list[Header]:
    """The header lines of a block `_FIELD_BLOCK` did not match, line by line: finds the
    fault (raising FramingError), or accepts what the block pattern is stricter about (a
    run of CRs before a line end, blank lines before the last)."""
    fields: list[Header] = []
    for line in block.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise FramingError("obs-fold in the response head")
        name, colon, value = line.partition(b":")
        if not colon or _NAME.match(name) is None:
            raise FramingError("bad header line")
        if _BAD_VALUE.search(value) is not None:
            raise FramingError("control character in a header value")
        fields.append((name, value.strip(b" \t")))
    return fields


def body_framing(request_method: bytes, head: ResponseHead) -> tuple[Framing, int]:
    """(framing, length) of the response body (RFC 9112 section 6.3)."""
    status = head.status
    if request_method == b"HEAD" or status < 200 or status in _NO_BODY_STATUS:
        return Framing.NONE, 0
    transfer_encoding = None
    lengths = []
    for name, value in head.headers:
        if name == b"transfer-encoding":
            transfer_encoding = value.lower()
        elif name == b"content-length":
            lengths.append(value)
    if transfer_encoding is not None:
        codings = [c.strip() for c in transfer_encoding.split(b",")]
        if codings[-1] == b"chunked":
            if len(codings) > 1:
                raise FramingError("codings other than chunked are not relayed")
            return Framing.CHUNKED, 0
        return Framing.CLOSE, 0
    if lengths:
        values = {v.strip() for v in b",".join(lengths).split(b",")}
        if len(values) != 1:
            raise FramingError("conflicting Content-Length")
        (value,) = values
        if not value.isdigit():
            raise FramingError("bad Content-Length")
        return Framing.LENGTH, int(value)
    return Framing.CLOSE, 0


class BodyReader:
    """Reads one response body fed in pieces, whatever its framing.

    `feed` returns the body bytes found in `data`; `done` is set once the body ended where
    its framing says; `leftover` then holds bytes that followed it (they make the connection
    unusable). `ends_at_close` says whether the upstream closing is the body's normal end.
    """

    __slots__ = ("done", "leftover")
    ends_at_close = False

    def __init__(self) -> None:
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> list[bytes]:
        raise NotImplementedError


class NoBody(BodyReader):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__()
        self.done = True

    def feed(self, data: bytes) -> list[bytes]:
        self.leftover += data
        return []


class _Length(BodyReader):
    __slots__ = ("_remaining",)

    def __init__(self, length: int) -> None:
        super().__init__()
        self._remaining = length
        self.done = length == 0

    def feed(self, data: bytes) -> list[bytes]:
        if self.done:
            self.leftover += data
            return []
        piece = data[: self._remaining]
        self._remaining -= len(piece)
        if self._remaining == 0:
            self.done = True
            self.leftover = data[len(piece) :]
        return [piece] if piece else []


class _UntilClose(BodyReader):
    __slots__ = ()
    ends_at_close = True

    def feed(self, data: bytes) -> list[bytes]:
        return [data] if data else []


def body_reader(request_method: bytes, head: ResponseHead) -> BodyReader:
    """The reader for this response's body (see `body_framing`); raises FramingError."""
    framing, length = body_framing(request_method, head)
    if framing is Framing.NONE:
        return NoBody()
    if framing is Framing.LENGTH:
        return _Length(length)
    if framing is Framing.CHUNKED:
        return ChunkedDecoder()
    return _UntilClose()


class ChunkedDecoder(BodyReader):
    """Decodes a chunked body (sizes, extensions ignored, trailers dropped)."""

    __slots__ = ("_buffer", "_remaining", "_state")

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._remaining = 0
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.done:
            self.leftover += data
            return out
        buffer = self._buffer
        buffer += data
        while not self.done:
            if self._state == 1:
                if not buffer:
                    break
                take = min(self._remaining, len(buffer))
                out.append(bytes(buffer[:take]))
                del buffer[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._state = 2
                continue
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > 4096:
                    raise FramingError("chunk line too long")
                break
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            if self._state == 2:
                if line:
                    raise FramingError("missing CRLF after chunk data")
                self._state = 0
            elif self._state == 0:
                size = line.split(b";", 1)[0].strip()
                if not size or len(size) > 16:
                    raise FramingError("bad chunk size")
                try:
                    self._remaining = int(size, 16)
                except ValueError:
                    raise FramingError("bad chunk size") from None
                self._state = 1 if self._remaining else 3
            elif not line:  # state 3: a blank line ends the trailers
                self.done = True
                self.leftover = bytes(buffer)
                buffer.clear()
        return out
