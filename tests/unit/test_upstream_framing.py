"""The lean upstream framing (`gateway.upstream.framing`) against h11's own reading of the
same bytes: status, headers, body, and whether the connection may carry another request."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.headers import client_response_headers, restated_framing
from gateway.http.response import encode_chunk
from gateway.upstream.framing import (
    _CRLF_BLOCK,
    MAX_HEAD,
    ChunkedDecoder,
    EarlyAnswer,
    Framing,
    FramingError,
    _checked_fields,
    body_framing,
    early_answer,
    encode_request_head,
    find_head_end,
    parse_response_head,
)


def lean(
    method: bytes, raw: bytes, feed: int
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    """Status, headers, body and reusability as the gateway frames `raw` (fed in pieces)."""
    end = find_head_end(raw)
    assert end > 0
    head = parse_response_head(raw[:end])
    framing, length = body_framing(method, head)
    rest = raw[end:]
    leftover = b""
    if framing is Framing.NONE:
        body, leftover = b"", rest
    elif framing is Framing.LENGTH:
        body, leftover = rest[:length], rest[length:]
        assert len(body) == length
    elif framing is Framing.CHUNKED:
        decoder = ChunkedDecoder()
        pieces = []
        for i in range(0, len(rest), feed):
            pieces += decoder.feed(rest[i : i + feed])
        assert decoder.done
        body, leftover = b"".join(pieces), decoder.leftover
    else:
        body = rest
    reusable = head.keep_alive and framing is not Framing.CLOSE and not leftover
    return head.status, head.headers, body, reusable


def by_h11(method: bytes, raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, headers, body = 0, [], b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
    reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
    return status, headers, body, reusable and not conn.trailing_data[0]


RESPONSES = [
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"),
    (
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    ),
    (b"GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"),
    (b"GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    (b"GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"),
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
    (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"),
    (b"GET", b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    (
        b"POST",
        b"HTTP/1.1 201 Created\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\nx",
    ),
]


@pytest.mark.parametrize(("method", "raw"), RESPONSES)
@pytest.mark.parametrize("feed", [1, 3, 1000])
def test_frames_like_h11(method: bytes, raw: bytes, feed: int) -> None:
    assert lean(method, raw, feed) == by_h11(method, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 099 Below\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 000 Zero\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ],
)
def test_unframeable_responses_are_refused(raw: bytes) -> None:
    end = find_head_end(raw)
    with pytest.raises(FramingError):
        body_framing(b"GET", parse_response_head(raw[:end]))
    with pytest.raises(h11.RemoteProtocolError):
        by_h11(b"GET", raw)


def test_a_whole_head_past_the_limit_is_refused() -> None:
    fits = b"HTTP/1.1 200 OK\r\nX-A: %s\r\n\r\n" % (b"v" * (MAX_HEAD - 30))
    assert len(fits) <= MAX_HEAD
    assert parse_response_head(fits).status == 200
    with pytest.raises(FramingError, match="too large"):
        parse_response_head(fits[:-2] + b"X-B: 1\r\n\r\n")


@pytest.mark.parametrize(
    "lines",
    [
        b"Transfer-Encoding: chunked\r\nContent-Length: 99\r\n",
        b"Content-Length: 3\r\ntransfer-encoding: chunked\r\n",
        b"Content-Length: 3\nTransfer-Encoding: chunked\n",
    ],
)
def test_length_and_chunked_together_refused_where_h11_takes_chunked(lines: bytes) -> None:
    # Stricter than h11 on purpose, as nginx (RFC 9112 section 6.3: "ought to be handled
    # as an error"): the upstream and the gateway could disagree on where the body ends.
    raw = b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n3\r\nabc\r\n0\r\n\r\n"
    with pytest.raises(FramingError):
        parse_response_head(raw[: find_head_end(raw)])
    assert by_h11(b"GET", raw)[2] == b"abc"


def test_obs_fold_refused_where_h11_would_unfold() -> None:
    # Stricter than h11 on purpose: a folded header could be read two ways downstream.
    raw = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(FramingError):
        parse_response_head(raw[: find_head_end(raw)])
    assert by_h11(b"GET", raw)[0] == 200


@pytest.mark.parametrize("chunk", [b"zz\r\n", b"fffffffffffffffff\r\n", b"3\r\nabcX\r\n"])
def test_bad_chunks(chunk: bytes) -> None:
    with pytest.raises(FramingError):
        ChunkedDecoder().feed(chunk + b"0\r\n\r\n")


def test_request_head_and_chunks_parse_back_with_h11() -> None:
    head = encode_request_head(
        b"POST", b"/a?b=1", [(b"host", b"up"), (b"transfer-encoding", b"chunked")]
    )
    wire = head + encode_chunk(b"hello") + encode_chunk(b" world") + b"0\r\n\r\n"
    server = h11.Connection(h11.SERVER)
    server.receive_data(wire)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert (request.method, request.target) == (b"POST", b"/a?b=1")
    body = b""
    while not isinstance(event := server.next_event(), h11.EndOfMessage):
        body += event.data  # type: ignore[union-attr]
    assert body == b"hello world"
    with pytest.raises(FramingError):
        encode_request_head(b"GET", b"/", [(b"x-injected", b"a\r\nX-Evil: 1")])


def test_request_head_encoding() -> None:
    head = encode_request_head(b"GET", b"/a?b=1", [(b"host", b"x"), (b"x-a", b"1")])
    assert head == b"GET /a?b=1 HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n\r\n"


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (b"/", [(b"x-a", b"1\r\nx-evil: 2")]),
        (b"/", [(b"x-a", b"1\nx")]),
        (b"/", [(b"x-a", b"1\rx")]),
        (b"/", [(b"x-a", b"1\0")]),
        (b"/a\r\nx-evil: 1", [(b"x-a", b"1")]),
    ],
)
def test_request_head_with_a_line_break_is_refused(
    target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(FramingError, match="line break"):
        encode_request_head(b"GET", target, headers)


# Header lines: mostly well-formed `name:value` with spaces and tabs around the value, and
# sometimes one byte the rules care about (CR, LF, a control, a space or tab) put anywhere.
_STATUS_LINE = b"HTTP/1.1 200 OK\r\n"


def _bytes_of(alphabet: bytes, max_size: int) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=max_size).map(lambda b: bytes(alphabet[x % len(alphabet)] for x in b))


def _spoil(line: bytes, byte: bytes, where: int) -> bytes:
    where %= len(line) + 1
    return line[:where] + byte + line[where:]


# Names: random tokens, and the ones the relay treats apart, in any case; values: random,
# or what those headers carry.
_names = st.one_of(
    _bytes_of(b"aZ-~", 4),
    st.sampled_from(
        [
            *(b"Connection", b"content-length", b"Content-Length", b"Keep-Alive", b"X-A", b"x-a"),
            *(b"Transfer-Encoding", b"TE", b"Trailer", b"Upgrade", b"Proxy-Connection"),
        ]
    ),
)
_values = st.one_of(
    _bytes_of(b"a \t:,\x80\xff", 8),
    st.sampled_from([b"5", b" 5 ", b"5, 5", b"7", b"close", b"X-A, keep-alive", b"chunked"]),
)
_header_lines = st.builds(
    _spoil,
    st.builds(lambda name, value: name + b":" + value, _names, _values),
    st.sampled_from([b""] * 8 + [b"\r", b"\n", b"\x00", b"\x0b", b"\x7f", b" ", b"\t"]),
    st.integers(0, 20),
)


def _decoded(lines: bytes) -> list[tuple[bytes, bytes]]:
    return [(name.lower(), value) for name, value in _checked_fields(lines)]


@settings(max_examples=800, derandomize=True, deadline=None)
@given(st.lists(_header_lines, max_size=6), st.sampled_from([b"\r\n", b"\n"]), st.booleans())
def test_relayed_lines_say_what_the_decoded_headers_say(
    lines: list[bytes], line_end: bytes, no_body: bool
) -> None:
    """The lines relayed as they came, with the restated framing, carry exactly the headers
    the decoded path gives the client (hop-by-hop and `Connection`-listed ones removed),
    whether the block took the one-pass pattern or the line-by-line check; a block that
    check refuses is refused."""
    block = b"".join(line + line_end for line in lines) + line_end
    raw = _STATUS_LINE + block
    if find_head_end(raw) != len(raw):
        return  # a blank line inside: the head ends earlier
    if _CRLF_BLOCK.fullmatch(raw, len(_STATUS_LINE)) is not None:
        _checked_fields(block)  # what the pattern accepts, the line-by-line check accepts
    try:
        _checked_fields(block)
    except FramingError:
        with pytest.raises(FramingError):
            parse_response_head(raw)
        return
    lengths = {
        one.strip()
        for name, value in _decoded(block)
        if name == b"content-length"
        for one in value.split(b",")
    }
    if len(lengths) > 1 or (lengths and not next(iter(lengths)).isdigit()):
        with pytest.raises(FramingError, match="Content-Length"):
            parse_response_head(raw)  # refused as h11 refuses it, whatever the status
        return
    head = parse_response_head(raw)
    assert head.lines.count(b"\n") == head.lines.count(b"\r\n")  # CRLF only
    chunked = head.transfer_encoding is not None
    relayed = _decoded(head.lines) + restated_framing(
        head.status, head.content_length, chunked, no_body
    )
    # The client gets the one length, however the upstream repeated it.
    assert relayed == [
        (n, next(iter(lengths))) if n == b"content-length" else (n, v)
        for n, v in client_response_headers(head.headers, status=head.status, no_body=no_body)
    ]


def test_a_plain_head_is_relayed_as_it_came() -> None:
    raw = _STATUS_LINE + b"Server: nginx\r\nX-Pad:  a b\t \r\nContent-Length: 0\r\n\r\n"
    assert _CRLF_BLOCK.fullmatch(raw, len(_STATUS_LINE)) is not None
    head = parse_response_head(raw)
    assert head.lines == b"Server: nginx\r\nX-Pad:  a b\t \r\n"
    assert head.content_length == b"0"
    assert head.headers == [
        (b"server", b"nginx"),
        (b"x-pad", b"a b"),
        (b"content-length", b"0"),
    ]


def test_hop_by_hop_and_listed_lines_are_not_relayed() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nX-Secret: s\r\nA: 1\r\n"
        b"CONNECTION: keep-alive, X-Secret\r\nContent-Length: 2\r\nUpgrade: h2c\r\nB: 2\r\n\r\n"
    )
    head = parse_response_head(raw)
    assert head.lines == b"A: 1\r\nB: 2\r\n"
    assert (head.content_length, head.transfer_encoding, head.keep_alive) == (b"2", None, True)


@pytest.mark.parametrize(
    ("status_line", "status", "reason", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\n", 200, b"OK", False),
        (b"HTTP/1.1 200 OK\n", 200, b"OK", False),  # bare LF after the status line only
        (b"HTTP/1.1 204\r\n", 204, b"", False),  # no reason phrase
        (b"HTTP/1.1 503 \r\n", 503, b"", False),
        (b"HTTP/1.0 404 Not Found\r\n", 404, b"Not Found", False),
    ],
)
def test_the_first_header_line_is_framed_whatever_the_status_line(
    status_line: bytes, status: int, reason: bytes, keep_alive: bool
) -> None:
    """A hop-by-hop or framing line right after the status line is cut and read, however
    that status line ends."""
    raw = status_line + b"Connection: close\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n"
    head = parse_response_head(raw)
    assert (head.status, head.reason, head.keep_alive) == (status, reason, keep_alive)
    assert (head.lines, head.content_length) == (b"X-A: 1\r\n", b"3")
    raw = status_line + b"Content-Length: 3\r\nX-A: 1\r\n\r\n"
    head = parse_response_head(raw)
    assert (head.lines, head.content_length) == (b"X-A: 1\r\n", b"3")
    assert head.keep_alive is status_line.startswith(b"HTTP/1.1")


_NONE, _KEEPS, _STOPS = EarlyAnswer.NONE, EarlyAnswer.KEEPS, EarlyAnswer.STOPS


@pytest.mark.parametrize(
    ("early", "meaning"),
    [
        (b"", _NONE),
        (b"HTTP/1.1 413 Payload Too Large\r\n", _NONE),  # the head is still arriving
        (b"HTTP/1.1 100 Continue\r\n\r\n", _NONE),
        (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n", _NONE),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n", _KEEPS),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 No\r\ncontent-length: 0\r\n\r\n", _KEEPS),
        (b"HTTP/1.1 413 Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", _STOPS),
        (b"HTTP/1.0 413 Too Large\r\ncontent-length: 0\r\n\r\n", _STOPS),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", _STOPS),
        (b"garbage, not a head\r\n\r\n", _STOPS),
        (b"HTTP/1.1 100 Continue\r\n" + b"x: y\r\n" * (MAX_HEAD // 6), _STOPS),
    ],
)
def test_early_answer_looks_past_interim_heads(early: bytes, meaning: EarlyAnswer) -> None:
    """Bytes an upstream sent before the request body was through: keep watching, send the
    rest (the upstream keeps the connection, so it reads the body), or stop sending."""
    assert early_answer(early) is meaning
