"""opa: an Open Policy Agent decides each request, as APISIX's plugin asks it
(`POST /v1/data/<policy>` with the request as `input`)."""

from __future__ import annotations

import json

import trio

from tests.helpers import Received, Upstream, config_for, free_port, request, start_gateway

SEEN: list[dict[str, object]] = []


async def policy(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if req.target == b"/v1/data/broken":
        return 200, [], b'{"no": "result"}'
    doc = json.loads(req.body)["input"]
    SEEN.append(doc)
    headers = doc["request"]["headers"]
    if headers.get("x-role") == "admin":
        result = {"allow": True, "headers": {"X-Policy": "v1", "X-Else": "no"}}
    else:
        result = {"allow": False, "status_code": 418, "reason": {"msg": "admins only"},
                  "headers": {"X-Reason": "role"}}  # fmt: skip
    return 200, [(b"content-type", b"application/json")], json.dumps({"result": result}).encode()


async def test_opa_decides(nursery: trio.Nursery, upstream: Upstream) -> None:
    opa = await nursery.start(Upstream(responder=policy, name="opa").serve)
    node = {"nodes": {upstream.address: 1}}
    conf = {
        "host": f"http://{opa.address}",
        "policy": "gateway/allow",
        "send_headers_upstream": ["X-Policy"],
        "with_route": True,
        "with_consumer": True,
    }
    routes = [
        {"id": "r", "name": "Pets", "uri": "/r", "upstream": node,
         "plugins": {"key-auth": {}, "opa": conf}},
        {"id": "down", "uri": "/down", "upstream": node,
         "plugins": {"opa": {"host": f"http://127.0.0.1:{free_port()}", "policy": "p"}}},
        {"id": "broken", "uri": "/broken", "upstream": node,
         "plugins": {"opa": {"host": f"http://{opa.address}", "policy": "broken"}}},
    ]  # fmt: skip
    consumers = [{"username": "jack", "labels": {"team": "pets"},
                  "plugins": {"key-auth": {"key": "jack-key"}}}]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    key = ("apikey", "jack-key")

    resp = await request(gw, target="/r?a=1", headers=[key, ("X-Role", "admin")])
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-policy") == b"v1"
    assert upstream.received[-1].header(b"x-else") is None
    doc = SEEN[-1]
    assert doc["type"] == "http"
    assert doc["request"]["method"] == "GET"  # type: ignore[index]
    assert doc["request"]["path"] == "/r"  # type: ignore[index]
    assert doc["request"]["query"] == {"a": "1"}  # type: ignore[index]
    assert doc["var"]["remote_addr"] == "127.0.0.1"  # type: ignore[index]
    assert doc["route"] == {"id": "r", "name": "Pets", "service_id": None}
    # The consumer as the policy needs it: never its credentials.
    assert doc["consumer"] == {"username": "jack", "labels": {"team": "pets"}, "group_id": None}

    before = len(upstream.received)
    resp = await request(gw, target="/r", headers=[key, ("X-Role", "guest")])
    assert (resp.status, resp.json()) == (418, {"msg": "admins only"})
    assert resp.header(b"x-reason") == b"role"
    assert resp.header(b"content-type") == b"application/json"
    assert len(upstream.received) == before

    # No decision: 403; a decision without `result`: 503.
    assert (await request(gw, target="/down")).status == 403
    assert (await request(gw, target="/broken")).status == 503
    assert len(upstream.received) == before
    # The decisions went over one kept connection (`keepalive` on by default).
    assert opa.connections == 1
