"""The server name a TLS client asks for, read from its ClientHello before any TLS object
exists (RFC 8446 sections 4.1.2 and 4.2, RFC 6066 section 3).

The gateway picks an `ssls` entry's own context by the name, so each entry's settings,
client certificate checks included, apply from the handshake's first step (a context
switched to during OpenSSL's SNI callback keeps the first one's verify mode). Anything
malformed reads as "no name": the TLS library then answers it as it would.
"""

from __future__ import annotations

from typing import Final, NamedTuple

HANDSHAKE: Final = 22
CLIENT_HELLO: Final = 1
SERVER_NAME: Final = 0
HOST_NAME: Final = 0
# A ClientHello is a few KiB in one record. One longer, or split over more records than
# this, is not waited for (each new piece of bytes is read again from the start, so these
# bound the work a client sending one byte at a time can cause).
MAX_HELLO: Final = 32 * 1024
MAX_RECORDS: Final = 4


class Hello(NamedTuple):
    """What the bytes so far say: `complete` once the ClientHello (or a fault) is there,
    `tls` False when they are not a TLS handshake at all, and the SNI when one was sent."""

    complete: bool
    tls: bool = True
    server_name: str | None = None


NEED_MORE: Final = Hello(False)
NO_NAME: Final = Hello(True)
NOT_TLS: Final = Hello(True, tls=False)


def read_hello(data: bytes | bytearray) -> Hello:
    """Read the ClientHello at the start of a connection's bytes (`data`, all so far)."""
    if not data:
        return NEED_MORE
    if data[0] != HANDSHAKE:
        return NOT_TLS
    # The handshake message may span several records: join their payloads.
    message = bytearray()
    at = 0
    for _ in range(MAX_RECORDS):
        if len(data) < at + 5:
            return NEED_MORE if len(data) < MAX_HELLO else NO_NAME
        if data[at] != HANDSHAKE:
            return NO_NAME
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        if length == 0:
            return NO_NAME
        end = at + 5 + length
        if len(data) < end:
            return NEED_MORE if len(data) < MAX_HELLO else NO_NAME
        message += data[at + 5 : end]
        at = end
        if len(message) >= 4:
            if message[0] != CLIENT_HELLO:
                return NO_NAME
            size = int.from_bytes(message[1:4], "big")
            if len(message) >= 4 + size:
                return Hello(True, server_name=_server_name(bytes(message[4 : 4 + size])))
            if size > MAX_HELLO:
                return NO_NAME
    return NO_NAME


def _server_name(body: bytes) -> str | None:
    """The host name in a ClientHello body's server_name extension, if any."""
    try:
        at = 2 + 32  # legacy_version, random
        at += 1 + body[at]  # legacy_session_id
        at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher_suites
        at += 1 + body[at]  # legacy_compression_methods
        if at + 2 > len(body):
            return None  # no extensions
        end = at + 2 + int.from_bytes(body[at : at + 2], "big")
        at += 2
        while at + 4 <= end:
            kind = int.from_bytes(body[at : at + 2], "big")
            size = int.from_bytes(body[at + 2 : at + 4], "big")
            at += 4
            if kind == SERVER_NAME:
                return _host_name(body[at : at + size])
            at += size
    except IndexError:
        return None
    return None


def _host_name(extension: bytes) -> str | None:
    listed = int.from_bytes(extension[0:2], "big")
    at, end = 2, min(2 + listed, len(extension))
    while at + 3 <= end:
        kind = extension[at]
        size = int.from_bytes(extension[at + 1 : at + 3], "big")
        name = extension[at + 3 : at + 3 + size]
        if kind == HOST_NAME and len(name) == size and size:
            try:
                text = name.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if text.isprintable() else None
        at += 3 + size
    return None
