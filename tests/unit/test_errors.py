from __future__ import annotations

import h11
import pytest

from gateway.errors import protocol_fault


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\napikey : key-1\r\n\r\n", "illegal header line"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nap\x7fikey: key-1\r\n\r\n", "illegal header line"),
        (b"GET /?k=key-1 HTTP/1.1 x\r\nHost: x\r\n\r\n", "illegal request line"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz key-1\r\n",
            "illegal chunk header",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nak-\r\n",
            "malformed chunk footer",
        ),
    ],
)
def test_h11_faults_are_named_without_the_bytes(data: bytes, fault: str) -> None:
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(data)

    def parse_all() -> None:
        while parser.next_event() is not h11.NEED_DATA:
            pass

    with pytest.raises(h11.RemoteProtocolError) as caught:
        parse_all()
    quoted = "k-" if "footer" in fault else "key-1"
    assert quoted in str(caught.value)  # h11 quotes the bytes...
    assert protocol_fault(caught.value) == fault  # ...the log line does not


def test_messages_without_quoted_bytes_are_kept() -> None:
    message = "Only Transfer-Encoding: chunked is supported"
    assert protocol_fault(Exception("Missing mandatory Host: header")).endswith("Host: header")
    assert protocol_fault(Exception(message)) == message
    assert protocol_fault(Exception("Can't receive data")) == "Can't receive data"
