"""client-control: a route's own bound on request bodies (APISIX's plugin, nginx's
`client_max_body_size`): 413 and nothing reaches the upstream."""

from __future__ import annotations

import trio

from tests.helpers import Upstream, config_for, exchange_raw, request, start_gateway


async def test_bodies_over_the_routes_bound_get_413(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "small", "uri": "/small", "upstream": node,
         "plugins": {"client-control": {"max_body_size": 10}}},
        {"id": "any", "uri": "/any", "upstream": node,
         "plugins": {"client-control": {"max_body_size": 0}}},
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    resp = await request(gw, "POST", "/small", body=b"0123456789")
    assert resp.status == 200
    assert upstream.received[-1].body == b"0123456789"
    seen = len(upstream.received)

    # Declared too large: answered before the body is read.
    resp = await request(gw, "POST", "/small", body=b"0123456789a")
    assert resp.status == 413
    assert resp.json() == {"error_msg": "413 Request Entity Too Large"}
    # Chunked: refused once the chunks pass the bound, the connection closed.
    chunks = b"".join(b"4\r\nabcd\r\n" for _ in range(3)) + b"0\r\n\r\n"
    raw = await exchange_raw(
        gw,
        b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
    )
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in raw.lower()
    assert len(upstream.received) == seen

    # 0: no bound, as nginx's client_max_body_size 0.
    resp = await request(gw, "POST", "/any", body=b"x" * 100_000)
    assert resp.status == 200
    assert len(upstream.received[-1].body) == 100_000
