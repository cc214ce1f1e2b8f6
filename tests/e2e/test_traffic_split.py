"""traffic-split: some requests go to other upstreams, by `vars` rules and weights, as
APISIX's plugin splits them (canary and blue-green releases)."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import Upstream, config_for, request, start_gateway


async def test_rules_and_weights_choose_the_upstream(
    nursery: trio.Nursery, upstream: Upstream, second_upstream: Upstream
) -> None:
    stable, canary = upstream, second_upstream
    canary_inline = {"nodes": {canary.address: 1}}

    def route(rid: str, split: dict[str, Any], **plugins: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "uri": f"/{rid}",
            "upstream": {"nodes": {stable.address: 1}},
            "plugins": {"traffic-split": split, **plugins},
        }

    header_rule = {"vars": [["http_x_canary", "==", "1"]]}
    routes = [
        # A header sends a request to the inline upstream; the others stay on the route's.
        route(
            "header",
            {
                "rules": [
                    {
                        "match": [header_rule],
                        "weighted_upstreams": [{"upstream": canary_inline, "weight": 1}],
                    }
                ]
            },
        ),
        # Several `match` entries: any of them.
        route(
            "either",
            {
                "rules": [
                    {
                        "match": [
                            {"vars": [["arg_a", "==", "1"]]},
                            {"vars": [["arg_b", "==", "1"]]},
                        ],
                        "weighted_upstreams": [{"upstream_id": "canary"}],
                    }
                ]
            },
        ),
        # No `match`: every request, 3 to the named upstream for 1 to the route's.
        route(
            "weighted",
            {
                "rules": [
                    {"weighted_upstreams": [{"upstream_id": "canary", "weight": 3}, {"weight": 1}]}
                ]
            },
        ),
        # A weight of 0 is never chosen.
        route(
            "zero",
            {
                "rules": [
                    {"weighted_upstreams": [{"upstream_id": "canary", "weight": 0}, {"weight": 1}]}
                ]
            },
        ),
        # Rules in order: the first that matches decides.
        route(
            "ordered",
            {
                "rules": [
                    {
                        "match": [{"vars": [["arg_v", "==", "old"]]}],
                        "weighted_upstreams": [{"weight": 1}],
                    },
                    {"weighted_upstreams": [{"upstream_id": "canary"}]},
                ]
            },
        ),
        # Who is calling: the consumer's own traffic-split sends only its requests over.
        {
            "id": "keyed",
            "uri": "/keyed",
            "upstream": {"nodes": {stable.address: 1}},
            "plugins": {"key-auth": {}},
        },
    ]
    consumers = [
        {
            "username": "tester",
            "plugins": {
                "key-auth": {"key": "tester-key"},
                "traffic-split": {"rules": [{"weighted_upstreams": [{"upstream_id": "canary"}]}]},
            },
        },
        {"username": "user", "plugins": {"key-auth": {"key": "user-key"}}},
    ]
    upstreams = [{"id": "canary", "nodes": {canary.address: 1}}]
    config = config_for(routes, upstreams=upstreams, consumers=consumers)
    _, gw = await start_gateway(nursery, config)

    async def served_by(target: str, *headers: tuple[str, str]) -> str:
        before = len(stable.received), len(canary.received)
        resp = await request(gw, target=target, headers=list(headers))
        assert resp.status == 200, resp.body
        after = len(stable.received), len(canary.received)
        assert sum(after) == sum(before) + 1
        return "stable" if after[0] > before[0] else "canary"

    assert await served_by("/header") == "stable"
    assert await served_by("/header", ("X-Canary", "1")) == "canary"
    assert await served_by("/header", ("X-Canary", "2")) == "stable"
    assert [await served_by(t) for t in ("/either?a=1", "/either?b=1", "/either?c=1")] == [
        "canary",
        "canary",
        "stable",
    ]
    picks = [await served_by("/weighted") for _ in range(8)]
    assert sorted(picks) == ["canary"] * 6 + ["stable"] * 2, picks
    assert {await served_by("/zero") for _ in range(4)} == {"stable"}
    assert await served_by("/ordered?v=old") == "stable"
    assert await served_by("/ordered?v=new") == "canary"
    assert await served_by("/keyed", ("apikey", "tester-key")) == "canary"
    assert await served_by("/keyed", ("apikey", "user-key")) == "stable"
    # The path and the Host the chosen upstream sees are the request's, as for the route's.
    assert canary.received[-1].target == b"/keyed"
