"""Consumer policies (SPEC section 5) over real sockets: limit-count (local and a real
redis-server), consumer-restriction, attach-consumer-label."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.config.load import load
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from tests.helpers import Response, Upstream, config_for, raw_serve, request, start_gateway
from tests.redis_server import RedisServer, redis_command


def key_consumer(name: str, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "username": name,
        "credentials": [{"id": f"{name}-cred", "plugins": {"key-auth": {"key": key}}}],
        **extra,
    }


def auth_route(
    upstream: Upstream, route_id: str = "r", uri: str = "/*", **plugins: Any
) -> dict[str, Any]:
    return {
        "id": route_id,
        "uri": uri,
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"key-auth": {}, **plugins},
    }


def limits(resp: Response) -> tuple[int, int, int]:
    return (
        int(resp.header(b"x-ratelimit-limit") or -1),
        int(resp.header(b"x-ratelimit-remaining") or -1),
        int(resp.header(b"x-ratelimit-reset") or -1),
    )


async def statuses(gw: str, n: int, **kw: Any) -> list[int]:
    return [(await request(gw, **kw)).status for _ in range(n)]


# --- limit-count, local -----------------------------------------------------------------


async def test_seed_scenario_fetchbot_limited_johndoe_not(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    consumers = [
        key_consumer(
            "FetchBot",
            "bot-key",
            plugins={"limit-count": {"count": 2, "time_window": 5, "rejected_code": 429}},
        ),
        key_consumer("JohnDoe", "john-key"),
    ]
    _, gw = await start_gateway(nursery, config_for([auth_route(upstream)], consumers=consumers))
    bot = [("apikey", "bot-key")]
    first, second, third = [await request(gw, headers=bot) for _ in range(3)]
    assert [first.status, second.status, third.status] == [200, 200, 429]
    assert limits(first)[:2] == (2, 1)
    assert limits(second)[:2] == (2, 0)
    limit, remaining, reset = limits(third)
    assert (limit, remaining) == (2, 0)
    assert 1 <= reset <= 5
    assert 1 <= limits(first)[2] <= 5
    assert len(upstream.received) == 2
    john = await statuses(gw, 5, headers=[("apikey", "john-key")])
    assert john == [200] * 5
    assert (await request(gw, headers=[("apikey", "john-key")])).header(
        b"x-ratelimit-limit"
    ) is None


async def test_plugin_meta_disable_turns_a_plugin_off(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX's `_meta.disable` (its dashboard writes `"_meta": {"disable": false}` into
    every plugin): false leaves the plugin on, true takes it out wherever it is: a route's
    plugin, a consumer's policy, a credential (whose key then opens nothing)."""
    never = {"count": 1, "time_window": 60, "_meta": {"disable": True}}
    consumers = [
        key_consumer("on", "on-key", plugins={"limit-count": never}),
        {
            "username": "off",
            "credentials": [
                {
                    "id": "off-cred",
                    "plugins": {"key-auth": {"key": "off-key", "_meta": {"disable": True}}},
                }
            ],
        },
    ]
    route = auth_route(upstream, **{"limit-count": {"count": 1, "time_window": 60, **never}})
    route["plugins"]["key-auth"] = {"_meta": {"disable": False}}
    open_route = {
        "id": "open",
        "uri": "/open",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"key-auth": {"_meta": {"disable": True}}},
    }
    multi_route = {
        "id": "multi",
        "uri": "/multi",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {
            "multi-auth": {
                "auth_plugins": [{"key-auth": {"_meta": {"disable": True}}}, {"basic-auth": {}}]
            }
        },
    }
    routes = [route, open_route, multi_route]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    assert (await request(gw, target="/multi", headers=[("apikey", "on-key")])).status == 401
    assert (await request(gw)).status == 401
    on = await statuses(gw, 3, headers=[("apikey", "on-key")])
    assert on == [200, 200, 200]
    assert upstream.received[-1].header(b"x-consumer-username") == b"on"
    assert (await request(gw, headers=[("apikey", "off-key")])).status == 401
    assert (await request(gw, target="/open")).status == 200
    assert upstream.received[-1].header(b"x-consumer-username") is None
    assert len(upstream.received) == 4


