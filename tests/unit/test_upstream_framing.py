"""The lean upstream framing (`gateway.upstream.framing`) against h11's own reading of the
same bytes: status, headers, body, and whether the connection may carry another request."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.response import encode_chunk
from gateway.upstream.framing import (
    _FIELD,
    _FIELD_BLOCK,
    ChunkedDecoder,
    Framing,
    FramingError,
    _checked_fields,
    body_framing,
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
    (
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
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


_header_lines = st.builds(
    _spoil,
    st.builds(
        lambda name, value: name + b":" + value,
        _bytes_of(b"aZ-~", 4),
        _bytes_of(b"a \t:,\x80\xff", 8),
    ),
    st.sampled_from([b"", b"", b"", b"", b"\r", b"\n", b"\x00", b"\x0b", b"\x7f", b" ", b"\t"]),
    st.integers(0, 20),
)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.lists(_header_lines, max_size=5))
def test_the_one_pass_block_reads_like_the_line_by_line_check(lines: list[bytes]) -> None:
    """What `_FIELD_BLOCK` accepts, `_FIELD` reads exactly as the line-by-line check does;
    what it refuses goes to that check, which finds the fault or reads it alike."""
    block = b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    raw = _STATUS_LINE + block
    if find_head_end(raw) != len(raw):
        return  # a blank line inside: the head ends earlier
    if _FIELD_BLOCK.fullmatch(raw, len(_STATUS_LINE)) is not None:
        assert _FIELD.findall(raw, len(_STATUS_LINE)) == _checked_fields(block)
    try:
        expected = _checked_fields(block)
    except FramingError:
        with pytest.raises(FramingError):
            parse_response_head(raw)
        return
    lowered = [(name.lower(), value) for name, value in expected]
    assert parse_response_head(raw).headers == [
        h for i, h in enumerate(lowered) if h[0] != b"content-length" or h not in lowered[:i]
    ]


def test_a_plain_head_takes_the_one_pass_block() -> None:
    raw = _STATUS_LINE + b"Server: nginx\r\nX-Pad:  a b\t \r\nContent-Length: 0\r\n\r\n"
    assert _FIELD_BLOCK.fullmatch(raw, len(_STATUS_LINE)) is not None
    assert parse_response_head(raw).headers == [
        (b"server", b"nginx"),
        (b"x-pad", b"a b"),
        (b"content-length", b"0"),
    ]
