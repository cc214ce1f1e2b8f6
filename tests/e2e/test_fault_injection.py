"""fault-injection: abort a request with a chosen answer, or delay it, for some requests
(`vars`, `percentage`), as APISIX's plugin does to test clients' resilience."""

from __future__ import annotations

import trio

from tests.helpers import Upstream, config_for, request, start_gateway


async def test_abort_and_delay(nursery: trio.Nursery, upstream: Upstream) -> None:
    node = {"nodes": {upstream.address: 1}}

    def route(rid: str, conf: dict[str, object]) -> dict[str, object]:
        return {"id": rid, "uri": f"/{rid}", "upstream": node, "plugins": {"fault-injection": conf}}

    either = [[["arg_name", "==", "jack"]], [["http_x_a", "==", "1"]]]
    routes = [
        route("abort", {"abort": {"http_status": 418, "body": "teapot for $arg_who\n",
                                  "headers": {"X-Fault": "injected $remote_addr"}}}),
        route("plain", {"abort": {"http_status": 503}}),
        route("jack", {"abort": {"http_status": 403, "body": "no", "vars": either}}),
        route("never", {"abort": {"http_status": 500, "percentage": 0}}),
        route("slow", {"delay": {"duration": 0.3}}),
        route("slow_abort", {"delay": {"duration": 0.3}, "abort": {"http_status": 429}}),
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))
    before = len(upstream.received)

    resp = await request(gw, target="/abort?who=me")
    assert resp.status == 418
    assert resp.body == b"teapot for me\n"
    assert resp.header(b"x-fault") == b"injected 127.0.0.1"
    resp = await request(gw, target="/plain")
    assert resp.status == 503
    assert resp.json() == {"error_msg": "503 Service Temporarily Unavailable"}
    # vars: any of the expressions.
    assert (await request(gw, target="/jack?name=jack")).status == 403
    assert (await request(gw, target="/jack", headers=[("X-A", "1")])).status == 403
    assert len(upstream.received) == before
    assert (await request(gw, target="/jack?name=jill")).status == 200
    assert (await request(gw, target="/never")).status == 200
    assert len(upstream.received) == before + 2

    # A delay holds the request that long, then it goes on (or is aborted).
    for target, status, reached in (("/slow", 200, 1), ("/slow_abort", 429, 0)):
        seen = len(upstream.received)
        started = trio.current_time()
        assert (await request(gw, target=target)).status == status
        assert trio.current_time() - started >= 0.3
        assert len(upstream.received) == seen + reached
