"""nginx's gzip filter: whether an answer a route wants compressed (the gzip plugin's
`ctx.gzip`) is compressed for this client, the head edits that go with it, and the
compressor.

nginx compresses only 200, 403 and 404 answers that have a body, are not encoded already,
and go to a client whose `Accept-Encoding` takes gzip (not `gzip;q=0`); with its default
`gzip_proxied off` a request that came through a proxy (`Via`) is not compressed. A
compressed answer loses Content-Length (it goes chunked) and Accept-Ranges, and a strong
ETag becomes weak (`W/`): the bytes are no longer the entity's own.

Pure: no IO.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final

Header = tuple[bytes, bytes]

GZIP_STATUSES: Final = frozenset({200, 403, 404})
_GZIP_WINDOW: Final = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate data
_DROPPED: Final = frozenset({b"content-length", b"accept-ranges"})


def accepts_gzip(accept_encoding: bytes) -> bool:
    """True when an Accept-Encoding value takes gzip with a quality above zero."""
    for item in accept_encoding.split(b","):
        coding, _, params = item.partition(b";")
        if coding.strip().lower() != b"gzip":
            continue
        for param in params.split(b";"):
            name, _, value = param.partition(b"=")
            if name.strip().lower() == b"q":
                try:
                    return float(value.strip()) > 0
                except ValueError:
                    return False
        return True
    return False


class GzipStream:
    """Compresses a body piece by piece into one gzip member."""

    __slots__ = ("_deflate",)

    def __init__(self, level: int) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WINDOW)

    def feed(self, data: bytes) -> bytes:
        """Compressed bytes for `data` (often none yet: zlib keeps a window)."""
        return self._deflate.compress(data)

    def end(self) -> bytes:
        """The rest of the compressed body and the gzip trailer."""
        return self._deflate.flush()

    def whole(self, data: bytes) -> bytes:
        return self._deflate.compress(data) + self._deflate.flush()


def start_gzip(
    level: int,
    method: bytes,
    status: int,
    request_headers: Sequence[Header],
    headers: list[Header],
) -> GzipStream | None:
    """The compressor for this answer, with `headers` edited for it; None (and `headers`
    untouched) when nginx would send it as it is."""
    if status not in GZIP_STATUSES or method == b"HEAD":
        return None
    accepted = False
    for name, value in request_headers:
        if name == b"via":
            return None
        if name == b"accept-encoding" and accepts_gzip(value):
            accepted = True
    if not accepted:
        return None
    edited: list[Header] = []
    for name, value in headers:
        if name in _DROPPED:
            continue
        if name == b"content-encoding":
            if value:
                return None
            continue
        if name == b"etag" and not value.startswith(b"W/"):
            if not value.startswith(b'"'):
                continue  # not an entity tag nginx can weaken: dropped
            value = b"W/" + value
        edited.append((name, value))
    edited.append((b"content-encoding", b"gzip"))
    headers[:] = edited
    return GzipStream(level)
