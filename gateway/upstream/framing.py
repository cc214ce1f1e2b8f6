"""HTTP/1.1 framing toward the upstream, without h11: the request head is encoded once from
bytes the gateway already holds, and the response is relayed with a lean parser.

h11 stays the parser of what clients send. On the upstream side a full parse-and-reserialise
costs more than the rest of the request path together (see README, Performance), so this
module does the minimum RFC 9112 asks of a client, and the tests check it against h11's own
behaviour (tests/unit/test_upstream_framing.py):

- response head: status line, header lines, CRLF or LF line ends (RFC 9112 section 2.2 lets
  a recipient accept a bare LF); obs-fold is refused (h11 unfolds it); repeated identical
  Content-Length headers count once, differing ones are refused, and so is Content-Length
  with Transfer-Encoding (h11 and nginx 1.22 read it as chunked). The end-to-end lines are
  kept as bytes for the client (`ResponseHead.lines`): no per-header objects on the way;
- reuse: only an HTTP/1.1 response without `Connection: close` whose body ended where its
  framing said, with no byte after it (h11 too never reuses an HTTP/1.0 connection);
- body framing (RFC 9112 section 6.3): no body for HEAD, 1xx, 204 and 304; otherwise
  `Transfer-Encoding: chunked` wins (any other transfer coding is refused: it would have to
  be decoded), else `Content-Length`, else the body runs to the close of the connection;
- chunked bodies are decoded (sizes, extensions ignored, trailers dropped).

Pure: no IO. Raises `FramingError` for a response that cannot be framed.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from gateway.http.headers import HOP_BY_HOP, encode_head

Header = tuple[bytes, bytes]
MAX_HEAD: Final = 64 * 1024
_NO_BODY_STATUS: Final = frozenset({204, 304})
# RFC 9110 section 5.1 token for names; values without controls (obs-text allowed), as h11
# checks them: a header the client side would refuse to send is refused here, as a 502.
_TOKEN: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE_CHAR: Final = rb"[^\x00-\x08\x0a-\x1f\x7f]"  # HTAB, SP, visible, obs-text
_NAME: Final = re.compile(rb"^%s$" % _TOKEN)
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The same rules for a whole block of header lines at once (the common case: one scan in C
# instead of two per line): every line is `name:value` ending in CRLF, then the blank line.
_CRLF_BLOCK: Final = re.compile(rb"(?:%s:%s*\r\n)*\r\n" % (_TOKEN, _VALUE_CHAR))
# A whole head in that common shape, status line first (version, code, reason captured).
_WELL_FORMED: Final = re.compile(rb"HTTP/1\.([01]) ([0-9]{3}) ([^\r\n]*)\r\n" + _CRLF_BLOCK.pattern)
# In such a block: the lines the client never receives as they are, i.e. the hop-by-hop
# ones (RFC 9110 section 7.6.1) and the framing, which the gateway restates. Splitting the
# head on them leaves the kept lines in their original case, with the names and values of
# the cut ones between them, in one C pass. Each match takes the CRLF before its line (a
# literal start lets the search skip ahead in C) and leaves the line's own.
_HOP_LINE: Final = re.compile(
    rb"\r\n(%s):[ \t]*([^\r]*)(?=\r\n)"
    % b"|".join(re.escape(name) for name in sorted(HOP_BY_HOP | {b"content-length"})),
    re.IGNORECASE,
)
# `Connection` tokens that name no header of the response; any other token does.
_NOT_NAMES: Final = HOP_BY_HOP | {b"close", b""}


class FramingError(Exception):
    """The upstream's response cannot be framed safely."""


class Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"


# The members read once: an Enum member read through its class costs about four times a
# module global (Python 3.11: 206 against 52 ns), and one is read on every response.
_NONE: Final = Framing.NONE
_BY_LENGTH: Final = Framing.LENGTH
_CHUNKED: Final = Framing.CHUNKED
_CLOSE: Final = Framing.CLOSE


