"""workflow over real sockets: the first rule whose `case` holds runs its action (return,
limit-count, limit-conn), as APISIX's plugin does."""

from __future__ import annotations

import trio

from tests.e2e.test_limit_conn import HeldUpstream, in_flight
from tests.helpers import Upstream, config_for, request, start_gateway


async def test_return_and_limit_count_by_case(nursery: trio.Nursery, upstream: Upstream) -> None:
    """Each rule's limit-count counts on its own, even with the same key."""
    once = {"time_window": 60, "key_type": "constant", "key": "all"}
    rules = [
        {"case": [["uri", "==", "/w/rejected"]], "actions": [["return", {"code": 403}]]},
        {
            "case": [["arg_app", "==", "a"]],
            "actions": [["limit-count", {"count": 2, "rejected_code": 429, **once}]],
        },
        {"actions": [["limit-count", {"count": 1, **once}]]},  # every other request
    ]
    route = {
        "id": "w",
        "uri": "/w/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"workflow": {"rules": rules}},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    resp = await request(gw, target="/w/rejected")
    assert (resp.status, resp.json()) == (403, {"error_msg": "rejected by workflow"})
    answers = [await request(gw, target="/w/x?app=a") for _ in range(3)]
    assert [r.status for r in answers] == [200, 200, 429]
    assert [r.header(b"x-ratelimit-remaining") for r in answers] == [b"1", b"0", b"0"]
    assert [(await request(gw, target="/w/y")).status for _ in range(2)] == [200, 503]
    assert [r.target for r in upstream.received] == [b"/w/x?app=a"] * 2 + [b"/w/y"]


async def test_limit_conn_gives_its_places_back(nursery: trio.Nursery) -> None:
    held = HeldUpstream()
    await nursery.start(held.upstream.serve)
    conn = {"conn": 1, "burst": 0, "default_conn_delay": 0.01, "key": "route_id"}
    rules = [{"case": [["uri", "==", "/held"]], "actions": [["limit-conn", conn]]}]
    route = {
        "id": "held",
        "uri": "/held",
        "upstream": {"nodes": {held.upstream.address: 1}, "timeout": {"read": 60}},
        "plugins": {"workflow": {"rules": rules}},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    early, final = await in_flight(nursery, gw, "/held", 3, held)
    assert early == [503, 503]  # the third waits at the upstream
    assert sorted(final) == [200, 503, 503]
    held.release.set()
    assert (await request(gw, target="/held")).status == 200  # its place was given back
