"""gateway.http.response against h11: for every case the bytes the gateway writes and the
bytes h11 would write read back the same through an h11 client (status, headers, body,
where the body ends), and both agree on whether the connection stays open."""

from __future__ import annotations

import h11
import pytest

from gateway.http.response import (
    LAST_CHUNK,
    ResponseWriter,
    start_response,
    wants_keep_alive,
)

Header = tuple[bytes, bytes]

CL5 = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
CHUNKED = [(b"content-type", b"text/plain"), (b"transfer-encoding", b"chunked")]
NEITHER = [(b"content-type", b"text/plain")]
BODY = [b"he", b"", b"llo"]

# (request method, client version, client Connection header, status, headers, gateway keeps)
CASES = [
    (b"GET", b"1.1", None, 200, CL5, True),
    (b"GET", b"1.1", None, 200, CHUNKED, True),
    (b"GET", b"1.1", None, 200, NEITHER, True),
    (b"GET", b"1.0", None, 200, CL5, True),
    (b"GET", b"1.0", None, 200, CHUNKED, True),
    (b"GET", b"1.0", None, 200, NEITHER, True),
    (b"GET", b"1.0", b"keep-alive", 200, CL5, False),
    (b"GET", b"1.0", b"keep-alive", 200, NEITHER, True),
    (b"GET", b"1.1", b"close", 200, CL5, True),
    (b"GET", b"1.1", b"keep-alive, Close", 200, CHUNKED, True),
    (b"GET", b"1.1", None, 200, CL5, False),
    (b"GET", b"1.1", None, 200, CHUNKED, False),
    (b"HEAD", b"1.1", None, 200, CL5, True),
    (b"HEAD", b"1.1", None, 200, NEITHER, True),
    (b"HEAD", b"1.0", None, 200, NEITHER, True),
    (b"GET", b"1.1", None, 204, [], True),
    (b"GET", b"1.1", None, 304, [(b"etag", b'"x"')], True),
    (b"GET", b"1.0", None, 304, [(b"content-length", b"10")], True),
    (b"POST", b"1.1", None, 201, [(b"location", b"/a"), (b"content-length", b"5")], True),
    (b"GET", b"1.1", None, 502, [(b"content-length", b"5"), (b"connection", b"close")], True),
]


def _request(method: bytes, version: bytes, connection: bytes | None) -> bytes:
    head = b"%s / HTTP/%s\r\nhost: a\r\n" % (method, version)
    if connection is not None:
        head += b"connection: %s\r\n" % connection
    return head + b"\r\n"


def _by_h11(case: tuple) -> tuple[bytes, bool]:  # type: ignore[type-arg]
    method, version, connection, status, headers, gateway_keeps = case
    server = h11.Connection(h11.SERVER)
    server.receive_data(_request(method, version, connection))
    assert type(server.next_event()) is h11.Request
    assert type(server.next_event()) is h11.EndOfMessage
    headers = list(headers)
    if not gateway_keeps:
        headers.append((b"connection", b"close"))
    out = server.send(h11.Response(status_code=status, headers=headers, reason=b"R")) or b""
    if method != b"HEAD" and status not in (204, 304):
        for piece in BODY:
            out += server.send(h11.Data(data=piece)) or b""
    out += server.send(h11.EndOfMessage()) or b""
    return out, server.our_state is h11.DONE


def _by_gateway(case: tuple) -> tuple[bytes, bool]:  # type: ignore[type-arg]
    method, version, connection, status, headers, gateway_keeps = case
    request_headers = [(b"connection", connection)] if connection is not None else []
    keep = wants_keep_alive(version, request_headers) and gateway_keeps
    out, writer = start_response(
        status, b"R", headers, request_method=method, http_version=version, keep_alive=keep
    )
    for piece in BODY:
        out += writer.piece(piece)
    return out + writer.end(), writer.keep_alive


def _read_back(method: bytes, data: bytes) -> tuple[int, list[Header], bytes, bool]:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[(b"host", b"a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    status, headers, body = 0, [], b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(b"")  # the close ends a close-delimited body
            continue
        if type(event) is h11.Response:
            # Order between different field names carries no meaning (RFC 9110 section 5.3).
            status, headers = event.status_code, sorted(event.headers)
        elif type(event) is h11.Data:
            body += event.data
        elif type(event) is h11.EndOfMessage:
            return status, headers, body, client.their_state is h11.DONE
        else:
            raise AssertionError(event)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:4])))
def test_reads_back_like_h11(case: tuple) -> None:  # type: ignore[type-arg]
    expected, h11_keeps = _by_h11(case)
    got, keeps = _by_gateway(case)
    method = case[0]
    assert _read_back(method, got) == _read_back(method, expected)
    assert keeps == h11_keeps


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(b"x-a", b"a\r\nx-evil: 1")], b"OK"),
        ([(b"x-a", b"a\nb")], b"OK"),
        ([(b"x-a", b"a\rb")], b"OK"),
        ([(b"x-a", b"a\0")], b"OK"),
        ([(b"x-\na", b"a")], b"OK"),
        ([(b"x-a", b"a")], b"O\rK"),
    ],
)
def test_line_breaks_are_refused(headers: list[Header], reason: bytes) -> None:
    with pytest.raises(ValueError, match="line break"):
        start_response(
            200, reason, headers, request_method=b"GET", http_version=b"1.1", keep_alive=True
        )


def test_chunked_writer_frames_and_ends() -> None:
    writer = ResponseWriter(chunked=True, no_body=False, keep_alive=True)
    assert writer.piece(b"hello") == b"5\r\nhello\r\n"
    assert writer.piece(b"") == b""  # an empty chunk would end the body early
    assert writer.end() == LAST_CHUNK


@pytest.mark.parametrize(
    ("version", "headers", "keep"),
    [
        (b"1.1", [], True),
        (b"1.1", [(b"connection", b"keep-alive")], True),
        (b"1.1", [(b"connection", b"Close")], False),
        (b"1.1", [(b"connection", b"upgrade, close")], False),
        (b"1.1", [(b"connection", b"closed")], True),
        (b"1.0", [], False),
        (b"1.0", [(b"connection", b"keep-alive")], True),
        (b"1.0", [(b"connection", b"Keep-Alive, foo")], True),
        (b"1.0", [(b"connection", b"keep-alive, close")], False),
        (b"1.0", [(b"connection", b"keep-alived")], False),
    ],
)
def test_keep_alive_follows_the_request(version: bytes, headers: list[Header], keep: bool) -> None:
    assert wants_keep_alive(version, headers) is keep


@pytest.mark.parametrize("status", [200, 304])
def test_http10_keep_alive_when_the_length_is_known(status: int) -> None:
    """nginx keeps an HTTP/1.0 connection that asked for it (`Connection: keep-alive`) when
    the body's end is known, and says so; h11 never does. A body that runs to the close
    cannot, so that connection closes."""
    head, writer = start_response(
        status, b"R", CL5, request_method=b"GET", http_version=b"1.0", keep_alive=True
    )
    assert writer.keep_alive
    assert b"\r\nconnection: keep-alive\r\n" in head
    assert b"transfer-encoding" not in head
    head, writer = start_response(
        200, b"R", CHUNKED, request_method=b"GET", http_version=b"1.0", keep_alive=True
    )
    assert not writer.keep_alive
    assert not writer.chunked
    assert b"\r\nconnection: close\r\n" in head
