"""Upstream health checks (APISIX's `checks`) against real upstream servers: active probes
take a failing node out and bring it back, passive checks judge the proxied answers, and a
reload starts the new config's probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from gateway.config.load import load
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from tests.helpers import Received, Upstream, config_for, request, start_gateway
from tests.tls_certs import serve_tls


class Probed:
    """An upstream whose `/health` answers `health_status`, counting the probes; other
    requests get `status`."""

    def __init__(self, name: str, health_status: int = 200, status: int = 200) -> None:
        self.health_status = health_status
        self.status = status
        self.probes = 0
        self._waiters: list[tuple[int, trio.Event]] = []
        self.server = Upstream(responder=self._respond, name=name)

    async def _respond(self, req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if req.target.startswith(b"/health"):
            self.probes += 1
            for count, event in self._waiters:
                if self.probes >= count:
                    event.set()
            return self.health_status, [], b"probe"
        return self.status, [], self.server.name.encode()

    async def wait_probes(self, more: int) -> None:
        """Wait until `more` further probes have arrived."""
        event = trio.Event()
        self._waiters.append((self.probes + more, event))
        with trio.fail_after(30):
            await event.wait()

    def served(self) -> int:
        return sum(1 for r in self.server.received if not r.target.startswith(b"/health"))


def checked(nodes: list[str], checks: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": dict.fromkeys(nodes, 1), "checks": checks},
    }


def passive_only(http_failures: int) -> dict[str, Any]:
    """Checks where passive ones decide: the active probes (required) wait 300 s."""
    return {
        "active": {
            "http_path": "/health",
            "healthy": {"interval": 300},
            "unhealthy": {"interval": 300},
        },
        "passive": {"unhealthy": {"http_statuses": [500], "http_failures": http_failures}},
    }


ACTIVE = {
    "http_path": "/health",
    "healthy": {"interval": 0.1, "successes": 2},
    "unhealthy": {"interval": 0.1, "http_failures": 2},
}


async def test_active_checks_take_a_failing_node_out_and_bring_it_back(
    nursery: trio.Nursery,
) -> None:
    good, sick = Probed("good"), Probed("sick", health_status=500)
    for up in (good, sick):
        await nursery.start(up.server.serve)
    route = checked([good.server.address, sick.server.address], {"active": ACTIVE})
    _, gw = await start_gateway(nursery, config_for([route]))
    # Probes of one node go one after another: once the third has arrived, the first two
    # failures have been counted.
    await sick.wait_probes(3)
    for _ in range(8):
        resp = await request(gw, target="/x")
        assert resp.status == 200
        assert resp.body == b"good"
    assert sick.served() == 0
    sick.health_status = 200
    await sick.wait_probes(3)
    bodies = {(await request(gw, target="/x")).body for _ in range(8)}
    assert bodies == {b"good", b"sick"}
    probe = next(r for r in sick.server.received if r.target == b"/health")
    assert probe.method == b"GET"
    assert probe.header(b"host") == sick.server.address.encode()


async def test_https_probes_of_an_https_upstream(nursery: trio.Nursery, tmp_path: Path) -> None:
    good, sick = Probed("good"), Probed("sick", health_status=500)
    for up in (good, sick):
        (tmp_path / up.server.name).mkdir()
        await serve_tls(nursery, up.server, tmp_path / up.server.name)
    active = {**ACTIVE, "type": "https", "https_verify_certificate": False}
    route = checked([good.server.address, sick.server.address], {"active": active})
    route["upstream"]["scheme"] = "https"
    _, gw = await start_gateway(nursery, config_for([route]))
    await sick.wait_probes(3)
    for _ in range(6):
        resp = await request(gw, target="/x")
        assert (resp.status, resp.body) == (200, b"good")
    assert sick.served() == 0


async def test_passive_checks_judge_the_proxied_answers(nursery: trio.Nursery) -> None:
    """Two 500s in a row from a node take it out; active probes, slow here, would bring it
    back."""
    good, flaky = Probed("good"), Probed("flaky", status=500)
    for up in (good, flaky):
        await nursery.start(up.server.serve)
    checks = passive_only(http_failures=2)
    route = checked([good.server.address, flaky.server.address], checks)
    _, gw = await start_gateway(nursery, config_for([route]))
    statuses = [(await request(gw, target="/x")).status for _ in range(10)]
    assert statuses.count(500) == 2
    assert statuses[4:] == [200] * 6
    assert flaky.served() == 2
    assert good.served() == 8


async def test_a_tcp_probe_only_connects(nursery: trio.Nursery) -> None:
    """`type: tcp`: a node that accepts connections is healthy whatever it answers; one that
    refuses them is taken out after `tcp_failures`."""
    good = Probed("good", health_status=500)
    await nursery.start(good.server.serve)
    with trio.socket.socket() as closed:
        await closed.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{closed.getsockname()[1]}"
    checks = {
        "active": {
            "type": "tcp",
            "healthy": {"interval": 0.1},
            "unhealthy": {"interval": 0.1, "tcp_failures": 1},
        }
    }
    route = checked([dead, good.server.address], checks)
    gateway, gw = await start_gateway(nursery, config_for([route]))
    (probe,) = gateway.runtime.probes
    # A refused connect shows nowhere but in the node's health: watch it, within a deadline.
    with trio.fail_after(30):
        while probe.health.healthy(probe.nodes[0]):  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert probe.health.healthy(probe.nodes[1])
    assert good.probes == 0  # a tcp probe sends no request
    assert [(await request(gw, target="/x")).status for _ in range(4)] == [200] * 4


async def test_a_reload_starts_the_new_configs_probes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    first, second = Probed("first"), Probed("second")
    for up in (first, second):
        await nursery.start(up.server.serve)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_for([checked([first.server.address], {"active": ACTIVE})])))
    registry = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=registry), registry)
    await nursery.start(gateway.serve)
    await first.wait_probes(2)
    path.write_text(json.dumps(config_for([checked([second.server.address], {"active": ACTIVE})])))
    assert await gateway.reload()
    await second.wait_probes(2)
    seen = first.probes
    await second.wait_probes(3)
    assert first.probes <= seen + 1  # at most one probe was already on its way


async def test_a_reload_keeps_what_the_checks_found(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A node found unhealthy stays out after a reload that leaves its upstream's checks as
    they were (here a route is added); it is not sent requests again until probes run."""
    sick, good = Probed("sick", status=500), Probed("good")
    for up in (sick, good):
        await nursery.start(up.server.serve)
    checks = passive_only(http_failures=1)
    upstream = {
        "id": "u",
        "nodes": {sick.server.address: 1, good.server.address: 1},
        "checks": checks,
    }
    routes = [{"id": "r", "uri": "/*", "upstream_id": "u"}]
    config = config_for(routes, upstreams=[upstream])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    registry = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=registry), registry)
    gw = (await nursery.start(gateway.serve))[0]
    assert [(await request(gw, target="/x")).status for _ in range(4)] == [500, 200, 200, 200]
    assert sick.served() == 1
    config["routes"].append({"id": "more", "uri": "/more", "upstream_id": "u"})
    path.write_text(json.dumps(config))
    assert await gateway.reload()
    assert [(await request(gw, target="/x")).status for _ in range(4)] == [200] * 4
    assert sick.served() == 1


