"""The SNI read from real ClientHellos (Python's own TLS client writes them), however the
bytes arrive; anything else reads as no name, never an exception."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.tlshello import NEED_MORE, NO_NAME, NOT_TLS, Hello, read_hello


def client_hello(server_name: str | None, **context_settings: object) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    for name, value in context_settings.items():
        setattr(context, name, value)
    out = ssl.MemoryBIO()
    client = context.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return out.read()


@pytest.mark.parametrize("name", ["api.example.com", "A.Test", "x" * 63 + ".example"])
def test_the_name_of_a_real_hello(name: str) -> None:
    assert read_hello(client_hello(name)) == Hello(True, server_name=name)
    tls12 = client_hello(name, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert read_hello(tls12).server_name == name


def test_no_name_when_none_was_sent() -> None:
    assert read_hello(client_hello(None)) == NO_NAME


def test_a_hello_arriving_byte_by_byte() -> None:
    hello = client_hello("api.test")
    for end in range(len(hello)):
        assert read_hello(hello[:end]) == NEED_MORE
    assert read_hello(hello).server_name == "api.test"
    assert read_hello(hello + b"more bytes after it").server_name == "api.test"


def test_a_hello_split_over_records() -> None:
    """RFC 8446 section 5.1 lets a handshake message span records."""
    hello = client_hello("api.test")
    message = hello[5:]
    head = hello[:3]
    records = b"".join(
        head + len(piece).to_bytes(2, "big") + piece
        for piece in (message[:7], message[7:100], message[100:])
    )
    assert read_hello(records).server_name == "api.test"
    assert read_hello(records[:-1]) == NEED_MORE


def test_what_is_not_a_hello() -> None:
    assert read_hello(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == NOT_TLS
    assert read_hello(b"") == NEED_MORE
    hello = bytearray(client_hello("api.test"))
    hello[5] = 2  # a ServerHello, not a ClientHello
    assert read_hello(bytes(hello)) == NO_NAME
    assert read_hello(b"\x16\x03\x01\x00\x00") == NO_NAME  # an empty record
    # A ClientHello header in a record of its own: more records are waited for, unless
    # the size it claims is past what is waited for.
    assert read_hello(b"\x16\x03\x01\x00\x04\x01\x00\x01\x00") == NEED_MORE
    assert read_hello(b"\x16\x03\x01\x00\x04\x01\xff\xff\xff") == NO_NAME


@given(st.binary(max_size=600))
def test_any_bytes_read_without_an_exception(data: bytes) -> None:
    result = read_hello(data)
    assert isinstance(result, Hello)
    assert read_hello(b"\x16" + data[1:]).tls


@given(st.data())
def test_a_damaged_hello_reads_without_an_exception(data: st.DataObject) -> None:
    hello = bytearray(client_hello("api.test"))
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(5, len(hello) - 1))
        hello[at] = data.draw(st.integers(0, 255))
    result = read_hello(bytes(hello))
    assert result.server_name in (None, "api.test") or result.server_name.isprintable()


def test_a_hello_in_too_many_records_is_not_waited_for() -> None:
    hello = client_hello("api.test")
    message = hello[5:]
    records = b"".join(
        hello[:3] + len(message[i : i + 8]).to_bytes(2, "big") + message[i : i + 8]
        for i in range(0, len(message), 8)
    )
    assert read_hello(records) == NO_NAME
