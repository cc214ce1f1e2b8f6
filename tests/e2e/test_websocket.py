"""WebSocket through the gateway: trio-websocket as both the client and the upstream."""

from __future__ import annotations

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url, serve_websocket

from tests.helpers import Upstream, config_for, request, start_gateway


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
