"""The benchmark's gateway config (bench/load/run.py) routes each row's traffic through the
plugins the row is named after: a row labelled key-auth + limit-count that reached the plain
route would report the plain proxy's speed under the target's name."""

from __future__ import annotations

import trio

from bench.load.run import gateway_config
from tests.helpers import Upstream, request, start_gateway


async def test_bench_rows_reach_the_plugins_they_are_named_after(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    limited = [("bot-local", {"count": 1_000_000_000, "time_window": 60})]
    config = gateway_config(0, 0, limited, None)
    config["server"]["listen"] = "127.0.0.1:0"
    config["upstreams"][0]["nodes"] = {upstream.address: 1}
    _, address = await start_gateway(nursery, config)

    plain = await request(address, headers=[("host", "plain.bench")])
    assert plain.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") is None

    no_key = await request(address, headers=[("host", "auth.bench")])
    assert no_key.status == 401

    keyed = await request(address, headers=[("host", "auth.bench"), ("apikey", "bench-key-500")])
    assert keyed.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"user500"
    assert keyed.header(b"x-ratelimit-remaining") is None

    limited_answer = await request(
        address, headers=[("host", "auth.bench"), ("apikey", "bot-local-key")]
    )
    assert limited_answer.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"bot-local"
    assert limited_answer.header(b"x-ratelimit-limit") == b"1000000000"
