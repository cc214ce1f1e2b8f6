"""Request-head checks (`gateway.http.framing`), each case next to what h11 does with it."""

from __future__ import annotations

import h11
import pytest

from gateway.http.framing import HeadError, check_head, check_incomplete, find_head_end

LIMITS = {"max_request_line": 8192, "max_header_line": 8192, "max_head": 32768, "max_headers": 100}


def head(*lines: bytes, version: bytes = b"1.1") -> bytes:
    return (
        b"POST /x HTTP/" + version + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    )


def h11_accepts(data: bytes) -> bool:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        return isinstance(conn.next_event(), h11.Request)
    except h11.RemoteProtocolError:
        return False


# (head, status the gateway answers, whether h11 alone would have accepted it)
REFUSED = [
    (head(b"Host: x", b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400, True),
    (head(b"Host: x", b"Content-Length: 5", b"Content-Length: 5"), 400, True),
    (head(b"Host: x", b"Content-Length: 5, 5"), 400, True),
    (head(b"Host: x", b"Content-Length: +5"), 400, False),
    (head(b"Host: x", b"Transfer-Encoding: gzip"), 501, False),
    (head(b"Host: x", b"Transfer-Encoding: gzip, chunked"), 501, False),
    (head(b"Host: x", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), 501, False),
    (head(b"Host: x", b"X-A: a", b" folded"), 400, True),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400, True),
    (b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400, True),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400, True),
    (head(b"Host: x", b"Transfer-Encoding: chunked", version=b"1.0"), 400, True),
    (head(b"Host: x", b"Content_Length: 5"), 400, True),
    (head(b"Host: x", b"transfer_encoding: chunked"), 400, True),
    (head(b"Host: x", b"X_Consumer_Username: admin"), 400, True),
    (head(b"Host: x", b"no colon here"), 400, False),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, True),
    (head(b"Host: x", b"X-Big: " + b"v" * 9000), 431, True),
    (head(b"Host: x", *(b"X-H%d: v" % i for i in range(100))), 431, True),
]


@pytest.mark.parametrize(("data", "status", "h11_alone"), REFUSED)
def test_refused_heads(data: bytes, status: int, h11_alone: bool) -> None:
    end = find_head_end(data)
    assert end == len(data)
    with pytest.raises(HeadError) as info:
        check_head(data[:end], **LIMITS)
    assert info.value.status == status
    assert h11_accepts(data) == h11_alone


@pytest.mark.parametrize(
    "data",
    [
        head(b"Host: x", b"Content-Length: 5"),
        head(b"Host: x", b"Transfer-Encoding: chunked"),
        head(b"Host: x", b"Transfer-Encoding:  Chunked "),
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\nX_Custom_Thing: fine\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
)
def test_accepted_heads(data: bytes) -> None:
    end = find_head_end(data)
    assert end == len(data)
    check_head(data[:end], **LIMITS)


def test_head_end_found_incrementally_and_body_excluded() -> None:
    data = head(b"Host: x", b"Content-Length: 3") + b"abc"
    assert find_head_end(data[:10]) is None
    assert find_head_end(data) == len(data) - 3


def test_incomplete_heads_that_are_already_too_long() -> None:
    with pytest.raises(HeadError) as info:
        check_incomplete(b"GET /" + b"a" * 9000, 8192, 32768)
    assert info.value.status == 414
    with pytest.raises(HeadError) as info:
        check_incomplete(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 6000, 8192, 32768)
    assert info.value.status == 431
    check_incomplete(b"GET / HTTP/1.1\r\nHost: x\r\n", 8192, 32768)
