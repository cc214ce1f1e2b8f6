"""The floors of a trio design, for `make bench` to set the gateway against.

Each client connection gets its own upstream connection; bytes move with `gateway.fastio`
(the gateway's own socket layer: a read or write enters trio's scheduler only when the
kernel would block).

- default: a layer-4 byte pipe, two tasks copying bytes both ways, no HTTP at all;
- `--h11`: the least a trio + h11 HTTP proxy does per request: h11 parses the request
  head (a fresh parser per request, as the gateway), the head and a Content-Length body
  are forwarded as they came, the response head is found and its Content-Length read, and
  the response relayed as it came (no chunked bodies either way). One task per connection
  that waits as the gateway does (yield once, then register a wait). No routing, plugins,
  header rules or pooling.

Whatever these reach on a machine bounds what a trio (+ h11) proxy can reach there; the
gateway's gap to them is what its own work costs.

    python bench/trio_pipe.py --port 9090 --upstream 127.0.0.1:9081 [--h11]
"""

from __future__ import annotations

import argparse
import socket

import h11
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


async def receive(sock: FastSocket) -> bytes:
    """As the gateway waits: try, yield once, try, then register a wait."""
    data = sock.try_receive(CHUNK)
    if data is None:
        await trio.lowlevel.checkpoint()
        data = sock.try_receive(CHUNK)
        if data is None:
            data = await sock.wait_receive(CHUNK)
    return data


async def relay(source: FastSocket, sink: FastSocket, remaining: int) -> bool:
    """Pass `remaining` more bytes on as they come; False when `source` closed first."""
    while remaining > 0:
        data = await receive(source)
        if not data:
            return False
        remaining -= len(data)
        await sink.send_all(data)
    return True


async def relay_http(client: FastSocket, up: FastSocket) -> None:
    """One request at a time (a client that pipelines is not served right: this is a
    floor, not a proxy); h11 parses each head, bytes pass unchanged."""
    early = b""
    while True:
        parser = h11.Connection(h11.SERVER)
        if early:
            parser.receive_data(early)  # (b"" would tell h11 the client closed)
        head = early
        while (event := parser.next_event()) is h11.NEED_DATA:
            data = await receive(client)
            if not data:
                return
            parser.receive_data(data)
            head += data
        if type(event) is not h11.Request:
            return
        early = bytes(parser.trailing_data[0])
        length = 0
        for name, value in event.headers:
            if name == b"content-length":
                length = int(value)
        body, early = early[:length], early[length:]
        await up.send_all(head[: len(head) - len(early)])
        if not await relay(client, up, length - len(body)):
            return
        response = b""
        while (end := response.find(b"\r\n\r\n")) < 0:
            data = await receive(up)
            if not data:
                return
            response += data
        at = response[:end].lower().find(b"\ncontent-length:")
        length = int(response[at + 16 : response.find(b"\r", at + 16)]) if at >= 0 else 0
        await client.send_all(response)
        if not await relay(up, client, end + 4 + length - len(response)):
            return


async def serve_one(client: socket.socket, upstream: tuple[str, int], http: bool) -> None:
    up = socket.socket()
    try:
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await trio.socket.from_stdlib_socket(up).connect(upstream)
        a, b = FastSocket(client), FastSocket(up)
        if http:
            await relay_http(a, b)
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy, a, b, nursery.cancel_scope)
            nursery.start_soon(copy, b, a, nursery.cancel_scope)
    except (OSError, h11.ProtocolError):
        pass
    finally:
        for sock in (client, up):
            trio.lowlevel.notify_closing(sock)
            sock.close()


async def main(port: int, upstream: tuple[str, int], http: bool) -> None:
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
            nursery.start_soon(serve_one, client, upstream, http)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--h11", action="store_true", help="the trio + h11 HTTP floor")
    args = parser.parse_args()
    host, _, up_port = args.upstream.rpartition(":")
    trio.run(main, args.port, (host, int(up_port)), args.h11)
