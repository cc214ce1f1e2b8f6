"""Replies the gateway answers by itself (errors, rejections), built once where possible.

A `Reply` ends a request: a plugin hook or the proxy returns one and the downstream loop
writes it. Bodies follow APISIX: JSON objects with a trailing newline.
"""

from __future__ import annotations

import functools
from email.utils import formatdate
from http import HTTPStatus
from typing import Final

import msgspec

Header = tuple[bytes, bytes]

_JSON_ENCODE = msgspec.json.Encoder().encode
JSON_CONTENT_TYPE: Final = (b"content-type", b"application/json")


class Reply:
    """A complete response: status, headers (lower-case bytes names) and body bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[Header], body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Reply(status={self.status}, body={self.body[:80]!r})"


class _HttpDate:
    """The `Date` header for a second of the clock, formatted once per second (RFC 9110
    section 6.6.1: an origin server's 2xx to 4xx answers carry one; the gateway is the
    origin of its own replies). The caller reads the clock: this module does no IO."""

    __slots__ = ("header", "second")

    def __init__(self) -> None:
        self.second = -1
        self.header: Header = (b"date", b"")

    def __call__(self, now: int) -> Header:
        if now != self.second:
            self.second = now
            self.header = (b"date", formatdate(now, usegmt=True).encode())
        return self.header


date_header: Final = _HttpDate()


# Reason phrases the gateway states itself, as nginx does, whatever the upstream sent.
REASONS: Final = {s.value: s.phrase.encode() for s in HTTPStatus}


def reason(status: int) -> bytes:
    return REASONS.get(status, b"")


def json_body(obj: object) -> bytes:
    """Encode `obj` as APISIX does for error bodies: compact JSON plus a newline."""
    return _JSON_ENCODE(obj) + b"\n"


def json_reply(status: int, obj: object, extra: list[Header] | None = None) -> Reply:
    """A JSON reply; `extra` headers come after the content type."""
    headers = [JSON_CONTENT_TYPE]
    if extra:
        headers.extend(extra)
    return Reply(status, headers, json_body(obj))


def error_msg(status: int, message: str) -> Reply:
    """`{"error_msg": message}`: the router's and limit-count's error shape."""
    return json_reply(status, {"error_msg": message})


def message(status: int, text: str, extra: list[Header] | None = None) -> Reply:
    """`{"message": text}`: the auth plugins' error shape."""
    return json_reply(status, {"message": text}, extra)


ROUTE_NOT_FOUND: Final = error_msg(404, "404 Route Not Found")

_STATUS_TEXT: Final = {
    400: "400 Bad Request",
    408: "408 Request Time-out",
    413: "413 Request Entity Too Large",
    405: "405 Not Allowed",
    414: "414 Request-URI Too Large",
    431: "431 Request Header Fields Too Large",
    500: "500 Internal Server Error",
    501: "501 Not Implemented",
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


@functools.cache
def status_reply(status: int) -> Reply:
    """The gateway's plain error for `status`, in the router's JSON shape (built once per
    status; callers never change a Reply)."""
    text = _STATUS_TEXT.get(status) or f"{status} {reason(status).decode()}".rstrip()
    return error_msg(status, text)
