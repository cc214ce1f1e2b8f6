"""datadog: six DogStatsD metrics per request, tagged as APISIX tags them, over UDP to the
agent named by plugin_metadata."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.helpers import Upstream, config_for, request, start_gateway


@pytest.fixture
def agent() -> Iterator[socket.socket]:
    """A UDP socket standing in for the DogStatsD agent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock


async def datagrams(sock: socket.socket, count: int) -> list[str]:
    out: list[str] = []
    with trio.fail_after(10):
        while len(out) < count:
            await trio.lowlevel.wait_readable(sock)
            out.append(sock.recv(65536).decode())
    return out


def metric(line: str) -> tuple[str, float, str, list[str]]:
    """(name, value, type, tags) of one DogStatsD line."""
    head, _, tags = line.partition("|#")
    name, _, rest = head.partition(":")
    value, _, kind = rest.partition("|")
    return name, float(value), kind, tags.split(",") if tags else []


async def test_metrics_per_request(
    nursery: trio.Nursery, upstream: Upstream, agent: socket.socket
) -> None:
    port = agent.getsockname()[1]
    node = {"nodes": {upstream.address: 1}}
    conf: dict[str, Any] = {"batch_max_size": 1, "constant_tags": ["team:api"]}
    routes = [
        {"id": "r1", "name": "pets", "uri": "/pets/*", "upstream": node,
         "plugins": {"datadog": conf, "key-auth": {}}},
        {"id": "r2", "uri": "/ids/*", "service_id": "s1",
         "plugins": {"datadog": {**conf, "prefer_name": False, "include_path": True,
                                 "include_method": True}}},
    ]  # fmt: skip
    config = config_for(
        routes,
        services=[{"id": "s1", "name": "svc", "upstream": node}],
        consumers=[{"username": "jack", "plugins": {"key-auth": {"key": "jack-key"}}}],
        plugin_metadata=[
            {"id": "datadog", "host": "127.0.0.1", "port": port, "namespace": "gw",
             "constant_tags": ["source:test"]}
        ],
    )  # fmt: skip
    _, gw = await start_gateway(nursery, config)

    resp = await request(gw, "POST", "/pets/1", headers=[("apikey", "jack-key")], body=b"12345")
    assert resp.status == 200
    lines = await datagrams(agent, 6)
    metrics = {m[0]: m for m in map(metric, lines)}
    assert sorted(metrics) == [
        "gw.apisix.latency",
        "gw.egress.size",
        "gw.ingress.size",
        "gw.request.counter",
        "gw.request.latency",
        "gw.upstream.latency",
    ]
    assert metrics["gw.request.counter"][1:3] == (1, "c")
    assert metrics["gw.request.latency"][2] == "h"
    assert metrics["gw.ingress.size"][2] == "ms"
    total, upstream_ms, own = (
        metrics[f"gw.{n}.latency"][1] for n in ("request", "upstream", "apisix")
    )
    assert 0 <= upstream_ms <= total
    assert own == pytest.approx(total - upstream_ms, abs=0.002)
    assert metrics["gw.ingress.size"][1] > 5  # the head and the body
    assert metrics["gw.egress.size"][1] > len(resp.body)
    host = upstream.address.rpartition(":")[0]
    assert metrics["gw.request.counter"][3] == [
        "source:test", "team:api", "route_name:pets", "consumer:jack", f"balancer_ip:{host}",
        "response_status:200", "scheme:http",
    ]  # fmt: skip

    # Ids instead of names, the path pattern and the method; a gateway answer has no
    # upstream, so no upstream latency and no node.
    resp = await request(gw, "GET", "/ids/x")
    assert resp.status == 200
    tags = metric((await datagrams(agent, 6))[0])[3]
    assert tags == [
        "source:test", "team:api", "route_name:r2", "service_name:s1", f"balancer_ip:{host}",
        "response_status:200", "scheme:http", "path:/ids/*", "method:GET",
    ]  # fmt: skip
    resp = await request(gw, "GET", "/pets/2")
    assert resp.status == 401
    lines = await datagrams(agent, 5)
    assert not any(line.startswith("gw.upstream.latency") for line in lines)
    assert "response_status:401" in metric(lines[0])[3]
    assert not any(t.startswith("balancer_ip") for t in metric(lines[0])[3])


async def test_metadata_defaults(nursery: trio.Nursery, upstream: Upstream) -> None:
    """Without plugin_metadata: 127.0.0.1:8125, namespace apisix, tag source:apisix."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("127.0.0.1", 8125))
        except OSError:
            pytest.skip("port 8125 is taken on this machine")
        sock.setblocking(False)
        routes = [{"id": "r", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}},
                   "plugins": {"datadog": {"batch_max_size": 1}}}]  # fmt: skip
        _, gw = await start_gateway(nursery, config_for(routes))
        assert (await request(gw, target="/x")).status == 200
        name, value, kind, tags = metric((await datagrams(sock, 6))[0])
        assert (name, value, kind) == ("apisix.request.counter", 1, "c")
        assert tags[0] == "source:apisix"
