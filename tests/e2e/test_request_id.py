"""request-id: an id for every request, sent upstream and back to the client, as APISIX's
plugin does; a client's own id is kept."""

from __future__ import annotations

import re

import trio

from tests.helpers import Received, Upstream, config_for, request, start_gateway


async def echo_own_id(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An upstream that answers with an id of its own when asked to."""
    if req.header(b"x-upstream-sets") is not None:
        return 200, [(b"X-Request-Id", b"from-upstream")], b""
    return 200, [], b""


async def test_request_ids(nursery: trio.Nursery) -> None:
    upstream = Upstream(responder=echo_own_id)
    await nursery.start(upstream.serve)
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "uuid", "uri": "/uuid", "upstream": node, "plugins": {"request-id": {}}},
        {
            "id": "nano",
            "uri": "/nano",
            "upstream": node,
            "plugins": {
                "request-id": {
                    "algorithm": "nanoid",
                    "header_name": "X-Trace",
                    "include_in_response": False,
                }
            },
        },
        {
            "id": "range",
            "uri": "/range",
            "upstream": node,
            "plugins": {
                "key-auth": {},
                "request-id": {
                    "algorithm": "range_id",
                    "range_id": {"char_set": "abcdef", "length": 12},
                },
            },
        },
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    seen = set()
    for _ in range(3):
        resp = await request(gw, target="/uuid")
        sent = upstream.received[-1].header(b"x-request-id")
        assert sent is not None
        assert re.fullmatch(
            rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", sent
        )
        assert resp.header(b"x-request-id") == sent
        seen.add(sent)
    assert len(seen) == 3
    # The client's own id is kept, and the upstream's answer keeps its own.
    resp = await request(gw, target="/uuid", headers=[("X-Request-Id", "client-id-1")])
    assert upstream.received[-1].header(b"x-request-id") == b"client-id-1"
    assert resp.header(b"x-request-id") == b"client-id-1"
    resp = await request(gw, target="/uuid", headers=[("X-Upstream-Sets", "1")])
    assert [v for n, v in resp.headers if n == b"x-request-id"] == [b"from-upstream"]

    resp = await request(gw, target="/nano")
    sent = upstream.received[-1].header(b"x-trace")
    assert sent is not None
    assert re.fullmatch(rb"[A-Za-z0-9_-]{21}", sent)
    assert resp.header(b"x-trace") is None

    # The gateway's own answers carry the id too.
    resp = await request(gw, target="/range")
    assert resp.status == 401
    rid = resp.header(b"x-request-id")
    assert rid is not None
    assert re.fullmatch(rb"[a-f]{12}", rid)
