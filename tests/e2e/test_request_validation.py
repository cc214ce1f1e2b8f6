"""request-validation: the request's headers and body are checked against JSON Schemas
before anything goes upstream, as APISIX's plugin checks them."""

from __future__ import annotations

import json

import trio

from tests.helpers import Upstream, config_for, request, start_gateway

BODY_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"type": "string", "enum": ["admin", "user"], "default": "user"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}
HEADER_SCHEMA = {
    "type": "object",
    "required": ["User-Agent", "x-tenant"],
    "properties": {
        "User-Agent": {"type": "string", "pattern": "^curl/"},
        "x-tenant": {"type": "string", "enum": ["a", "b"]},
    },
}
JSON = ("Content-Type", "application/json")
FORM = ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")


async def test_body_schema(nursery: trio.Nursery, upstream: Upstream) -> None:
    routes = [
        {"id": "r", "uri": "/r", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"request-validation": {"body_schema": BODY_SCHEMA}}},
        {"id": "own", "uri": "/own", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"request-validation": {
             "body_schema": BODY_SCHEMA, "rejected_code": 422, "rejected_msg": "bad payload"}}},
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    async def post(target: str, body: bytes, *headers: tuple[str, str]) -> tuple[int, bytes]:
        resp = await request(gw, "POST", target, headers=[JSON, *headers], body=body)
        return resp.status, resp.body

    # Valid: passes, and the upstream gets the JSON that was checked, with the schema's
    # defaults filled in (a duplicate key cannot be read one way here and another there).
    status, _ = await post("/r", b'{"name": "ann", "age": 30, "name": "bob"}')
    assert status == 200
    got = upstream.received[-1]
    assert json.loads(got.body) == {"name": "bob", "age": 30, "role": "user"}
    assert got.header(b"content-length") == str(len(got.body)).encode()
    before = len(upstream.received)

    for body in (
        b'{"age": 30}',  # required missing
        b'{"name": ""}',  # too short
        b'{"name": "ann", "age": 151}',  # above maximum
        b'{"name": "ann", "age": "30"}',  # wrong type
        b'{"name": "ann", "role": "root"}',  # not in enum
        b'{"name": "ann", "tags": ["a", "a"]}',  # not unique
        b'["name"]',  # not an object
        b'{"name": ',  # not JSON
        b"",  # no body
    ):
        status, text = await post("/r", body)
        assert status == 400, body
        assert await post("/own", body) == (422, b"bad payload"), body
    # The validator's reason is the answer when no rejected_msg is set.
    status, text = await post("/r", b'{"age": 30}')
    assert (status, b"name" in text) == (400, True), text
    assert len(upstream.received) == before

    # A form body is checked as its decoded arguments and goes on as it came.
    form = b"name=ann+lee&age=30"
    resp = await request(gw, "POST", "/r", headers=[FORM], body=form)
    assert resp.status == 400  # "30" is a string in a form: not an integer
    form_schema = {"type": "object", "required": ["name"],
                   "properties": {"name": {"type": "string", "pattern": "^ann lee$"}}}  # fmt: skip
    routes.append(
        {
            "id": "form",
            "uri": "/form",
            "upstream": {"nodes": {upstream.address: 1}},
            "plugins": {"request-validation": {"body_schema": form_schema}},
        }
    )
    _, gw = await start_gateway(nursery, config_for(routes))
    resp = await request(gw, "POST", "/form", headers=[FORM], body=form)
    assert resp.status == 200
    assert upstream.received[-1].body == form
    resp = await request(gw, "POST", "/form", headers=[FORM], body=b"name=bob")
    assert resp.status == 400


async def test_header_schema(nursery: trio.Nursery, upstream: Upstream) -> None:
    routes = [
        {"id": "r", "uri": "/r", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"request-validation": {"header_schema": HEADER_SCHEMA}}},
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    # Header names match whatever their case in the schema, as in APISIX.
    good = [("user-agent", "curl/8.0"), ("X-Tenant", "a")]
    resp = await request(gw, target="/r", headers=good)
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-tenant") == b"a"
    before = len(upstream.received)
    for headers in (
        [("User-Agent", "curl/8.0")],
        [("User-Agent", "Mozilla/5.0"), ("x-tenant", "a")],
        [("User-Agent", "curl/8.0"), ("x-tenant", "c")],
        # A repeated header is a list of values, not a string.
        [("User-Agent", "curl/8.0"), ("x-tenant", "a"), ("x-tenant", "b")],
    ):
        resp = await request(gw, target="/r", headers=headers)
        assert resp.status == 400, headers
        assert resp.body, headers
    assert len(upstream.received) == before


async def test_runs_before_authentication(nursery: trio.Nursery, upstream: Upstream) -> None:
    """Priority 2800: an invalid request is refused before any credential is looked at
    (and before a limit counts it)."""
    routes = [
        {"id": "r", "uri": "/r", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"key-auth": {},
                     "request-validation": {"header_schema": {"required": ["x-tenant"]}}}},
    ]  # fmt: skip
    consumers = [{"username": "app", "plugins": {"key-auth": {"key": "app-key"}}}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    assert (await request(gw, target="/r")).status == 400
    assert (await request(gw, target="/r", headers=[("x-tenant", "a")])).status == 401
    ok = await request(gw, target="/r", headers=[("x-tenant", "a"), ("apikey", "app-key")])
    assert ok.status == 200