async def test_traffic_split_upstreams_are_probed_too(nursery: trio.Nursery) -> None:
    """An upstream only traffic-split sends to (inline or by id) has its checks run."""
    route_node, good, sick = Probed("route"), Probed("good"), Probed("sick", health_status=500)
    named = Probed("named", health_status=500)
    for up in (route_node, good, sick, named):
        await nursery.start(up.server.serve)
    inline = {
        "nodes": {good.server.address: 1, sick.server.address: 1},
        "checks": {"active": ACTIVE},
    }
    split = {"rules": [{"weighted_upstreams": [{"upstream": inline}]}]}
    routes = [
        {
            "id": "r",
            "uri": "/x",
            "upstream": {"nodes": {route_node.server.address: 1}},
            "plugins": {"traffic-split": split},
        },
        {
            "id": "n",
            "uri": "/n",
            "upstream": {"nodes": {route_node.server.address: 1}},
            "plugins": {
                "traffic-split": {"rules": [{"weighted_upstreams": [{"upstream_id": "u"}]}]}
            },
        },
    ]
    upstreams = [{"id": "u", "nodes": {named.server.address: 1}, "checks": {"active": ACTIVE}}]
    _, gw = await start_gateway(nursery, config_for(routes, upstreams=upstreams))
    await sick.wait_probes(3)
    await named.wait_probes(3)
    for _ in range(8):
        resp = await request(gw, target="/x")
        assert resp.status == 200
        assert resp.body == b"good"
    assert sick.served() == 0
    assert route_node.served() == 0
    assert route_node.probes == 0