def encode_request_head(method: bytes, target: bytes, headers: list[Header]) -> bytes:
    """`METHOD target HTTP/1.1` and the headers, ready to send; raises FramingError when a
    value would break the head (CR, LF or NUL: e.g. from a config template)."""
    try:
        return encode_head(b"%s %s HTTP/1.1" % (method, target), headers)
    except ValueError as exc:
        raise FramingError(str(exc)) from None


class ResponseHead:
    """A parsed response head.

    `lines` are the end-to-end header lines as the upstream sent them (CRLF line ends, the
    case of names kept), without hop-by-hop and framing headers and without those its
    `Connection` header lists: what the client may receive unchanged. `content_length` (one
    checked value) and `transfer_encoding` (lower-cased, repeated headers joined) are the
    framing; `headers` decodes every header, names lower-cased, when a caller needs them.
    """

    __slots__ = (
        "_raw",
        "content_length",
        "keep_alive",
        "lines",
        "reason",
        "status",
        "transfer_encoding",
    )

    def __init__(
        self,
        status: int,
        reason: bytes,
        lines: bytes,
        keep_alive: bool,
        content_length: bytes | None = None,
        transfer_encoding: bytes | None = None,
        raw: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason
        self.lines = lines
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.transfer_encoding = transfer_encoding
        self._raw = raw  # the whole head, decoded only when `headers` is asked for

    @property
    def headers(self) -> list[Header]:
        """Every header line, names lower-cased (repeated identical Content-Length once)."""
        headers: list[Header] = []
        raw = self._raw
        for name, value in _checked_fields(raw[raw.find(b"\n") + 1 :]):
            name = name.lower()
            if name == b"content-length" and (name, value) in headers:
                continue
            headers.append((name, value))
        return headers


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


class EarlyAnswer(enum.Enum):
    """What an upstream's bytes, arrived while the request body was still going out, mean
    for the rest of the body (RFC 9112 sections 9.3 and 9.5)."""

    NONE = "none"  # nothing final yet (interim heads, or a head still arriving): watch on
    KEEPS = "keeps"  # a final answer on a connection the upstream keeps: it reads the body
    STOPS = "stops"  # a final answer that closes the connection, or an invalid one: stop


def early_answer(buffer: bytes) -> EarlyAnswer:
    """Classify `buffer`, what the upstream sent before the request body was through."""
    start = 0
    while True:
        end = find_head_end(buffer[start:])
        if end < 0:
            return EarlyAnswer.STOPS if len(buffer) - start > MAX_HEAD else EarlyAnswer.NONE
        try:
            head = parse_response_head(buffer[start : start + end])
        except FramingError:
            return EarlyAnswer.STOPS  # the response reader says what is wrong with it
        if head.status >= 200:
            return EarlyAnswer.KEEPS if head.keep_alive else EarlyAnswer.STOPS
        start += end


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parse a complete response head (up to and including its blank line)."""
    if len(raw) > MAX_HEAD:  # also when it arrived whole: nginx's "too big header"
        raise FramingError("response head too large")
    well_formed = _WELL_FORMED.fullmatch(raw)
    if well_formed is not None:
        block = raw  # every line well formed: used as it came
        minor, code, reason = well_formed.group(1, 2, 3)
        first = well_formed.end(3) + 2
    else:
        # A status line without a reason, bare LF line ends (RFC 9112 section 2.2 lets a
        # recipient accept them) and the like: checked line by line (which names a fault),
        # then restated with CRLF.
        first = raw.find(b"\n") + 1
        status = raw[: first - 1].rstrip(b"\r")
        version, _, rest = status.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise FramingError("not an HTTP/1.x response")
        code, _, reason = rest.partition(b" ")
        if len(code) != 3 or not code.isdigit():
            raise FramingError("bad status code")
        minor = version[-1:]
        fields = _checked_fields(raw[first:])
        first = len(status) + 2
        block = b"".join([status, b"\r\n", *[b"%s: %s\r\n" % field for field in fields], b"\r\n"])
    parts = _HOP_LINE.split(block)
    connection: bytes | None = None
    content_length: bytes | None = None
    transfer_encoding: bytes | None = None
    if len(parts) == 1:
        lines = block[first:-2]
    else:
        lines = b"".join(parts[::3])[first:-2]
        for at in range(1, len(parts), 3):
            name = parts[at].lower()
            value = parts[at + 1].rstrip(b" \t").lower()
            if name == b"connection":
                connection = value if connection is None else b"%s,%s" % (connection, value)
            elif name == b"content-length":
                content_length = _one_length(content_length, value)
            elif name == b"transfer-encoding":
                if transfer_encoding is not None:
                    value = b"%s,%s" % (transfer_encoding, value)
                transfer_encoding = value
        if transfer_encoding is not None and content_length is not None:
            # Stricter than h11 (chunked wins), as nginx: RFC 9112 section 6.3 says this
            # "ought to be handled as an error", since the two ends may frame it apart.
            raise FramingError("both Content-Length and Transfer-Encoding")
    # HTTP/1.1 keeps the connection unless told to close. An HTTP/1.0 upstream is not
    # reused, even with `Connection: keep-alive` (as h11 does: too easily wrong).
    keep_alive = minor == b"1"
    if connection is not None and connection != b"keep-alive":  # nginx's, as a rule
        tokens = {token.strip() for token in connection.split(b",")}
        keep_alive = keep_alive and b"close" not in tokens
        listed = tokens - _NOT_NAMES
        if listed:
            lines = _without(lines, listed)
    status_code = int(code)
    if status_code < 100:  # not interim, not final (h11 and nginx refuse it too)
        raise FramingError("status code below 100")
    return ResponseHead(
        status_code, reason, lines, keep_alive, content_length, transfer_encoding, raw
    )


def _one_length(seen: bytes | None, value: bytes) -> bytes:
    """Content-Length as one value: repeated identical values (or a list of them) count once,
    different ones are refused (RFC 9110 section 8.6), as h11 does for every response."""
    if seen is None and value.isdigit():
        return value  # the common case: one header, one value
    values = {v.strip() for v in value.split(b",")}
    if seen is not None:
        values.add(seen)
    if len(values) != 1:
        raise FramingError("conflicting Content-Length")
    (length,) = values
    if not length.isdigit():
        raise FramingError("bad Content-Length")
    return length


def _without(lines: bytes, names: set[bytes]) -> bytes:
    """`lines` without the headers named in `names` (lower-case)."""
    return b"".join(
        [line for line in lines.splitlines(keepends=True)
         if line.partition(b":")[0].lower() not in names]
    )  # fmt: skip


def _checked_fields(block: bytes) -> list[Header]:
    """The header lines of `block`, line by line, for a head `_WELL_FORMED` refused: finds
    the fault (raising FramingError), or accepts what that pattern is stricter about (bare
    LF line ends, a run of CRs before a line end, blank lines before the last; or only the
    status line differed, e.g. without a reason phrase)."""
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
        return _NONE, 0
    if head.transfer_encoding is not None:
        # Only `chunked` is decoded; a body in any other coding (RFC 9112 section 6.3 would
        # read it to the close) cannot go on as identity, and the gateway does not decode
        # it: refused (nginx 1.22 relays such a body re-chunked, its coding lost).
        codings = [c.strip() for c in head.transfer_encoding.lower().split(b",")]
        if codings != [b"chunked"]:
            raise FramingError("transfer codings other than chunked are not relayed")
        return _CHUNKED, 0
    if head.content_length is not None:
        return _BY_LENGTH, int(head.content_length)
    return _CLOSE, 0


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
        # (the base initialiser's two fields set here: one call less per response)
        self._remaining = length
        self.done = length == 0
        self.leftover = b""

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
    if framing is _BY_LENGTH:
        return _Length(length)
    return _OTHER_READERS[framing]()


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


_OTHER_READERS: Final[dict[Framing, type[BodyReader]]] = {
    _NONE: NoBody,
    _CHUNKED: ChunkedDecoder,
    _CLOSE: _UntilClose,
}
