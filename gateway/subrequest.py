"""Requests the gateway serves to itself (batch-requests' sub-requests): each written to
one end of a socket pair whose other end a client connection serves, its answer read back
with h11."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import h11
import trio

_NO_BODY = frozenset({204, 304})


async def exchange(
    connection: Any, conn: h11.Connection, method: str, data: bytes, timeout_ms: int, room: int
) -> tuple[dict[str, Any], int]:
    """The request `data` (written by the h11 client `conn`) served by the gateway of
    `connection` (a `downstream.ClientConnection`, whose client it seems to come from):
    `({"status", "reason", "headers", "body"}, body size)`, `{"status": 504, ...}` after
    `timeout_ms`, or `{"status": 502, ...}` past `room` body bytes or for a broken
    answer."""
    here, there = socket.socketpair()
    here.setblocking(False)
    there.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(here))
    answer = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.serve_internal, there)
        try:
            with trio.move_on_after(timeout_ms / 1000):
                answer = await _answer(stream, conn, method, data, room)
            if answer is None:
                nursery.cancel_scope.cancel()  # the sub-request is given up
        finally:
            await trio.aclose_forcefully(stream)
    return answer or ({"status": 504, "reason": "upstream timeout"}, 0)


async def _answer(
    stream: trio.SocketStream, conn: h11.Connection, method: str, data: bytes, room: int
) -> tuple[dict[str, Any], int]:
    # Refused before it was all read (a head too large), the answer is there all the same.
    with contextlib.suppress(trio.BrokenResourceError, OSError):
        await stream.send_all(data)
    record: dict[str, Any] = {}
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return {"status": 502, "reason": f"bad response: {exc}"}, 0
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive_some(65536))
            except (trio.BrokenResourceError, OSError):
                conn.receive_data(b"")  # reset: what came so far is all there is
        elif isinstance(event, h11.Response):
            headers: dict[str, Any] = {}
            for name, value in event.headers.raw_items():
                key, text = name.decode("latin-1"), value.decode("latin-1")
                known = headers.get(key)
                if known is None:
                    headers[key] = text
                elif isinstance(known, list):
                    known.append(text)
                else:
                    headers[key] = [known, text]
            record = {
                "status": event.status_code,
                "reason": event.reason.decode("latin-1"),
                "headers": headers,
            }
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > room:
                return {"status": 502, "reason": "response too large"}, 0
        elif isinstance(event, h11.EndOfMessage):
            if method != "HEAD" and record["status"] not in _NO_BODY:
                record["body"] = body.decode("utf-8", "replace")
            return record, len(body)
        elif isinstance(event, h11.ConnectionClosed):
            return {"status": 502, "reason": "connection closed before the response ended"}, 0
