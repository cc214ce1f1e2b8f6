"""nginx's gzip filter rules (gateway/http/compression.py)."""

from __future__ import annotations

import gzip

import pytest

from gateway.http.compression import accepts_gzip, start_gzip


@pytest.mark.parametrize(
    ("value", "taken"),
    [
        (b"gzip", True),
        (b"GZip", True),
        (b"deflate, gzip;q=0.5", True),
        (b"gzip ; q=1.0, br", True),
        (b"gzip;q=0", False),
        (b"gzip;q=0.000", False),
        (b"gzip;q=x", False),
        (b"x-gzip", False),
        (b"deflate, br", False),
        (b"", False),
    ],
)
def test_accept_encoding(value: bytes, taken: bool) -> None:
    assert accepts_gzip(value) is taken


def test_head_edits_and_stream() -> None:
    headers = [
        (b"content-type", b"text/html"),
        (b"content-length", b"100"),
        (b"accept-ranges", b"bytes"),
        (b"etag", b'"abc"'),
        (b"content-encoding", b""),
    ]
    stream = start_gzip(6, b"GET", 200, [(b"accept-encoding", b"gzip")], headers)
    assert stream is not None
    assert headers == [
        (b"content-type", b"text/html"),
        (b"etag", b'W/"abc"'),
        (b"content-encoding", b"gzip"),
    ]
    out = stream.feed(b"a" * 1000) + stream.feed(b"b" * 1000) + stream.end()
    assert gzip.decompress(out) == b"a" * 1000 + b"b" * 1000


@pytest.mark.parametrize(
    ("method", "status", "request_headers", "headers"),
    [
        (b"HEAD", 200, [(b"accept-encoding", b"gzip")], []),
        (b"GET", 500, [(b"accept-encoding", b"gzip")], []),
        (b"GET", 200, [], []),
        (b"GET", 200, [(b"accept-encoding", b"gzip"), (b"via", b"1.1 p")], []),
        (b"GET", 200, [(b"accept-encoding", b"gzip")], [(b"content-encoding", b"br")]),
    ],
)
def test_left_alone(
    method: bytes,
    status: int,
    request_headers: list[tuple[bytes, bytes]],
    headers: list[tuple[bytes, bytes]],
) -> None:
    before = [(b"etag", b'"x"'), *headers]
    edited = list(before)
    assert start_gzip(1, method, status, request_headers, edited) is None
    assert edited == before
