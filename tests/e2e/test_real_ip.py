"""real-ip: the client's address from a trusted proxy's header, as APISIX's plugin takes
it, so that limits, restrictions and the upstream see the client rather than the proxy."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import Upstream, config_for, request, start_gateway

LOOPBACK = ["127.0.0.0/8", "::1"]


async def test_real_ip_from_trusted_proxies(nursery: trio.Nursery, upstream: Upstream) -> None:
    node = {"nodes": {upstream.address: 1}}

    def route(rid: str, real_ip: dict[str, Any], **plugins: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "uri": f"/{rid}",
            "upstream": node,
            "plugins": {"real-ip": real_ip, **plugins},
        }

    xff = {"source": "http_x_forwarded_for", "trusted_addresses": LOOPBACK}
    routes = [
        route("last", xff, **{"ip-restriction": {"blacklist": ["203.0.113.7"]}}),
        route("untrusted", {**xff, "trusted_addresses": ["10.0.0.0/8"]}),
        route(
            "recursive",
            {**xff, "trusted_addresses": [*LOOPBACK, "10.0.0.0/8"], "recursive": True},
        ),
        route("header", {"source": "http_x_real_ip", "trusted_addresses": LOOPBACK}),
        route(
            "limited",
            xff,
            **{"limit-count": {"count": 1, "time_window": 60, "rejected_code": 429}},
        ),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))

    async def seen(target: str, *headers: tuple[str, str]) -> tuple[int, bytes | None]:
        before = len(upstream.received)
        resp = await request(gw, target=target, headers=list(headers))
        if len(upstream.received) == before:
            return resp.status, None
        return resp.status, upstream.received[-1].header(b"x-real-ip")

    # The last address of the last X-Forwarded-For line is the client.
    assert await seen("/last", ("X-Forwarded-For", "198.51.100.1, 203.0.113.7")) == (403, None)
    assert await seen("/last", ("X-Forwarded-For", "203.0.113.7,  198.51.100.1")) == (
        200,
        b"198.51.100.1",
    )
    assert await seen(
        "/last", ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.2")
    ) == (200, b"198.51.100.2")
    # What is not an address leaves the peer's address in place.
    for bad in ("not-an-ip", "", "198.51.100.1:99999", "1.2.3.4.5"):
        assert await seen("/last", ("X-Forwarded-For", bad)) == (200, b"127.0.0.1"), bad
    # A peer outside trusted_addresses cannot choose its address.
    assert await seen("/untrusted", ("X-Forwarded-For", "198.51.100.1")) == (200, b"127.0.0.1")
    # recursive: the last address that is not a trusted proxy.
    chain = ("X-Forwarded-For", "198.51.100.9, 10.1.1.1, 10.2.2.2")
    assert await seen("/recursive", chain) == (200, b"198.51.100.9")
    assert await seen("/last", chain) == (200, b"10.2.2.2")
    assert await seen("/recursive", ("X-Forwarded-For", "10.1.1.1, 10.2.2.2")) == (
        200,
        b"10.1.1.1",
    )
    # Another header, with a port and IPv6 brackets.
    assert await seen("/header", ("X-Real-IP", "[2001:db8::5]:4321")) == (200, b"2001:db8::5")
    assert await seen("/header", ("X-Real-IP", "198.51.100.3:80")) == (200, b"198.51.100.3")
    # Counters keyed by remote_addr count each client behind the proxy on its own.
    for client in ("198.51.100.10", "198.51.100.11"):
        assert (await seen("/limited", ("X-Forwarded-For", client)))[0] == 200
        assert (await seen("/limited", ("X-Forwarded-For", client)))[0] == 429
