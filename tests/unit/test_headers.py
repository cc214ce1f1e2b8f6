from __future__ import annotations

import pytest

from gateway.http.headers import (
    client_request_headers,
    client_response_headers,
    encode_head,
    is_websocket_upgrade,
    upstream_request_headers,
)


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [n for n, _ in headers]


def test_upstream_head_drops_hop_by_hop_and_restates_framing() -> None:
    client = [
        (b"host", b"public"),
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"1"),
        (b"keep-alive", b"300"),
        (b"te", b"trailers"),
        (b"transfer-encoding", b"chunked"),
        (b"proxy-authorization", b"Basic x"),
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"x-forwarded-for", b"2.2.2.2"),
        (b"x-real-ip", b"9.9.9.9"),
        (b"expect", b"100-continue"),
        (b"accept", b"*/*"),
    ]
    out = upstream_request_headers(
        client_request_headers(client),
        host=b"backend",
        remote_addr=b"127.0.0.1",
        forwarded_host=b"public",
        server_port=b"9080",
        framing=(b"transfer-encoding", b"chunked"),
        websocket=False,
    )
    assert out == [
        (b"host", b"backend"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"1.1.1.1, 2.2.2.2, 127.0.0.1"),
        (b"x-real-ip", b"127.0.0.1"),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-host", b"public"),
        (b"x-forwarded-port", b"9080"),
        (b"transfer-encoding", b"chunked"),
    ]


def test_websocket_upgrade_survives_only_when_asked() -> None:
    client = [(b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-key", b"k")]
    assert is_websocket_upgrade(client)
    kwargs = dict(host=b"h", remote_addr=b"r", forwarded_host=b"h", server_port=b"1", framing=None)
    with_ws = upstream_request_headers(client, websocket=True, **kwargs)  # type: ignore[arg-type]
    assert (b"upgrade", b"websocket") in with_ws
    assert (b"connection", b"upgrade") in with_ws
    without = upstream_request_headers(client, websocket=False, **kwargs)  # type: ignore[arg-type]
    assert b"upgrade" not in names(without)
    assert b"connection" not in names(without)


def test_response_framing_restated() -> None:
    upstream = [
        (b"content-length", b"5"),
        (b"connection", b"close, x-h"),
        (b"x-h", b"1"),
        (b"a", b"b"),
    ]
    assert client_response_headers(upstream, status=200, no_body=False) == [
        (b"a", b"b"),
        (b"content-length", b"5"),
    ]
    chunked = [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]
    assert client_response_headers(chunked, status=200, no_body=False) == [
        (b"transfer-encoding", b"chunked")
    ]
    assert client_response_headers([], status=200, no_body=False) == [
        (b"transfer-encoding", b"chunked")
    ]
    assert client_response_headers([], status=200, no_body=True) == []
    # A HEAD answer keeps its length; a 204 has none (RFC 9110 section 8.6).
    assert client_response_headers(upstream, status=200, no_body=True)[-1] == (
        b"content-length",
        b"5",
    )
    assert client_response_headers(upstream, status=204, no_body=True) == [(b"a", b"b")]


def test_encode_head_refuses_a_stray_cr_lf_or_nul_anywhere() -> None:
    """Every place a CR, LF or NUL could come from (start line, a name, a value) is caught,
    with relayed lines before the headers or without."""
    start, headers = b"GET /a HTTP/1.1", [(b"x-a", b"one"), (b"x-b", b"two")]
    for lines in (b"", b"A: 1\r\nB: 2\r\n"):
        assert encode_head(start, headers, lines) == (
            b"GET /a HTTP/1.1\r\n" + lines + b"x-a: one\r\nx-b: two\r\n\r\n"
        )
        for bad in (b"\r", b"\n", b"\0", b"\r\n", b"\n\r"):
            for at in range(len(start) + 1):
                with pytest.raises(ValueError, match="line break"):
                    encode_head(start[:at] + bad + start[at:], headers, lines)
            for index in range(len(headers)):
                for field in (0, 1):
                    text = headers[index][field]
                    for at in range(len(text) + 1):
                        spoiled = list(headers)
                        pair = list(spoiled[index])
                        pair[field] = text[:at] + bad + text[at:]
                        spoiled[index] = (pair[0], pair[1])
                        with pytest.raises(ValueError, match="line break"):
                            encode_head(start, spoiled, lines)
