"""forward-auth: an external service decides each request, as APISIX's plugin asks it: a
2xx lets the request on (with headers the service chose), anything else is the client's
answer."""

from __future__ import annotations

from typing import Any

import h11
import trio

from tests.helpers import (
    Received,
    Upstream,
    config_for,
    free_port,
    raw_serve,
    request,
    start_gateway,
)


async def auth_service(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if req.header(b"authorization") == b"Bearer good":
        return 200, [(b"x-user-id", b"42"), (b"x-other", b"no")], b""
    vouched = {b"Bearer jack": b"jack", b"Bearer ghost": b"ghost", b"Bearer anon": None}
    if req.header(b"authorization") in vouched:
        who = vouched[req.header(b"authorization")]
        return 200, [(b"x-consumer", who)] if who else [], b""
    if req.method == b"POST" and req.body == b"let me in":
        return 204, [(b"x-user-id", b"post")], b""
    return 401, [(b"www-authenticate", b'Bearer realm="shop"')], b"denied\n"


async def test_forward_auth(nursery: trio.Nursery, upstream: Upstream) -> None:
    auth = await nursery.start(Upstream(responder=auth_service, name="auth").serve)
    node = {"nodes": {upstream.address: 1}}
    asked = {
        "uri": f"http://{auth.address}/check",
        "request_headers": ["Authorization"],
        "upstream_headers": ["X-User-ID"],
        "client_headers": ["WWW-Authenticate"],
    }
    down = {"uri": f"http://127.0.0.1:{free_port()}/check", "timeout": 2000}

    def route(rid: str, conf: dict[str, Any]) -> dict[str, Any]:
        return {"id": rid, "uri": f"/{rid}", "upstream": node, "plugins": {"forward-auth": conf}}

    routes = [
        route("asked", asked),
        route("posted", {**asked, "request_method": "POST"}),
        route("down", down),
        route("degraded", {**down, "allow_degradation": True}),
        route("down503", {**down, "status_on_error": 503}),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))

    # Allowed: the upstream gets the service's X-User-ID, never the client's own.
    resp = await request(
        gw,
        target="/asked?q=1",
        headers=[("Authorization", "Bearer good"), ("X-User-ID", "admin"), ("Host", "shop.test")],
    )
    assert resp.status == 200
    seen = upstream.received[-1]
    assert [v for n, v in seen.headers if n == b"x-user-id"] == [b"42"]
    assert seen.header(b"x-other") is None
    check = auth.received[-1]
    assert (check.method, check.target) == (b"GET", b"/check")
    assert check.header(b"authorization") == b"Bearer good"
    assert check.header(b"x-forwarded-method") == b"GET"
    assert check.header(b"x-forwarded-uri") == b"/asked?q=1"
    assert check.header(b"x-forwarded-host") == b"shop.test"
    assert check.header(b"x-forwarded-for") == b"127.0.0.1"
    assert check.header(b"x-forwarded-proto") == b"http"

    # Refused: the service's answer is the client's, with the headers listed for it.
    before = len(upstream.received)
    resp = await request(gw, target="/asked", headers=[("X-User-ID", "admin")])
    assert (resp.status, resp.body) == (401, b"denied\n")
    assert resp.header(b"www-authenticate") == b'Bearer realm="shop"'
    assert len(upstream.received) == before

    # POST: the service gets the request's body too, and so does the upstream.
    resp = await request(gw, "POST", "/posted", body=b"let me in")
    assert resp.status == 200
    assert auth.received[-1].body == b"let me in"
    assert upstream.received[-1].body == b"let me in"
    assert upstream.received[-1].header(b"x-user-id") == b"post"

    # The service is down: status_on_error (403), or on with allow_degradation.
    assert (await request(gw, target="/down")).status == 403
    assert (await request(gw, target="/down503")).status == 503
    assert (await request(gw, target="/degraded")).status == 200
    assert len(upstream.received) == before + 2


async def test_the_service_names_the_consumer(nursery: trio.Nursery, upstream: Upstream) -> None:
    """consumer_header: the consumer the service vouches for, whose own plugins then apply."""
    auth = await nursery.start(Upstream(responder=auth_service, name="auth").serve)
    conf = {
        "uri": f"http://{auth.address}/check",
        "request_headers": ["Authorization"],
        "consumer_header": "X-Consumer",
    }
    routes = [
        {"id": "r", "uri": "/r", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"forward-auth": conf}},
    ]  # fmt: skip
    limit = {"count": 1, "time_window": 60, "rejected_code": 429}
    consumers = [{"username": "jack", "plugins": {"limit-count": limit}}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))

    jack = [("Authorization", "Bearer jack")]
    assert (await request(gw, target="/r", headers=jack)).status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"jack"
    assert (await request(gw, target="/r", headers=jack)).status == 429  # jack's own limit
    # A name no consumer has, or no name at all: 403.
    before = len(upstream.received)
    for token in ("Bearer ghost", "Bearer anon"):
        assert (await request(gw, target="/r", headers=[("Authorization", token)])).status == 403
    assert len(upstream.received) == before


async def test_checks_reuse_connections(nursery: trio.Nursery, upstream: Upstream) -> None:
    """`keepalive` (default on): the checks of many requests share a connection to the
    service; off, each check has its own. A connection the service closed while idle is
    not held against the next request."""
    auth = await nursery.start(Upstream(responder=auth_service, name="auth").serve)
    node = {"nodes": {upstream.address: 1}}
    conf = {"uri": f"http://{auth.address}/check", "request_headers": ["Authorization"]}
    routes = [
        {"id": "kept", "uri": "/kept", "upstream": node, "plugins": {"forward-auth": conf}},
        {"id": "fresh", "uri": "/fresh", "upstream": node,
         "plugins": {"forward-auth": {**conf, "keepalive": False}}},
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))
    good = [("Authorization", "Bearer good")]
    for _ in range(5):
        assert (await request(gw, target="/kept", headers=good)).status == 200
    assert auth.connections == 1
    assert [r.connection for r in auth.received] == [0] * 5
    assert all(r.header(b"connection") is None for r in auth.received)
    for _ in range(3):
        assert (await request(gw, target="/fresh", headers=good)).status == 200
    assert auth.connections == 4
    assert [r.header(b"connection") for r in auth.received[5:]] == [b"close"] * 3

    # A service that closes each connection when its second request comes (the race of a
    # keep-alive close): the check goes again on a fresh connection, and the client never
    # sees the difference.
    asked: list[int] = []  # the connection of each request the service read
    opened = [0]

    async def once_per_connection(stream: trio.SocketStream) -> None:
        index = opened[0]
        opened[0] += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    asked.append(index)
                    if asked.count(index) > 1:
                        return  # the second request on this connection: closed unanswered
                elif isinstance(event, h11.EndOfMessage):
                    await stream.send_all(
                        conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                        + conn.send(h11.EndOfMessage())
                    )
                    conn.start_next_cycle()
        finally:
            await trio.aclose_forcefully(stream)

    port = await nursery.start(raw_serve, once_per_connection)
    routes.append(
        {"id": "again", "uri": "/again", "upstream": node,
         "plugins": {"forward-auth": {**conf, "uri": f"http://127.0.0.1:{port}/check"}}}
    )  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))
    before = len(upstream.received)
    for _ in range(3):
        assert (await request(gw, target="/again", headers=good)).status == 200
    assert asked == [0, 0, 1, 1, 2]
    assert len(upstream.received) == before + 3
