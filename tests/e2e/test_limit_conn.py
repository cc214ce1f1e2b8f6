"""limit-conn over real sockets (local and a real redis-server): at most `conn`
requests in flight per key, `burst` more waiting, the rest refused; a finished request
gives its place back."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import Received, Upstream, config_for, request, start_gateway
from tests.redis_server import RedisServer, redis_command


class HeldUpstream:
    """An upstream whose answers wait until the test lets them go."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.arrived = 0
        self.upstream = Upstream(responder=self.respond)

    async def respond(self, req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.arrived += 1
        await self.release.wait()
        return 200, [], b"done"


def route(up: Upstream, rid: str, **conf: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "uri": f"/{rid}",
        "upstream": {"nodes": {up.address: 1}, "timeout": {"read": 60}},
        "plugins": {"limit-conn": {"key": "remote_addr", "default_conn_delay": 0.01, **conf}},
    }


async def in_flight(
    nursery: trio.Nursery, gw: str, target: str, n: int, held: HeldUpstream
) -> tuple[list[int], list[int]]:
    """Send `n` requests at once; returns (statuses answered while the upstream holds the
    admitted ones, statuses of all once it lets them go)."""
    statuses: list[int] = []
    done = trio.Event()

    async def one() -> None:
        statuses.append((await request(gw, target=target)).status)
        if len(statuses) == n:
            done.set()

    held.release = trio.Event()
    for _ in range(n):
        nursery.start_soon(one)
    # Wait until every request was either refused or reached the upstream.
    with trio.fail_after(30):
        while len(statuses) + held.arrived < n:  # noqa: ASYNC110 (two counts, no one event)
            await trio.sleep(0.01)
    early = list(statuses)
    held.release.set()
    with trio.fail_after(30):
        await done.wait()
    return early, statuses


async def test_local_limit_refuses_above_conn_plus_burst_and_gives_places_back(
    nursery: trio.Nursery,
) -> None:
    held = HeldUpstream()
    await nursery.start(held.upstream.serve)
    routes = [route(held.upstream, "two", conn=2, burst=1, rejected_code=429, rejected_msg="busy")]
    _, gw = await start_gateway(nursery, config_for(routes))
    early, final = await in_flight(nursery, gw, "/two", 6, held)
    # 2 in flight + 1 waiting for its turn (delayed, then proxied): 3 reach the upstream.
    assert sorted(early) == [429, 429, 429]
    assert sorted(final) == [200, 200, 200, 429, 429, 429]
    assert held.arrived == 3
    # Another round: the places came back.
    held.arrived = 0
    _, final = await in_flight(nursery, gw, "/two", 3, held)
    assert sorted(final) == [200, 200, 200]


async def test_redis_policy_counts_in_redis_and_gives_places_back(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    held = HeldUpstream()
    await nursery.start(held.upstream.serve)
    conf = {
        "conn": 1,
        "burst": 0,
        "policy": "redis",
        "redis_host": "127.0.0.1",
        "redis_port": redis.port,
    }
    _, gw = await start_gateway(nursery, config_for([route(held.upstream, "one", **conf)]))
    early, final = await in_flight(nursery, gw, "/one", 3, held)
    assert sorted(early) == [503, 503]
    assert sorted(final) == [200, 503, 503]
    # The place is given back in Redis too (asynchronously, soon after the answer).
    with trio.fail_after(10):
        while redis_command(redis.port, "KEYS", "gateway:limit-conn:*") != b"*0\r\n":  # noqa: ASYNC110 (Redis, no event)
            await trio.sleep(0.01)
    assert (await request(gw, target="/one")).status == 200
    # Requests that arrive together share one script call: 3 places of 10 asked.
    three = route(held.upstream, "three", **{**conf, "conn": 3})
    _, gw = await start_gateway(nursery, config_for([three]))
    held.arrived = 0
    early, final = await in_flight(nursery, gw, "/three", 10, held)
    assert sorted(early) == [503] * 7
    assert sorted(final) == [200] * 3 + [503] * 7


async def test_a_place_is_given_back_when_the_filter_no_longer_holds(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """`_meta.filter` is checked per hook; attach-consumer-label rewrites the header the
    filter reads after the place was taken, and the place must still come back."""
    conf = {
        "conn": 1,
        "burst": 0,
        "default_conn_delay": 0.1,
        "key": "remote_addr",
        "_meta": {"filter": [["http_x_team", "==", "gold"]]},
    }
    routes = [
        {
            "id": "r",
            "uri": "/r",
            "upstream": {"nodes": {upstream.address: 1}},
            "plugins": {
                "key-auth": {},
                "attach-consumer-label": {"headers": {"X-Team": "$team"}},
                "limit-conn": conf,
            },
        }
    ]
    consumers = [
        {"username": "c", "credentials": [{"id": "c1", "plugins": {"key-auth": {"key": "k"}}}]}
    ]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    headers = [("apikey", "k"), ("X-Team", "gold")]
    statuses = [(await request(gw, target="/r", headers=headers)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert upstream.received[-1].header(b"x-team") is None
