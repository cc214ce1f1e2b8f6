"""The README walkthrough against the shipped config.json (listen and upstream moved to
free ports): no key, wrong key, bot-key and john-key, FetchBot's limit, the team label."""

from __future__ import annotations

import json

import trio

from tests.helpers import ROOT, Upstream, request, start_gateway


async def test_readme_scenario(nursery: trio.Nursery, upstream: Upstream) -> None:
    config = json.loads((ROOT / "config.json").read_text())
    config["server"] = {"listen": "127.0.0.1:0", "access_log": False}
    config["upstreams"][0]["nodes"] = {upstream.address: 1}
    _, gw = await start_gateway(nursery, config)

    missing = await request(gw, target="/petstore/pets")
    assert (missing.status, missing.body) == (401, b'{"message":"Missing API key in request"}\n')
    wrong = await request(gw, target="/petstore/pets", headers=[("apikey", "wrong")])
    assert (wrong.status, wrong.body) == (401, b'{"message":"Invalid API key in request"}\n')
    assert upstream.received == []

    bot = [("apikey", "bot-key"), ("X-Consumer-Team", "admins")]
    first = await request(gw, target="/petstore/pets", headers=bot)
    assert first.status == 200
    got = upstream.received[-1]
    assert got.header(b"x-consumer-username") == b"FetchBot"
    assert [v for n, v in got.headers if n == b"x-consumer-team"] == [b"bots"]
    assert (await request(gw, target="/petstore/pets", headers=bot)).status == 200
    third = await request(gw, target="/petstore/pets", headers=bot)
    assert third.status == 429
    assert third.header(b"x-ratelimit-remaining") == b"0"
    assert len(upstream.received) == 2

    for _ in range(5):
        john = await request(gw, target="/petstore/pets", headers=[("apikey", "john-key")])
        assert john.status == 200
        assert john.header(b"x-ratelimit-limit") is None
    got = upstream.received[-1]
    assert got.header(b"x-consumer-username") == b"JohnDoe"
    assert got.header(b"x-consumer-custom-id") == b"john-0001"
    assert got.header(b"x-consumer-team") is None
