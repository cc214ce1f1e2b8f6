"""One JSON line per request: who, what, which route, how it ended, how long it took.

Never logs a query string, header value or body: those may carry keys, passwords, tokens
or signatures. The path is logged without its query.
"""

from __future__ import annotations

import sys
import time
from typing import IO

import msgspec

from gateway.context import RequestContext


class Entry(msgspec.Struct, kw_only=True):
    time: float
    remote_addr: str
    method: str | None  # None (and path None) for a head refused before it was parsed
    path: str | None
    status: int
    route_id: str | None
    consumer: str | None
    upstream: str | None
    upstream_time: float | None
    request_time: float | None


class AccessLog:
    """Writes entries to a file (appending) or standard output; `None` target disables it."""

    def __init__(self, target: bool | str) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._file: IO[bytes] | None
        if target is True:
            self._file = sys.stdout.buffer
        elif target is False:
            self._file = None
        else:
            self._file = open(target, "ab", buffering=0)  # noqa: SIM115 (lives with the log)
        self._path = target if isinstance(target, str) else None  # None: not a file we own

    @property
    def enabled(self) -> bool:
        return self._file is not None

    def write(self, ctx: RequestContext, now: float) -> None:
        if self._file is None:
            return
        route = ctx.route
        entry = Entry(
            time=round(time.time(), 3),
            remote_addr=ctx.remote_addr,
            method=ctx.method.decode("latin-1"),
            path=ctx.path.decode("latin-1"),
            status=ctx.status,
            route_id=route.id if route is not None else None,
            consumer=getattr(ctx.consumer, "username", None),
            upstream=ctx.upstream_addr or None,
            upstream_time=round(ctx.upstream_time, 6) if ctx.upstream_time >= 0 else None,
            request_time=round(now - ctx.start, 6),
        )
        self._write(entry)

    def _write(self, entry: Entry) -> None:
        assert self._file is not None
        try:
            self._file.write(self._encode(entry) + b"\n")
            if self._path is None:
                self._file.flush()
        except OSError:
            pass  # a full disk or closed pipe must not take requests down

    def write_refused(
        self, remote_addr: str, status: int, method: bytes | None, path: bytes | None
    ) -> None:
        """The line for a request refused before routing (400, 408, 414, 431)."""
        if self._file is None:
            return
        entry = Entry(
            time=round(time.time(), 3),
            remote_addr=remote_addr,
            method=method.decode("latin-1") if method is not None else None,
            path=path.decode("latin-1") if path is not None else None,
            status=status,
            route_id=None,
            consumer=None,
            upstream=None,
            upstream_time=None,
            request_time=None,
        )
        self._write(entry)

    def reopen(self) -> bool:
        """Open the file again by its path (nginx's USR1, after a rotation renamed it);
        False when there is no file or it cannot be opened (the old one is kept). Raises
        nothing."""
        if self._path is None:
            return False
        try:
            new = open(self._path, "ab", buffering=0)  # noqa: SIM115 (lives with the log)
        except OSError:
            return False
        old, self._file = self._file, new
        if old is not None:
            old.close()
        return True

    def close(self) -> None:
        if self._path is not None and self._file is not None:
            self._file.close()
