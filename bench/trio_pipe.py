"""The floor of a trio design: a layer-4 byte pipe with no HTTP at all.

Each client connection gets its own upstream connection, and two tasks copy bytes both
ways with `gateway.fastio` (the gateway's own socket layer: a read or write enters trio's
scheduler only when the kernel would block). No parsing, routing, plugins or pooling:
whatever this reaches on a machine bounds what any trio proxy can reach there, and the
gateway's gap to it is what the HTTP work costs.

    python bench/trio_pipe.py --port 9090 --upstream 127.0.0.1:9081
"""

from __future__ import annotations

import argparse
import socket

import trio

from gateway.fastio import FastSocket

CHUNK = 64 * 1024


async def copy(source: FastSocket, sink: FastSocket, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive(CHUNK):
            await sink.send_all(data)
    except OSError:
        pass
    done.cancel()


async def serve_one(client: socket.socket, upstream: tuple[str, int]) -> None:
    up = socket.socket()
    try:
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await trio.socket.from_stdlib_socket(up).connect(upstream)
        async with trio.open_nursery() as nursery:
            a, b = FastSocket(client), FastSocket(up)
            nursery.start_soon(copy, a, b, nursery.cancel_scope)
            nursery.start_soon(copy, b, a, nursery.cancel_scope)
    except OSError:
        pass
    finally:
        for sock in (client, up):
            trio.lowlevel.notify_closing(sock)
            sock.close()


async def main(port: int, upstream: tuple[str, int]) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setblocking(False)
    listener.bind(("127.0.0.1", port))
    listener.listen(4096)
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(serve_one, client, upstream)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    args = parser.parse_args()
    host, _, up_port = args.upstream.rpartition(":")
    trio.run(main, args.port, (host, int(up_port)))
