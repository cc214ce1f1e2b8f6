"""Request path normalisation before routing (RFC 3986 sections 6.2.2 and 5.2.4).

Percent-encoded unreserved characters are decoded, `//` collapses to `/`, and `.` and `..`
segments are resolved, so `/public/..%2Fadmin` cannot reach around a route that protects
`/admin`. `%2F` stays encoded: it is data, not a separator. A path that climbs above the
root is refused. The upstream receives the normalised path, as APISIX sends it by default.

Pure: no IO.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
# RFC 3986 authority without userinfo: an IP literal or a non-empty reg-name (group 1, a
# trailing dot left out as nginx's `$host` does), then an optional port.
_REG_NAME_CHAR: Final = rb"A-Za-z0-9_~%!$&'()*+,;=-"
_AUTHORITY: Final = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|[.%s]*[%s])\.?(?::[0-9]*)?" % (_REG_NAME_CHAR, _REG_NAME_CHAR)
)


class PathError(Exception):
    """The path cannot be normalised (it climbs above the root or is malformed)."""


_SLASHES: Final = re.compile(rb"/|%2F")


def _decode_unreserved(path: bytes) -> bytes:
    out = bytearray()
    i = 0
    n = len(path)
    while i < n:
        c = path[i]
        if c == 0x25:  # "%"
            if i + 2 >= n:
                raise PathError("truncated percent-encoding")
            h1, h2 = path[i + 1], path[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise PathError("invalid percent-encoding")
            value = int(path[i + 1 : i + 3], 16)
            if value == 0:
                # nginx refuses it too: an upstream in C would end the path there.
                raise PathError("a NUL (%00) in the path")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + path[i + 1 : i + 3].upper()
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out)


def normalize(path: bytes) -> bytes:
    """The normalised form of an origin-form path (no query); raises PathError."""
    if not path.startswith(b"/"):
        raise PathError("path must start with /")
    if b"%" not in path and b"/." not in path and b"//" not in path:
        return path  # the common case: nothing to do
    if b"%" in path:
        path = _decode_unreserved(path)
        # `%2F` stays data here, but an upstream that decodes it would read `..%2F` as a
        # step up (nginx decodes it and climbs): refused rather than routed one way and
        # served another.
        if b"%2F" in path and b".." in _SLASHES.split(path):
            raise PathError("a `..` segment beside an encoded slash")
    segments: list[bytes] = []
    parts = path.split(b"/")[1:]
    for i, segment in enumerate(parts):
        last = i == len(parts) - 1
        if segment == b"..":
            if not segments:
                raise PathError("path climbs above the root")
            segments.pop()
            if last:
                segments.append(b"")
        elif segment == b".":
            if last:
                segments.append(b"")
        elif segment.startswith(b"..;"):
            # Servlet containers read `..;x` as `..` (a path parameter): /a/..;/admin is
            # /admin to them, routed here as /a/*.
            raise PathError("a `..;` segment")
        elif segment == b"" and not last:
            continue  # "//" collapses
        else:
            segments.append(segment)
    return b"/" + b"/".join(segments)


# What a request path carries as it is (RFC 3986: unreserved, sub-delims, ":", "@", "/",
# and "%" for escapes already there); anything else is percent-encoded.
PATH_SAFE: Final = "-._~!$&'()*+,;=:@/%"


def route_path(uri: str) -> str:
    """A route's path from the config in the form `normalize` gives requests: what a request
    line cannot carry (a space, text outside ASCII) as its UTF-8 escapes, then normalised.
    Raises PathError."""
    if "?" in uri or "#" in uri:
        raise PathError("a route's uri is a path: no query or fragment")
    return normalize(quote(uri, safe=PATH_SAFE).encode("ascii")).decode("ascii")


def absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    """(authority, origin-form target) of an absolute-form target such as
    `http://example.com:8080/a?b`, or None for a target of another form. Raises PathError
    for an authority with userinfo (RFC 9110 section 4.2.4: a recipient treats it as an
    error) or without a host."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        at = rest.find(delimiter)
        if 0 <= at < end:
            end = at
    authority = rest[:end]
    if _AUTHORITY.fullmatch(authority) is None:
        raise PathError("bad authority in an absolute-form target")
    origin = rest[end:]
    return authority, origin if origin.startswith(b"/") else b"/" + origin


def normalized_target(target: bytes) -> bytes:
    """The origin-form or asterisk-form request target with its path normalised and without
    a fragment; raises PathError.

    A fragment is the client's own (RFC 9110 section 4.2.5) and no request should carry
    one; one that does is dropped (as nginx drops it from `$uri`): an upstream would drop
    it too, so `/admin#x` must be routed, and sent on, as `/admin`."""
    if b"#" in target:
        target = target.partition(b"#")[0]
    path, sep, query = target.partition(b"?")
    if path == b"*":
        return target
    normal = normalize(path)
    if normal is path:
        return target
    return normal + sep + query


def host_without_port(value: bytes) -> bytes:
    """The Host header's host for routing: lower-cased, without its port or a trailing dot
    (as nginx's `$host`; IPv6 literals keep their brackets). Raises PathError for a value
    that is not `host[:port]` (RFC 9112 section 3.2: a 400)."""
    authority = _AUTHORITY.fullmatch(value)
    if authority is None:
        raise PathError("not host[:port]")
    if b".." in value:  # an empty label: nginx refuses it too
        raise PathError("an empty label in the host")
    return authority.group(1).lower()
