"""limit-req over real sockets (local and a real redis-server): APISIX's leaky bucket,
refusing above the burst and holding requests within it to the rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.helpers import Upstream, config_for, request, start_gateway
from tests.redis_server import RedisServer


def limited(upstream: Upstream, rid: str, **conf: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "uri": f"/{rid}",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-req": {"key": "remote_addr", **conf}},
    }


async def statuses(gw: str, target: str, n: int, **kw: Any) -> list[int]:
    return [(await request(gw, target=target, **kw)).status for _ in range(n)]


async def test_refusals_above_the_burst(nursery: trio.Nursery, upstream: Upstream) -> None:
    # One request per 10 s drains: the requests here all fall within one drain.
    slow = {"rate": 0.1, "nodelay": True}
    routes = [
        limited(upstream, "none", burst=0, **slow),
        limited(upstream, "three", burst=2, rejected_code=429, rejected_msg="slow down", **slow),
        {
            **limited(upstream, "consumers", burst=0, **slow),
            "plugins": {
                "key-auth": {},
                "limit-req": {"rate": 0.1, "burst": 0, "key": "consumer_name", "nodelay": True},
            },
        },
    ]
    consumers = [
        {"username": name, "credentials": [{"id": name, "plugins": {"key-auth": {"key": name}}}]}
        for name in ("ann", "bob")
    ]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    refused = await request(gw, target="/none")
    assert refused.status == 200
    refused = await request(gw, target="/none")
    assert (refused.status, refused.json()) == (
        503,
        {"error_msg": "503 Service Temporarily Unavailable"},
    )
    assert await statuses(gw, "/three", 3) == [200, 200, 200]
    refused = await request(gw, target="/three")
    assert (refused.status, refused.json()) == (429, {"error_msg": "slow down"})
    for name in ("ann", "bob"):
        assert await statuses(gw, "/consumers", 2, headers=[("apikey", name)]) == [200, 503]
    assert len(upstream.received) == 1 + 3 + 2


async def test_requests_within_the_burst_wait_for_the_rate(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    routes = [
        limited(upstream, "delayed", rate=2, burst=1),
        limited(upstream, "nodelay", rate=2, burst=1, nodelay=True),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    for target, least in (("/delayed", 0.4), ("/nodelay", 0.0)):
        assert (await request(gw, target=target)).status == 200
        start = trio.current_time()
        assert (await request(gw, target=target)).status == 200  # one over the rate
        waited = trio.current_time() - start
        assert waited >= least, (target, waited)
        if least == 0.0:
            # nodelay answers at once (far below the 0.5 s a wait would take)
            assert waited < 0.45, waited
    assert len(upstream.received) == 4


async def test_redis_policy_shares_the_bucket(
    nursery: trio.Nursery, upstream: Upstream, redis: RedisServer, tmp_path: Path
) -> None:
    conf = {
        "rate": 0.1,
        "burst": 1,
        "nodelay": True,
        "policy": "redis",
        "redis_host": "127.0.0.1",
        "redis_port": redis.port,
    }
    config = config_for([limited(upstream, "shared", **conf)])
    _, first = await start_gateway(nursery, config)
    _, second = await start_gateway(nursery, config)
    # Two gateways, one bucket: burst 1 lets two through in all.
    assert await statuses(first, "/shared", 1) == [200]
    assert await statuses(second, "/shared", 1) == [200]
    assert await statuses(first, "/shared", 1) == [503]
    assert await statuses(second, "/shared", 1) == [503]

    # Requests that arrive together share one script call per key; it decides for them
    # exactly as one call each would: burst 3, so 4 of 12 pass.
    together = config_for([limited(upstream, "together", **{**conf, "burst": 3})])
    _, third = await start_gateway(nursery, together)
    answers: list[int] = []

    async def one() -> None:
        answers.append((await request(third, target="/together")).status)

    async with trio.open_nursery() as burst:
        for _ in range(12):
            burst.start_soon(one)
    assert sorted(answers) == [200] * 4 + [503] * 8

    down = RedisServer(tmp_path / "down")
    down.start()
    routes = [
        limited(upstream, "strict", **{**conf, "redis_port": down.port}),
        limited(upstream, "soft", **{**conf, "redis_port": down.port, "allow_degradation": True}),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    assert await statuses(gw, "/strict", 1) == [200]
    down.stop()
    assert await statuses(gw, "/strict", 1) == [500]
    assert await statuses(gw, "/soft", 3) == [200, 200, 200]
