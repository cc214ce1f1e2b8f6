"""mocking: the gateway answers for an API that is not built yet, from an example or a
JSON schema, as APISIX's plugin does; the upstream never sees the request."""

from __future__ import annotations

import json

import trio

from tests.helpers import Upstream, config_for, request, start_gateway


async def test_mock_answers(nursery: trio.Nursery, upstream: Upstream) -> None:
    node = {"nodes": {upstream.address: 1}}
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": "string", "example": "Rex"},
            "price": {"type": "number"},
            "sold": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "owner": {"type": "object", "properties": {"email": {"type": "string"}}},
        },
    }

    def route(rid: str, conf: dict[str, object]) -> dict[str, object]:
        return {"id": rid, "uri": f"/{rid}", "upstream": node, "plugins": {"mocking": conf}}

    routes = [
        route("example", {"response_example": '{"pet": "$arg_pet"}', "response_status": 201,
                          "response_headers": {"X-Env": "mock"}}),
        route("schema", {"response_schema": schema, "with_mock_header": False}),
        route("plain", {"response_example": "hello", "content_type": "text/plain"}),
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    resp = await request(gw, target="/example?pet=cat")
    assert resp.status == 201
    assert resp.json() == {"pet": "cat"}
    assert resp.header(b"content-type") == b"application/json;charset=utf8"
    assert resp.header(b"x-mock-by") == b"trio-gateway"
    assert resp.header(b"x-env") == b"mock"

    resp = await request(gw, target="/schema")
    assert resp.status == 200
    assert resp.header(b"x-mock-by") is None
    doc = json.loads(resp.body)
    assert set(doc) == {"id", "name", "price", "sold", "tags", "owner"}
    assert isinstance(doc["id"], int)
    assert doc["name"] == "Rex"
    assert isinstance(doc["price"], float | int)
    assert isinstance(doc["sold"], bool)
    assert doc["tags"]
    assert all(isinstance(t, str) for t in doc["tags"])
    assert isinstance(doc["owner"]["email"], str)

    resp = await request(gw, target="/plain")
    assert (resp.status, resp.body, resp.header(b"content-type")) == (200, b"hello", b"text/plain")
    assert upstream.received == []
