"""The WebSocket tunnel: after the upstream's 101, bytes both ways until either side ends.

The handshake answer is relayed through h11 (which then hands the client connection over);
what either side sent beyond the handshake goes first. The upstream's silence ends the
tunnel after its read timeout (nginx's proxy_read_timeout); the client's does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from gateway.context import RequestContext
from gateway.errors import DownstreamError
from gateway.http.headers import client_response_headers
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.framing import ResponseHead

if TYPE_CHECKING:
    from gateway.proxy import Client
    from gateway.runtime import CompiledUpstream

TUNNEL_CHUNK = 64 * 1024


async def tunnel(
    client: Client,
    ctx: RequestContext,
    conn: UpstreamConnection,
    response: ResponseHead,
    upstream_early: bytes,
    upstream: CompiledUpstream,
) -> None:
    """After a 101: relay the handshake answer, then bytes both ways until either side ends."""
    ctx.status = 101
    headers = client_response_headers(
        response.headers, status=response.status, no_body=True, websocket=True
    )
    await client.send(client.start_switching(headers, response.reason))
    client_early, _ = client.h11.trailing_data
    if upstream_early:
        await client.send(upstream_early)
    if client_early:
        await conn.send(bytes(client_early))

    async def upstream_to_client() -> None:
        # The upstream's silence ends the tunnel (nginx's proxy_read_timeout); a client
        # that stops reading is cut by its send timeout (DownstreamError).
        while True:
            with trio.move_on_after(upstream.read_timeout) as idle:
                data = await conn.stream.receive_some(TUNNEL_CHUNK)
            if idle.cancelled_caught or not data:
                return
            await client.send(data)

    async def client_to_upstream() -> None:
        # No read timeout here: a feed the client only listens to lives as long as the
        # upstream speaks.
        while True:
            data = await client.stream.receive_some(TUNNEL_CHUNK)
            if not data:
                return
            with trio.move_on_after(upstream.send_timeout) as stuck:
                await conn.stream.send_all(data)
            if stuck.cancelled_caught:
                return

    async def until_either_ends(direction: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(
            OSError, trio.BrokenResourceError, trio.ClosedResourceError, DownstreamError
        ):
            await direction()
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_either_ends, client_to_upstream)
        nursery.start_soon(until_either_ends, upstream_to_client)
    conn.close()
