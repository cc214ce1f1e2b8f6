"""Request-head checks (`gateway.http.framing`), each case next to what h11 does with it."""

from __future__ import annotations

from collections.abc import Callable

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.framing import (
    HeadError,
    check_head,
    check_incomplete,
    check_lines,
    escaped_request_line,
    find_head_end,
)

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
    (b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400, True),
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


@pytest.mark.parametrize(
    ("request_line", "header_line", "whole", "count", "status"),
    [
        (100, 5, 100, 5, 431),  # "Host: x" is longer than a header line may be
        (10, 100, 100, 5, 414),  # "GET / HTTP/1.1" is longer than a request line may be
        (100, 100, 20, 5, 431),  # the head is longer than a head may be
        (100, 100, 100, 1, 431),  # two headers, one allowed
    ],
)
def test_every_limit_applies_to_a_plain_head(
    request_line: int, header_line: int, whole: int, count: int, status: int
) -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\n"
    limits = {
        "max_request_line": request_line,
        "max_header_line": header_line,
        "max_head": whole,
        "max_headers": count,
    }
    with pytest.raises(HeadError) as info:
        check_head(data, **limits)
    assert info.value.status == status


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


# Heads for the one-pass check: request lines and header lines that are mostly plain, with
# names that matter (framing, aliases with `_`), and sometimes one byte the rules care about.
def _spoiled(line: bytes, byte: bytes, where: int) -> bytes:
    where %= len(line) + 1
    return line[:where] + byte + line[where:]


_names = st.one_of(
    st.binary(min_size=1, max_size=4).map(lambda b: bytes(b"aZ-_~"[x % 5] for x in b)),
    st.sampled_from(
        [b"Host", b"content-length", b"Transfer-Encoding", b"Content_Length", b"X_Real_IP"]
    ),
)
_values = st.sampled_from(
    [b"", b" x", b"5", b" 5 ", b"5, 5", b"chunked", b"gzip", b"a\tb", b" " + b"v" * 30]
)
_spoilers = st.sampled_from([b""] * 6 + [b"\r", b"\n", b" ", b"\t", b":", b"_"])
_lines = st.builds(
    _spoiled,
    st.builds(lambda n, v: n + b":" + v, _names, _values),
    _spoilers,
    st.integers(0, 12),
)
_request_lines = st.builds(
    _spoiled,
    st.sampled_from([b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"GET /" + b"a" * 40 + b" HTTP/1.1"]),
    _spoilers,
    st.integers(0, 60),
)


@settings(max_examples=800, derandomize=True, deadline=None)
@given(
    _request_lines,
    st.lists(_lines, max_size=6),
    st.sampled_from([b"\r\n", b"\n"]),
    st.integers(5, 80),
    st.integers(5, 80),
    st.integers(20, 200),
    st.integers(1, 6),
)
def test_the_one_pass_check_agrees_with_the_line_by_line_check(
    request_line: bytes,
    lines: list[bytes],
    end: bytes,
    max_request_line: int,
    max_header_line: int,
    max_head: int,
    max_headers: int,
) -> None:
    data = request_line + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + end
    limits = {
        "max_request_line": max_request_line,
        "max_header_line": max_header_line,
        "max_head": max_head,
        "max_headers": max_headers,
    }
    if find_head_end(data) != len(data):
        return  # a blank line inside: the head ends earlier

    def outcome(check: Callable[..., None]) -> int:
        try:
            check(data, **limits)
        except HeadError as exc:
            return exc.status
        return 0

    assert outcome(check_head) == outcome(check_lines)


def _first_blank_line(data: bytes) -> int | None:
    """The head's end by the plain rule: the earliest CRLF or bare LF blank line after any
    leading empty lines (what `find_head_end` finds, without its shortcut)."""
    start = len(data) - len(data.lstrip(b"\r\n"))
    ends = [i + 3 for i in [data.find(b"\n\r\n", start)] if i >= 0]
    ends += [i + 2 for i in [data.find(b"\n\n", start)] if i >= 0]
    return min(ends) if ends else None


@given(st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b": ", b"x" * 5]), max_size=40))
@settings(max_examples=400)
def test_head_end_is_the_first_blank_line(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert find_head_end(data) == _first_blank_line(data)


def test_body_after_the_head_is_not_searched() -> None:
    data = head(b"Content-Length: 10") + b"x\n\nyyyyyyy" + b"\n\n" * 1000
    assert find_head_end(data) == len(head(b"Content-Length: 10"))


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            "GET /日本?q=é HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            (len("GET /日本?q=é HTTP/1.1".encode()), b"GET /%E6%97%A5%E6%9C%AC?q=%C3%A9 HTTP/1.1"),
        ),
        (
            "\r\nGET /é HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
            (len("\r\nGET /é HTTP/1.1".encode()), b"GET /%C3%A9 HTTP/1.1"),
        ),
        ("GET / HTTP/1.1\r\nX-Name: é\r\n\r\n".encode(), None),  # a header value: h11's
        ("GÉT / HTTP/1.1\r\nHost: x\r\n\r\n".encode(), None),
        ("GET /é HTTP/1.¹\r\nHost: x\r\n\r\n".encode(), None),
        ("GET /é\r\nHost: x\r\n\r\n".encode(), None),
    ],
)
def test_escaped_request_line(head: bytes, expected: tuple[int, bytes] | None) -> None:
    assert escaped_request_line(head) == expected
    if expected is not None:
        stop, line = expected
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(line + head[stop:])
        event = conn.next_event()
        assert isinstance(event, h11.Request)
        assert event.target.isascii()
