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

from gateway.config.upstream import split_host_port
from gateway.http.replies import ROUTE_NOT_FOUND, status_reply
from gateway.metrics import CONTENT_TYPE

log = logging.getLogger("gateway")

READ_TIMEOUT_S = 10.0
MAX_HEAD = 8 * 1024


class ExportServer:
    """The export listener of the current config, which a reload may move: `bind` the new
    address first (a reload that cannot is refused), then `move` to it; `serve` answers on
    whichever is current until `stop`."""

    def __init__(self) -> None:
        self.address: str | None = None
        self._listener: socket.socket | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = False

    def bind(self, wanted: str | None) -> socket.socket | None:
        """A listener for `wanted` when it is not the current address; raises OSError."""
        if wanted is None or wanted == self.address:
            return None
        host, port = split_host_port(wanted)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=128)

    @staticmethod
    def say_refused(wanted: str | None, exc: OSError) -> None:
        """The error line of a reload refused because `bind` failed."""
        log.error(
            "reload refused, the previous config keeps serving: "
            "plugin_attr.prometheus.export_addr %s: %s",
            wanted,
            exc.strerror,
        )

    def move(self, wanted: str | None, listener: socket.socket | None) -> None:
        """Serve on `wanted` (with the listener `bind` gave), or nowhere (None)."""
        if wanted == self.address:
            return
        self.address = wanted
        self._listener = listener
        if self._scope is not None:
            self._scope.cancel()  # `serve` closes the old listener

    async def serve(self, path: Callable[[], bytes], render: Callable[[], bytes]) -> None:
        while not self._stopped:
            listener = self._listener
            with trio.CancelScope() as scope:
                self._scope = scope
                if listener is None:
                    await trio.sleep_forever()
                else:
                    await serve_exporter(listener, path, render)
            if listener is not None and listener is not self._listener:
                listener.close()

    def stop(self) -> None:
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()


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
