"""WebSocket through the gateway: trio-websocket as both the client and the upstream."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url, serve_websocket

from tests.helpers import (
    Upstream,
    config_for,
    connect,
    exchange_raw,
    request,
    start_gateway,
)
from tests.tls_certs import write_certificate


async def echo_server(req: WebSocketRequest) -> None:
    ws = await req.accept()
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(f"echo:{message}")
    except ConnectionClosed:
        pass


async def test_websocket_echo_through_gateway(nursery: trio.Nursery, upstream: Upstream) -> None:
    server = await nursery.start(serve_websocket, echo_server, "127.0.0.1", 0, None)
    port = server.port
    cfg = config_for(
        [
            {
                "id": "ws",
                "uri": "/ws",
                "enable_websocket": True,
                "upstream": {"nodes": {f"127.0.0.1:{port}": 1}},
            },
            {"id": "plain", "uri": "/plain", "upstream": {"nodes": {f"127.0.0.1:{port}": 1}}},
        ]
    )
    _, gw = await start_gateway(nursery, cfg)
    async with open_websocket_url(f"ws://{gw}/ws") as ws:
        for text in ("hello", "x" * 70_000, "bye"):
            await ws.send_message(text)
            assert await ws.get_message() == f"echo:{text}"


async def test_websocket_to_an_https_upstream(nursery: trio.Nursery, tmp_path: Path) -> None:
    cert, key = write_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await nursery.start(serve_websocket, echo_server, "127.0.0.1", 0, context)
    upstream = {"nodes": {f"127.0.0.1:{server.port}": 1}, "scheme": "https"}
    cfg = config_for([{"id": "ws", "uri": "/ws", "enable_websocket": True, "upstream": upstream}])
    _, gw = await start_gateway(nursery, cfg)
    async with open_websocket_url(f"ws://{gw}/ws") as ws:
        for text in ("hello", "x" * 70_000, "bye"):
            await ws.send_message(text)
            assert await ws.get_message() == f"echo:{text}"


async def test_upgrade_not_forwarded_without_enable_websocket(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    cfg = config_for([{"id": "plain", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}}}])
    _, gw = await start_gateway(nursery, cfg)
    resp = await request(
        gw,
        target="/ws",
        headers=[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert resp.status == 200
    got = upstream.received[0]
    assert got.header(b"upgrade") is None
    assert got.header(b"connection") is None


HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _ws_route(port: int, read_timeout: float) -> dict[str, object]:
    return {
        "id": "ws",
        "uri": "/ws",
        "enable_websocket": True,
        "upstream": {"nodes": {f"127.0.0.1:{port}": 1}, "timeout": {"read": read_timeout}},
    }


async def test_a_pushing_upstream_keeps_the_tunnel_while_the_client_is_silent(
    nursery: trio.Nursery,
) -> None:
    """The read timeout is the upstream's silence, as nginx's proxy_read_timeout: a feed the
    client only listens to lives on past it."""

    async def ticker(req: WebSocketRequest) -> None:
        ws = await req.accept()
        with contextlib.suppress(ConnectionClosed):
            for n in range(40):
                await ws.send_message(f"tick {n}")
                await trio.sleep(0.1)  # 4 s in all, the read timeout is 2 s

    server = await nursery.start(serve_websocket, ticker, "127.0.0.1", 0, None)
    _, gw = await start_gateway(nursery, config_for([_ws_route(server.port, 2)]))
    async with open_websocket_url(f"ws://{gw}/ws") as ws:
        with trio.fail_after(20):
            got = [await ws.get_message() for _ in range(40)]
    assert got == [f"tick {n}" for n in range(40)]


async def test_a_silent_upstream_ends_the_tunnel_after_the_read_timeout(
    nursery: trio.Nursery,
) -> None:
    async def silent(req: WebSocketRequest) -> None:
        ws = await req.accept()
        with contextlib.suppress(ConnectionClosed):
            await ws.get_message()  # waits; the client sends nothing

    server = await nursery.start(serve_websocket, silent, "127.0.0.1", 0, None)
    _, gw = await start_gateway(nursery, config_for([_ws_route(server.port, 0.5)]))
    raw = await exchange_raw(gw, HANDSHAKE)  # the gateway closes the tunnel (10 s at most)
    assert raw.startswith(b"HTTP/1.1 101 ")


async def test_a_client_that_stops_reading_is_cut_after_the_send_timeout(
    nursery: trio.Nursery,
) -> None:
    """server.limits.send_timeout holds in the tunnel too: a client that never reads cannot
    keep the upstream's connection."""
    upstream_closed = trio.Event()

    async def flood(req: WebSocketRequest) -> None:
        ws = await req.accept()
        try:
            while True:
                await ws.send_message(b"x" * 65536)
        except ConnectionClosed:
            upstream_closed.set()

    server = await nursery.start(serve_websocket, flood, "127.0.0.1", 0, None)
    cfg = config_for([_ws_route(server.port, 60)], server={"limits": {"send_timeout": 1}})
    _, gw = await start_gateway(nursery, cfg)
    stream = await connect(gw)
    async with stream:
        await stream.send_all(HANDSHAKE)
        with trio.fail_after(20):  # send timeout 1 s, plus the buffers filling
            await upstream_closed.wait()