async def test_plugin_meta_filter_runs_a_plugin_only_for_matching_requests(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX's `_meta.filter` (route `vars` rules): a plugin whose filter does not hold
    for a request does not run for it, in any phase."""
    limited = {
        "count": 1,
        "time_window": 60,
        "_meta": {"filter": [["http_x_tier", "==", "free"]]},
    }
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": limited},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    paid = [await request(gw, headers=[("x-tier", "paid")]) for _ in range(3)]
    assert [r.status for r in paid] == [200] * 3
    assert all(r.header(b"x-ratelimit-limit") is None for r in paid)
    free = [await request(gw, headers=[("x-tier", "free")]) for _ in range(2)]
    assert [r.status for r in free] == [200, 503]
    assert free[0].header(b"x-ratelimit-remaining") == b"0"
    assert (await request(gw)).status == 200


async def test_meta_filter_on_a_consumers_own_plugin(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """A consumer's own limit-count with `_meta.filter` counts only the requests the filter
    holds for."""
    limited = {"count": 1, "time_window": 60, "_meta": {"filter": [["uri", "~~", "^/batch"]]}}
    consumers = [key_consumer("bot", "bot-key", plugins={"limit-count": limited})]
    _, gw = await start_gateway(nursery, config_for([auth_route(upstream)], consumers=consumers))
    key = [("apikey", "bot-key")]
    assert await statuses(gw, 3, headers=key) == [200, 200, 200]
    batch = [(await request(gw, target="/batch/x", headers=key)).status for _ in range(2)]
    assert batch == [200, 503]


async def test_rejected_msg_code_and_hidden_headers(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {
            "limit-count": {
                "count": 1,
                "time_window": 60,
                "rejected_msg": "slow down",
                "show_limit_quota_header": False,
            }
        },
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    ok = await request(gw)
    assert ok.status == 200
    assert ok.header(b"x-ratelimit-limit") is None
    rejected = await request(gw)
    assert rejected.status == 503
    assert rejected.body == b'{"error_msg":"slow down"}\n'
    assert rejected.header(b"x-ratelimit-remaining") is None


async def test_quota_header_names_from_plugin_metadata(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX's limit-count `plugin_metadata`: `limit_header`, `remaining_header` and
    `reset_header` name the quota headers of every conf (on refusals too)."""
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": {"count": 1, "time_window": 60}},
    }
    names = {"limit_header": "X-Quota", "remaining_header": "X-Quota-Left"}
    metadata = [{"id": "limit-count", **names}]
    _, gw = await start_gateway(nursery, config_for([route], plugin_metadata=metadata))
    ok = await request(gw)
    assert (ok.status, ok.header(b"x-quota"), ok.header(b"x-quota-left")) == (200, b"1", b"0")
    assert ok.header(b"x-ratelimit-limit") is None
    assert ok.header(b"x-ratelimit-reset") is not None  # the one left at its default
    refused = await request(gw)
    assert (refused.status, refused.header(b"x-quota-left")) == (503, b"0")


def quota(resp: Response, prefix: str) -> tuple[int, int]:
    limit = resp.header(f"x-{prefix}-ratelimit-limit".encode())
    left = resp.header(f"x-{prefix}-ratelimit-remaining".encode())
    return int(limit or -1), int(left or -1)


