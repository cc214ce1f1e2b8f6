"""The metrics export server: `GET <export_uri>` on `plugin_attr.prometheus.export_addr`
answers the prometheus plugin's counts (APISIX serves them on 127.0.0.1:9091 by default).

A separate listener, so that metrics are never exposed on the proxy's own addresses. Each
connection gets one answer and is closed; a scraper's request is small and rare.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import h11
import trio

from gateway.http.replies import ROUTE_NOT_FOUND, status_reply

log = logging.getLogger("gateway")

READ_TIMEOUT_S = 10.0
MAX_HEAD = 8 * 1024
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


async def serve_exporter(
    listener: socket.socket, path: Callable[[], bytes], render: Callable[[], bytes]
) -> None:
    """Answer scrapes on `listener` until cancelled; `path()` is the current export URI and
    `render()` the metrics text (both read per request: a reload may change them)."""
    trio_listener = trio.SocketListener(trio.socket.from_stdlib_socket(listener))
    async with trio.open_nursery() as nursery:
        while True:
            stream = await trio_listener.accept()
            nursery.start_soon(_answer, stream, path, render)


async def _answer(
    stream: trio.SocketStream, path: Callable[[], bytes], render: Callable[[], bytes]
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        with trio.move_on_after(READ_TIMEOUT_S):
            event: object = h11.NEED_DATA
            while event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(MAX_HEAD))
                event = conn.next_event()
            if not isinstance(event, h11.Request):
                return
            target = event.target.partition(b"?")[0]
            if event.method not in (b"GET", b"HEAD"):
                reply = status_reply(405)
                status, headers, body = 405, [*reply.headers, (b"allow", b"GET, HEAD")], reply.body
            elif target != path():
                status, headers, body = 404, list(ROUTE_NOT_FOUND.headers), ROUTE_NOT_FOUND.body
            else:
                status, headers, body = 200, [(b"content-type", CONTENT_TYPE)], render()
            headers += [(b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            if event.method != b"HEAD":
                data += conn.send(h11.Data(data=body)) or b""
            await stream.send_all(data)
    except (h11.RemoteProtocolError, OSError, trio.BrokenResourceError):
        pass
    except Exception:
        log.exception("metrics export failed")
    finally:
        await trio.aclose_forcefully(stream)
