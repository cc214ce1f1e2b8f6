"""An LDAP simple bind (RFC 4511 section 4.2), the one operation ldap-auth needs.

BER is written and read for exactly the messages involved: the BindRequest going out, and
the BindResponse, or the server's Notice of Disconnection, coming back. Connections are
kept for the next bind to the same server (`fetch`'s idle pool: a bind replaces whatever
identity the connection had); one that fails before any byte of the answer is replaced by
a fresh one, once.

`simple_bind` answers True or False for the server's verdict on the name and password, and
raises `LdapError` when there is no verdict: the server cannot be reached, TLS fails, the
answer is not LDAP, no answer within the timeout, or the server says it cannot decide
(busy, unavailable, an error of its own).
"""

from __future__ import annotations

import ssl

import trio

from gateway.fetch import Idle, KeepAlive, Origin, give_idle, open_stream, take_idle

MAX_MESSAGE = 64 * 1024
SUCCESS = 0
# Result codes that are no verdict on the credentials (RFC 4511 appendix A.2).
NO_VERDICT = frozenset({1, 2, 3, 51, 52, 80})
_BIND_REQUEST = 0x60  # [APPLICATION 0], constructed
_BIND_RESPONSE = 0x61  # [APPLICATION 1], constructed
_EXTENDED_RESPONSE = 0x78  # [APPLICATION 24]: the Notice of Disconnection (message id 0)
_SEQUENCE, _INTEGER, _OCTETS, _ENUMERATED, _SIMPLE = 0x30, 0x02, 0x04, 0x0A, 0x80
KEEPALIVE = KeepAlive(pool=5, idle_s=60.0)  # APISIX's pool for ldap-auth


class LdapError(Exception):
    """No verdict from the server (unreachable, TLS, protocol, timeout, its own failure)."""


class _Stale(Exception):
    """A kept connection failed before any byte of the answer."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _length(len(value)) + value


def _integer(n: int) -> bytes:
    return _tlv(_INTEGER, n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True))


def encode_bind(message_id: int, name: bytes, password: bytes) -> bytes:
    """An LDAPv3 BindRequest with simple authentication."""
    bind = _integer(3) + _tlv(_OCTETS, name) + _tlv(_SIMPLE, password)
    return _tlv(_SEQUENCE, _integer(message_id) + _tlv(_BIND_REQUEST, bind))


def _read_tlv(data: bytes, at: int) -> tuple[int, int, int] | None:
    """(tag, value start, value end) of the element at `at`, or None when `data` does not
    hold all of it yet; raises LdapError when it cannot be BER."""
    if at + 2 > len(data):
        return None
    tag, first = data[at], data[at + 1]
    start = at + 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise LdapError("unsupported BER length")
        if start + count > len(data):
            return None
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    if length > MAX_MESSAGE:
        raise LdapError("LDAP message too large")
    end = start + length
    return (tag, start, end) if end <= len(data) else None


def _inner(data: bytes, at: int, end: int) -> tuple[int, int, int]:
    """An element that must lie whole inside [at, end)."""
    element = _read_tlv(data[:end], at)
    if element is None:
        raise LdapError("truncated BER element")
    return element


def parse_response(data: bytes) -> tuple[int, int, int, int] | None:
    """(message id, operation tag, result code, bytes used) of the first message in
    `data`, or None when it is not all there; raises LdapError when it is not an
    LDAPResult-bearing message."""
    outer = _read_tlv(data, 0)
    if outer is None:
        return None
    tag, start, end = outer
    if tag != _SEQUENCE:
        raise LdapError("not an LDAP message")
    tag, id_start, id_end = _inner(data, start, end)
    if tag != _INTEGER or not 0 < id_end - id_start <= 4:
        raise LdapError("bad message id")
    message_id = int.from_bytes(data[id_start:id_end], "big", signed=True)
    op, op_start, op_end = _inner(data, id_end, end)
    tag, code_start, code_end = _inner(data, op_start, op_end)
    if tag != _ENUMERATED or not 0 < code_end - code_start <= 4:
        raise LdapError("bad result code")
    return message_id, op, int.from_bytes(data[code_start:code_end], "big"), end


async def simple_bind(
    host: str,
    port: int,
    tls: bool,
    verify: bool,
    name: bytes,
    password: bytes,
    timeout_s: float,
) -> bool:
    """Whether the server accepts `password` for the entry `name`; raises LdapError."""
    origin: Origin = ("ldaps" if tls else "ldap", host, port, verify)
    idle = take_idle(origin, trio.current_time())
    with trio.move_on_after(timeout_s):
        while True:
            stream = idle.stream if idle is not None else None
            try:
                if stream is None:
                    stream = await open_stream(host, port, tls, verify)
                message_id = idle.state if idle is not None else 1
                code = await _bind_on(stream, message_id, name, password, idle is not None)
            except BaseException as exc:
                if stream is not None:
                    await trio.aclose_forcefully(stream)
                if isinstance(exc, _Stale):
                    idle = None  # once more, on a fresh connection
                    continue
                if isinstance(exc, (OSError, trio.BrokenResourceError, ssl.SSLError)):
                    raise LdapError(f"{type(exc).__name__}: {exc}") from None
                raise
            if code in NO_VERDICT:
                await trio.aclose_forcefully(stream)
                raise LdapError(f"the server could not decide (result code {code})")
            now = trio.current_time()
            next_id = message_id + 1 if message_id < 0x7FFFFFFF else 1
            give_idle(origin, Idle(stream, next_id, now + KEEPALIVE.idle_s), KEEPALIVE.pool, now)
            return code == SUCCESS
    raise LdapError(f"no answer within {timeout_s:g} s")


async def _bind_on(
    stream: trio.abc.Stream, message_id: int, name: bytes, password: bytes, kept: bool
) -> int:
    """The bind's result code; raises _Stale when a kept connection fails before any byte
    of the answer came."""
    data = b""
    try:
        await stream.send_all(encode_bind(message_id, name, password))
        while True:
            parsed = parse_response(data)
            if parsed is not None:
                break
            chunk = await stream.receive_some(MAX_MESSAGE)
            if not chunk:
                raise LdapError("the server closed the connection")
            data += chunk
    except (OSError, trio.BrokenResourceError, LdapError):
        if kept and not data:
            raise _Stale from None
        raise
    got_id, op, code, used = parsed
    if op == _EXTENDED_RESPONSE and got_id == 0:  # the server is closing the connection
        if kept:
            raise _Stale
        raise LdapError(f"the server disconnected (result code {code})")
    if op != _BIND_RESPONSE or got_id != message_id or used != len(data):
        raise LdapError("unexpected LDAP answer")
    return code