async def test_rules_each_count_under_their_own_key(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX 3.16's `rules`: every rule whose key resolves counts the request under that
    key, in order, until one refuses; each has its headers, `X-<header_prefix>-RateLimit-*`
    (the rule's index from 1 without one)."""
    rules = [
        {"count": 2, "time_window": 60, "key": "$http_x_user", "header_prefix": "user"},
        {"count": "3", "time_window": 60, "key": "$remote_addr"},
    ]
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": {"rules": rules}},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    first = await request(gw, headers=[("x-user", "ann")])
    assert first.status == 200
    assert (quota(first, "user"), quota(first, "2")) == ((2, 1), (3, 2))
    assert first.header(b"x-ratelimit-limit") is None
    assert (await request(gw, headers=[("x-user", "ann")])).status == 200
    refused = await request(gw, headers=[("x-user", "ann")])  # ann's third: rule 1
    assert (refused.status, quota(refused, "user")) == (503, (2, 0))
    assert (await request(gw, headers=[("x-user", "bob")])).status == 200  # the address's 3rd
    assert (await request(gw, headers=[("x-user", "cat")])).status == 503  # its 4th
    # No x-user header: rule 1 is not run, rule 2 still refuses.
    assert (await request(gw)).status == 503
    assert len(upstream.received) == 3


async def test_count_and_time_window_from_variables(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX 3.16: `count` (or `time_window`) may name a variable, read per request; a
    value that is not a positive integer is a 500, or a pass with `allow_degradation`."""
    limit = {"count": "$http_x_quota", "time_window": 60, "key": "http_x_user"}
    routes = [
        {
            "id": rid,
            "uri": f"/{rid}",
            "upstream": {"nodes": {upstream.address: 1}},
            "plugins": {"limit-count": {**limit, **extra}},
        }
        for rid, extra in (("strict", {}), ("soft", {"allow_degradation": True}))
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    one = [("x-user", "ann"), ("x-quota", "1")]
    two = [("x-user", "bob"), ("x-quota", "2")]
    first = await request(gw, target="/strict", headers=one)
    assert (first.status, limits(first)[:2]) == (200, (1, 0))
    assert (await request(gw, target="/strict", headers=one)).status == 503
    assert [(await request(gw, target="/strict", headers=two)).status for _ in range(3)] == [
        200,
        200,
        503,
    ]
    for bad in ("abc", "0", "-1", "1.5"):
        headers = [("x-user", "cat"), ("x-quota", bad)]
        assert (await request(gw, target="/strict", headers=headers)).status == 500, bad
        assert (await request(gw, target="/soft", headers=headers)).status == 200, bad
    assert (await request(gw, target="/strict", headers=[("x-user", "dan")])).status == 500


async def test_route_limit_is_shared_by_consumers_from_one_address(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    route = auth_route(upstream, **{"limit-count": {"count": 3, "time_window": 60}})
    consumers = [key_consumer("a", "key-a"), key_consumer("b", "key-b")]
    _, gw = await start_gateway(nursery, config_for([route], consumers=consumers))
    results = []
    for key in ("key-a", "key-b", "key-a", "key-b"):
        results.append((await request(gw, headers=[("apikey", key)])).status)
    assert results == [200, 200, 200, 503]


async def test_consumer_limit_covers_all_credentials_and_routes(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    consumers = [
        {
            "username": "multi",
            "plugins": {"limit-count": {"count": 3, "time_window": 60, "rejected_code": 429}},
            "credentials": [
                {"id": "k1", "plugins": {"key-auth": {"key": "key-1"}}},
                {"id": "k2", "plugins": {"key-auth": {"key": "key-2"}}},
            ],
        }
    ]
    routes = [auth_route(upstream, "r1", "/one"), auth_route(upstream, "r2", "/two")]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    got = [
        (await request(gw, target=t, headers=[("apikey", k)])).status
        for t, k in [("/one", "key-1"), ("/two", "key-2"), ("/two", "key-1"), ("/one", "key-2")]
    ]
    assert got == [200, 200, 200, 429]


async def test_group_limit_is_one_quota_for_all_members(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    groups = [
        {
            "id": "bots",
            "plugins": {
                "limit-count": {
                    "count": 2,
                    "time_window": 60,
                    "key": "consumer_name",
                    "key_type": "constant",
                }
            },
        }
    ]
    consumers = [
        key_consumer("a", "key-a", group_id="bots"),
        key_consumer("b", "key-b", group_id="bots"),
        key_consumer("c", "key-c"),
    ]
    _, gw = await start_gateway(
        nursery, config_for([auth_route(upstream)], consumers=consumers, consumer_groups=groups)
    )
    got = [
        (await request(gw, headers=[("apikey", k)])).status
        for k in ("key-a", "key-b", "key-a", "key-c")
    ]
    assert got == [200, 200, 503, 200]


async def test_group_name_shares_one_counter_across_routes(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    conf = {"count": 2, "time_window": 60, "group": "shared"}
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "a", "uri": "/a", "upstream": node, "plugins": {"limit-count": conf}},
        {"id": "b", "uri": "/b", "upstream": node, "plugins": {"limit-count": conf}},
        {
            "id": "c",
            "uri": "/c",
            "upstream": node,
            "plugins": {"limit-count": {"count": 2, "time_window": 60}},
        },
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    got = [(await request(gw, target=t)).status for t in ("/a", "/b", "/a", "/c")]
    assert got == [200, 200, 503, 200]


@pytest.mark.parametrize(
    ("conf", "requests", "expected"),
    [
        (
            {"key": "http_x_user"},
            [{"x-user": "u1"}, {"x-user": "u2"}, {"x-user": "u1"}],
            [200, 200, 503],
        ),
        (
            {"key": "arg_user"},
            [{"?": "user=u1"}, {"?": "user=u2"}, {"?": "user=u1"}],
            [200, 200, 503],
        ),
        # An absent variable falls back to remote_addr: both requests share one counter.
        ({"key": "http_x_user"}, [{}, {}], [200, 503]),
        (
            {"key_type": "var_combination", "key": "$http_x_a-$http_x_b"},
            [{"x-a": "1", "x-b": "2"}, {"x-a": "1", "x-b": "3"}, {"x-a": "1", "x-b": "2"}],
            [200, 200, 503],
        ),
        (
            {"key_type": "constant", "key": "everyone"},
            [{"x-user": "u1"}, {"x-user": "u2"}],
            [200, 503],
        ),
    ],
)
async def test_key_types(
    nursery: trio.Nursery,
    upstream: Upstream,
    conf: dict[str, Any],
    requests: list[dict[str, str]],
    expected: list[int],
) -> None:
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": {"count": 1, "time_window": 60, **conf}},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    got = []
    for spec in requests:
        query = spec.get("?")
        headers = [(k, v) for k, v in spec.items() if k != "?"]
        got.append(
            (await request(gw, target=f"/x?{query}" if query else "/x", headers=headers)).status
        )
    assert got == expected


async def exactly(gw: str, n: int, **kw: Any) -> list[int]:
    results: list[int] = []

    async def one() -> None:
        results.append((await request(gw, **kw)).status)

    async with trio.open_nursery() as inner:
        for _ in range(n):
            inner.start_soon(one)
    return results


@pytest.mark.parametrize("window_type", ["fixed", "sliding"])
async def test_exact_under_concurrency_local(
    nursery: trio.Nursery, upstream: Upstream, window_type: str
) -> None:
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": {"count": 10, "time_window": 60, "window_type": window_type}},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    results = await exactly(gw, 40)
    assert results.count(200) == 10
    assert results.count(503) == 30


async def test_counters_survive_reload_when_conf_unchanged(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    node = {"nodes": {upstream.address: 1}}
    limited = {"limit-count": {"count": 2, "time_window": 60}}
    config = config_for(
        [
            {"id": "a", "uri": "/a", "upstream": node, "plugins": limited},
            {"id": "b", "uri": "/b", "upstream": node, "plugins": limited},
        ]
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    registry = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=registry), registry)
    gw = (await nursery.start(gateway.serve))[0]
    assert [(await request(gw, target=t)).status for t in ("/a", "/a", "/b")] == [200, 200, 200]
    # Same conf on /a, a changed conf on /b.
    config["routes"][1]["plugins"] = {"limit-count": {"count": 3, "time_window": 60}}
    path.write_text(json.dumps(config))
    assert await gateway.reload()
    assert (await request(gw, target="/a")).status == 503  # /a's counter carried on
    assert [(await request(gw, target="/b")).status for _ in range(4)] == [200, 200, 200, 503]


# --- limit-count, redis -----------------------------------------------------------------


def redis_conf(redis: RedisServer, **extra: Any) -> dict[str, Any]:
    return {
        "count": 5,
        "time_window": 60,
        "policy": "redis",
        "redis_host": "127.0.0.1",
        "redis_port": redis.port,
        **extra,
    }


async def test_redis_rules_and_variable_counts_share_redis_counters(
    nursery: trio.Nursery, upstream: Upstream, redis: RedisServer
) -> None:
    """`rules` and a `count` read from a variable keep their counters in Redis as the
    fixed form does: two gateways share them."""
    conf = redis_conf(redis)
    del conf["count"], conf["time_window"]
    rules = [{"count": 2, "time_window": 60, "key": "$http_x_user", "header_prefix": "u"}]
    routes = [
        {
            "id": rid,
            "uri": f"/{rid}",
            "upstream": {"nodes": {upstream.address: 1}},
            "plugins": {"limit-count": {**conf, **extra}},
        }
        for rid, extra in (
            ("rules", {"rules": rules}),
            ("varied", {"count": "$http_x_quota", "time_window": 60, "key": "http_x_user"}),
        )
    ]
    _, first = await start_gateway(nursery, config_for(routes))
    _, second = await start_gateway(nursery, config_for(routes))
    ann = [("x-user", "ann"), ("x-quota", "1")]
    answers = [
        (await request(gw, target="/rules", headers=ann)).status for gw in (first, second, first)
    ]
    assert answers == [200, 200, 503]
    assert (await request(first, target="/varied", headers=ann)).status == 200
    refused = await request(second, target="/varied", headers=ann)
    assert (refused.status, limits(refused)[:2]) == (503, (1, 0))
    assert redis_command(redis.port, "KEYS", "*").count(b"limit-count") >= 2


@pytest.mark.parametrize("window_type", ["fixed", "sliding"])
async def test_redis_limit_headers_and_exact_concurrency(
    nursery: trio.Nursery, upstream: Upstream, redis: RedisServer, window_type: str
) -> None:
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {
            "limit-count": redis_conf(redis, count=10, window_type=window_type, rejected_code=429)
        },
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    first = await request(gw)
    assert first.status == 200
    assert limits(first)[:2] == (10, 9)
    results = await exactly(gw, 30)
    assert results.count(200) == 9
    assert results.count(429) == 21
    rejected = await request(gw)
    assert rejected.status == 429
    assert limits(rejected)[1] == 0
    assert limits(rejected)[2] >= 1


@pytest.mark.parametrize("window_type", ["fixed", "sliding"])
async def test_concurrent_redis_decisions_share_round_trips_and_stay_exact(
    nursery: trio.Nursery, upstream: Upstream, redis: RedisServer, window_type: str
) -> None:
    """Requests that arrive together are decided by fewer script calls than requests, and
    each gets the answer it would get alone: exactly `count` pass, each with its own
    remaining quota."""
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": redis_conf(redis, count=12, window_type=window_type)},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    assert redis_command(redis.port, "CONFIG", "RESETSTAT").startswith(b"+OK")
    answers: list[Response] = []

    async def one() -> None:
        answers.append(await request(gw))

    async with trio.open_nursery() as inner:
        for _ in range(40):
            inner.start_soon(one)
    passed = [a for a in answers if a.status == 200]
    assert len(passed) == 12
    assert sorted(limits(a)[1] for a in passed) == list(range(12))
    assert all(a.status == 503 and limits(a)[1] == 0 for a in answers if a.status != 200)
    assert len(upstream.received) == 12
    stats = redis_command(redis.port, "INFO", "commandstats").decode()
    calls = sum(int(m) for m in re.findall(r"cmdstat_(?:evalsha|eval):calls=(\d+)", stats))
    assert 1 <= calls < 40


async def test_redis_down_fails_closed_or_degrades(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        node = {"nodes": {upstream.address: 1}}
        routes = [
            {
                "id": "strict",
                "uri": "/strict",
                "upstream": node,
                "plugins": {"limit-count": redis_conf(server)},
            },
            {
                "id": "soft",
                "uri": "/soft",
                "upstream": node,
                "plugins": {"limit-count": redis_conf(server, allow_degradation=True)},
            },
        ]
        _, gw = await start_gateway(nursery, config_for(routes))
        assert (await request(gw, target="/strict")).status == 200
        assert (await request(gw, target="/soft")).status == 200
        server.stop()
        failed = await request(gw, target="/strict")
        assert failed.status == 500
        assert failed.body == b'{"error_msg":"failed to limit count"}\n'
        assert (await request(gw, target="/soft")).status == 200
        assert len(upstream.received) == 3
        # Redis back (same port): the strict route counts again.
        server.start()
        assert (await request(gw, target="/strict")).status == 200
    finally:
        server.stop()


async def test_redis_timeout_answers_500_quickly(nursery: trio.Nursery, upstream: Upstream) -> None:
    async def silent_redis(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port = await nursery.start(raw_serve, silent_redis)
    conf = {
        "count": 5,
        "time_window": 60,
        "policy": "redis",
        "redis_host": "127.0.0.1",
        "redis_port": port,
        "redis_timeout": 200,
    }
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": conf},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    with trio.fail_after(10):
        resp = await request(gw)
    assert resp.status == 500
    assert upstream.received == []


# --- consumer-restriction ---------------------------------------------------------------


@pytest.fixture
async def restricted_gw(nursery: trio.Nursery, upstream: Upstream) -> str:
    node = {"nodes": {upstream.address: 1}}
    consumers = [
        key_consumer("jack", "jack-key", group_id="staff"),
        key_consumer("rose", "rose-key"),
        key_consumer("cal", "cal-key", group_id="guests"),
        key_consumer(
            "ruth",
            "ruth-key",
            plugins={"consumer-restriction": {"type": "route_id", "blacklist": ["white"]}},
        ),
    ]
    groups = [
        {"id": "staff", "plugins": {"proxy-rewrite": {"headers": {"x-staff": "1"}}}},
        {
            "id": "guests",
            "plugins": {"consumer-restriction": {"type": "route_id", "whitelist": ["black"]}},
        },
    ]
    routes = [
        {
            "id": "white",
            "uri": "/white",
            "upstream": node,
            "plugins": {
                "key-auth": {},
                "consumer-restriction": {"whitelist": ["jack", "cal", "ruth"]},
            },
        },
        {
            "id": "black",
            "uri": "/black",
            "upstream": node,
            "plugins": {
                "key-auth": {},
                "consumer-restriction": {
                    "blacklist": ["rose"],
                    "rejected_code": 423,
                    "rejected_msg": "go away",
                },
            },
        },
        {
            "id": "methods",
            "uri": "/methods",
            "upstream": node,
            "plugins": {
                "key-auth": {},
                "consumer-restriction": {
                    "allowed_by_methods": [{"user": "jack", "methods": ["GET"]}]
                },
            },
        },
        {
            "id": "groups",
            "uri": "/groups",
            "upstream": node,
            "plugins": {
                "key-auth": {},
                "consumer-restriction": {"type": "consumer_group_id", "whitelist": ["staff"]},
            },
        },
        {
            "id": "anon",
            "uri": "/anon",
            "upstream": node,
            "plugins": {"consumer-restriction": {"whitelist": ["jack"]}},
        },
        {"id": "svc", "uri": "/svc", "service_id": "s1"},
        {
            "id": "nosvc",
            "uri": "/nosvc",
            "upstream": node,
            "plugins": {"consumer-restriction": {"type": "service_id", "whitelist": ["s1"]}},
        },
    ]
    services = [
        {
            "id": "s1",
            "upstream": node,
            "plugins": {"consumer-restriction": {"type": "service_id", "blacklist": ["s1"]}},
        }
    ]
    _, gw = await start_gateway(
        nursery, config_for(routes, consumers=consumers, consumer_groups=groups, services=services)
    )
    return gw


async def test_consumer_restriction_rules(restricted_gw: str, upstream: Upstream) -> None:
    gw = restricted_gw

    async def call(target: str, key: str | None = None, method: str = "GET") -> Response:
        headers = [("apikey", key)] if key else []
        return await request(
            gw, method, target, headers=headers, body=b"x" if method == "POST" else b""
        )

    assert (await call("/white", "jack-key")).status == 200
    forbidden = await call("/white", "rose-key")
    assert forbidden.status == 403
    assert forbidden.body == b'{"message":"The consumer_name is forbidden."}\n'
    custom = await call("/black", "rose-key")
    assert custom.status == 423
    assert custom.body == b'{"message":"go away"}\n'
    assert (await call("/black", "jack-key")).status == 200
    assert (await call("/methods", "jack-key")).status == 200
    assert (await call("/methods", "jack-key", "POST")).status == 403
    assert (await call("/methods", "rose-key", "POST")).status == 200
    assert (await call("/groups", "jack-key")).status == 200
    assert (await call("/groups", "cal-key")).status == 403
    no_group = await call("/groups", "rose-key")
    assert no_group.status == 401
    rejected = '{"message":"The request is rejected, please check the %s for this request"}\n'
    assert no_group.body == (rejected % "consumer_group_id").encode()
    anonymous = await call("/anon")
    assert anonymous.status == 401
    assert anonymous.body == (rejected % "consumer_name").encode()
    assert (await call("/svc")).status == 403  # service-level blacklist of its own id
    assert (await call("/nosvc")).status == 401  # no service
    # Restrictions held by a consumer and by a consumer group apply to them.
    assert (await call("/white", "ruth-key")).status == 403
    assert (await call("/white", "cal-key")).status == 403
    assert (await call("/black", "cal-key")).status == 200


# --- attach-consumer-label --------------------------------------------------------------


async def test_attach_consumer_label(nursery: trio.Nursery, upstream: Upstream) -> None:
    consumers = [
        key_consumer("FetchBot", "bot-key", labels={"team": "bots", "tier": "free"}),
        key_consumer("JohnDoe", "john-key"),
        key_consumer("Juergen", "j-key", labels={"team": "チーム", "custom_id": "jü-1"}),
    ]
    node = {"nodes": {upstream.address: 1}}
    plugin = {"attach-consumer-label": {"headers": {"X-Consumer-Team": "$team", "X-Tier": "$tier"}}}
    routes = [
        {"id": "auth", "uri": "/auth", "upstream": node, "plugins": {"key-auth": {}, **plugin}},
        {"id": "open", "uri": "/open", "upstream": node, "plugins": plugin},
    ]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    spoof = [("X-Consumer-Team", "admins"), ("Connection", "X-Consumer-Team"), ("x-tier", "gold")]
    assert (
        await request(gw, target="/auth", headers=[("apikey", "bot-key"), *spoof])
    ).status == 200
    got = upstream.received[-1]
    assert [v for n, v in got.headers if n == b"x-consumer-team"] == [b"bots"]
    assert [v for n, v in got.headers if n == b"x-tier"] == [b"free"]
    assert (
        await request(gw, target="/auth", headers=[("apikey", "john-key"), *spoof])
    ).status == 200
    got = upstream.received[-1]
    assert got.header(b"x-consumer-team") is None
    assert got.header(b"x-tier") is None
    assert (await request(gw, target="/open", headers=spoof)).status == 200
    assert upstream.received[-1].header(b"x-consumer-team") is None
    # A label outside Latin-1 goes out as its UTF-8 bytes, as APISIX sends it.
    assert (await request(gw, target="/auth", headers=[("apikey", "j-key")])).status == 200
    got = upstream.received[-1]
    assert got.header(b"x-consumer-team") == "チーム".encode()
    assert got.header(b"x-consumer-custom-id") == "jü-1".encode()


# --- ip-restriction ---------------------------------------------------------------------


async def test_ip_restriction(nursery: trio.Nursery, upstream: Upstream) -> None:
    """The client here is 127.0.0.1. A refused request reaches neither the upstream nor a
    later plugin's quota; authentication (rewrite) still answers first."""
    node = {"nodes": {upstream.address: 1}}
    lists = {
        "elsewhere": {"whitelist": ["10.0.0.0/8", "2001:db8::/32"]},
        "loopback": {"whitelist": ["192.0.2.1", "127.0.0.0/8"]},
        "banned": {
            "blacklist": ["203.0.113.0/24", "127.0.0.1"],
            "message": "go away",
            "response_code": 404,
        },
        "other-banned": {"blacklist": ["127.0.0.2"]},
    }
    limit = {"count": 1, "time_window": 60, "key": "remote_addr"}
    routes = [
        {
            "id": rid,
            "uri": f"/{rid}",
            "upstream": node,
            "plugins": {"ip-restriction": conf, "limit-count": limit},
        }
        for rid, conf in lists.items()
    ]
    routes.append(
        {
            "id": "auth",
            "uri": "/auth",
            "upstream": node,
            "plugins": {"key-auth": {}, "ip-restriction": {"blacklist": ["127.0.0.1"]}},
        }
    )
    consumers = [key_consumer("app", "app-key")]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    # Twice: a refusal comes before limit-count (count 1) and spends none of its quota.
    for _ in range(2):
        resp = await request(gw, target="/elsewhere")
        assert (resp.status, resp.json()) == (403, {"message": "Your IP address is not allowed"})
        assert resp.body.endswith(b"}\n")
        resp = await request(gw, target="/banned")
        assert (resp.status, resp.json()) == (404, {"message": "go away"})
    assert upstream.received == []
    assert (await request(gw, target="/loopback")).status == 200
    assert (await request(gw, target="/other-banned")).status == 200
    assert (await request(gw, target="/loopback")).status == 503  # limit-count refuses
    assert (await request(gw, target="/auth")).status == 401
    assert (await request(gw, target="/auth", headers=[("apikey", "app-key")])).status == 403
    assert len(upstream.received) == 2
