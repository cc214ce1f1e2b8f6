"""A small echo upstream for `make run`, the tests and the benchmarks (trio + h11).

    python bench/echo_upstream.py --port 9081

Any request is answered with JSON describing what arrived: method, path, query, headers
and the body's length and SHA-256. `GET /bytes/N` answers N bytes instead (a fast path for
the load benchmark); `?delay=S` waits S seconds before answering.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import socket
from urllib.parse import parse_qs, urlsplit

import h11
import trio


def _response(status: int, body: bytes, content_type: bytes) -> list[h11.Event]:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    return [
        h11.Response(status_code=status, headers=headers),
        h11.Data(data=body),
        h11.EndOfMessage(),
    ]


_BYTES_CACHE: dict[int, bytes] = {}


async def handle(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.IDLE:
                    return
                if not data:
                    return
                continue
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                return
            request = event
            digest = hashlib.sha256()
            length = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Data):
                    digest.update(event.data)
                    length += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            target = request.target.decode("latin-1")
            parts = urlsplit(target)
            query = parse_qs(parts.query)
            if "delay" in query:
                await trio.sleep(float(query["delay"][0]))
            if parts.path.startswith("/bytes/"):
                n = int(parts.path.rsplit("/", 1)[1])
                body = _BYTES_CACHE.get(n) or _BYTES_CACHE.setdefault(n, b"x" * n)
                events = _response(200, body, b"application/octet-stream")
            else:
                doc = {
                    "method": request.method.decode(),
                    "path": parts.path,
                    "query": parts.query,
                    "headers": [
                        [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers
                    ],
                    "body_length": length,
                    "body_sha256": digest.hexdigest(),
                }
                events = _response(200, json.dumps(doc).encode() + b"\n", b"application/json")
            if request.method == b"HEAD":  # the GET's head, without its body
                events = [events[0], events[2]]
            out = b"".join(conn.send(e) or b"" for e in events)
            await stream.send_all(out)
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (h11.ProtocolError, trio.BrokenResourceError, OSError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve(
    host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    for listener in listeners:
        listener.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9081)
    args = parser.parse_args()
    print(f"echo upstream on {args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.host, args.port)


if __name__ == "__main__":
    main()
