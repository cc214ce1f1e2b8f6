"""prometheus: the routes' requests counted as APISIX's plugin counts them, served in the
Prometheus text format on the export address, never on the proxy's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import trio

from gateway.config.load import load
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from tests.helpers import (
    GatewayProcess,
    Upstream,
    config_for,
    exchange_raw,
    free_port,
    request,
    start_gateway,
)

EXPORT_URI = "/apisix/prometheus/metrics"


def samples(text: str) -> dict[str, float]:
    """Each sample line of a scrape, `name{labels}` -> value."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def scrape(address: str, target: str = EXPORT_URI) -> tuple[int, str, dict[str, float]]:
    resp = await request(address, target=target)
    text = resp.body.decode()
    if resp.status != 200:
        return resp.status, text, {}
    assert resp.header(b"content-type") == b"text/plain; version=0.0.4; charset=utf-8"
    return resp.status, text, samples(text)


def prometheus_config(upstream: Upstream, port: int, **attr: Any) -> dict[str, Any]:
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {
            "id": "m",
            "uris": ["/m/*", "/other"],
            "upstream": node,
            "plugins": {"prometheus": {}, "key-auth": {}},
        },
        {"id": "plain", "uri": "/plain", "upstream": node},
        {
            "id": "n",
            "name": "Named",
            "uri": "/named",
            "hosts": ["api.test", "*.example.test"],
            "service_id": "s",
            "plugins": {"prometheus": {"prefer_name": True}},
        },
    ]
    services = [{"id": "s", "name": "Shop", "upstream": node}]
    consumers = [{"username": "jack", "plugins": {"key-auth": {"key": "jack-key"}}}]
    plugin_attr = {"prometheus": {"export_addr": {"ip": "127.0.0.1", "port": port}, **attr}}
    return config_for(routes, services=services, consumers=consumers, plugin_attr=plugin_attr)


async def test_requests_are_counted_by_apisix_labels(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    port = free_port()
    export = f"127.0.0.1:{port}"
    _, gw = await start_gateway(nursery, prometheus_config(upstream, port))
    key = [("apikey", "jack-key")]
    for target, headers in [
        ("/m/a", key),
        ("/m/b", key),
        ("/m/a", []),
        ("/other", key),
        ("/plain", []),
        ("/nowhere", []),
    ]:
        await request(gw, target=target, headers=headers)
    resp = await request(gw, target="/named", headers=[("Host", "shop.example.test")])
    assert resp.status == 200

    status, text, got = await scrape(export)
    assert status == 200
    jack = 'route="m",service="",consumer="jack",node="127.0.0.1"'
    http = "apisix_http_status"
    assert (
        got[f'{http}{{code="200",route="m",matched_uri="/m/*",matched_host="",{jack[10:]}}}'] == 2
    )
    assert (
        got[f'{http}{{code="200",route="m",matched_uri="/other",matched_host="",{jack[10:]}}}'] == 1
    )
    assert (
        got[
            f'{http}{{code="401",route="m",matched_uri="/m/*",matched_host="",'
            'service="",consumer="",node=""}'
        ]
        == 1
    )
    assert (
        got[
            f'{http}{{code="200",route="Named",matched_uri="/named",'
            'matched_host="*.example.test",service="Shop",consumer="",node="127.0.0.1"}'
        ]
        == 1
    )
    assert 'route="plain"' not in text
    assert 'code="404"' not in text  # no route, no route plugins
    # Latency: request, upstream and gateway time, one histogram each.
    for kind in ("request", "upstream", "apisix"):
        labels = f'type="{kind}",{jack}'
        assert got[f"apisix_http_latency_count{{{labels}}}"] == 3
        assert got[f'apisix_http_latency_bucket{{{labels},le="+Inf"}}'] == 3
        buckets = [
            v for k, v in got.items() if k.startswith(f"apisix_http_latency_bucket{{{labels},")
        ]
        assert buckets == sorted(buckets)
        assert got[f"apisix_http_latency_sum{{{labels}}}"] >= 0
    refused = 'route="m",service="",consumer="",node=""'
    assert got[f'apisix_http_latency_count{{type="request",{refused}}}'] == 1
    assert f'apisix_http_latency_count{{type="upstream",{refused}}}' not in got
    # Bandwidth: bytes in (each head is some 60 bytes) and out (heads and bodies).
    assert got[f'apisix_bandwidth{{type="ingress",{jack}}}'] > 3 * 40
    assert got[f'apisix_bandwidth{{type="egress",{jack}}}'] > 3 * 100
    # The server's own figures: every request and connection, counted or not.
    assert got["apisix_http_requests_total"] >= 7
    assert got['apisix_nginx_http_current_connections{state="accepted"}'] >= 7
    assert re.search(r'^apisix_node_info\{hostname="[^"]+"\} 1$', text, re.M)

    # Only the export URI, and only on the export address.
    assert (await scrape(export, "/other"))[0] == 404
    assert (await request(gw, target=EXPORT_URI)).status == 404


async def test_prefix_and_uri_from_plugin_attr(nursery: trio.Nursery, upstream: Upstream) -> None:
    port = free_port()
    config = prometheus_config(upstream, port, export_uri="/metrics", metric_prefix="gw_")
    _, gw = await start_gateway(nursery, config)
    await request(gw, target="/m/a", headers=[("apikey", "jack-key")])
    status, text, got = await scrape(f"127.0.0.1:{port}", "/metrics")
    assert status == 200
    assert "apisix_" not in text
    assert got["gw_http_requests_total"] == 1
    assert any(k.startswith('gw_http_status{code="200",route="m"') for k in got)


async def test_counts_survive_a_reload_that_moves_the_export(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    first, second = free_port(), free_port()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(prometheus_config(upstream, first)))
    registry = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=registry), registry)
    addresses = await nursery.start(gateway.serve)
    await request(addresses[0], target="/m/a", headers=[("apikey", "jack-key")])
    path.write_text(json.dumps(prometheus_config(upstream, second)))
    assert await gateway.reload()
    await request(addresses[0], target="/m/a", headers=[("apikey", "jack-key")])
    _, _, got = await scrape(f"127.0.0.1:{second}")
    assert (
        got[
            'apisix_http_latency_count{type="request",route="m",service="",consumer="jack",node="127.0.0.1"}'
        ]
        == 2
    )
    # The old export address is closed.
    with trio.fail_after(10):
        try:
            await trio.open_tcp_stream("127.0.0.1", first)
        except OSError:
            pass
        else:
            raise AssertionError("the old export address still accepts")


async def scrape_until(address: str, name: str, at_least: float) -> dict[str, float]:
    """Scrapes until sample `name` reaches `at_least` (workers share their counts once a
    second); the last scrape."""
    with trio.fail_after(30):
        while True:
            try:
                status, _, got = await scrape(address)
            except OSError:
                status, got = 0, {}
            if status == 200 and got.get(name, 0) >= at_least:
                return got
            await trio.sleep(0.1)


async def start_workers(
    config: dict[str, Any], address: str, tmp_path: Path, started: list[GatewayProcess]
) -> GatewayProcess:
    """`config` served by two worker processes on `address`, once both listen."""
    config["server"].update(listen=address, workers=2)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    process = GatewayProcess(path, tmp_path)
    started.append(process)
    process.start()
    await process.wait_log("gateway listening", count=2)
    return process


async def test_several_workers_are_summed_and_a_restart_keeps_the_counts(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    export_port = free_port()
    export = f"127.0.0.1:{export_port}"
    address = f"127.0.0.1:{free_port()}"
    config = prometheus_config(upstream, export_port)
    process = await start_workers(config, address, tmp_path, gateway_process)
    workers = _children(process.pid)
    assert len(workers) == 2

    # New connections each time: SO_REUSEPORT spreads them over both workers.
    for _ in range(40):
        resp = await request(address, target="/m/a", headers=[("apikey", "jack-key")])
        assert resp.status == 200
    jack = 'route="m",service="",consumer="jack",node="127.0.0.1"'
    count = f'apisix_http_latency_count{{type="request",{jack}}}'
    got = await scrape_until(export, count, 40)
    assert got[count] == 40
    assert got["apisix_http_requests_total"] >= 40

    # A worker killed without a last word (it had some of the 40 new connections: the
    # kernel spreads them over both): its successor carries on from its counts.
    os.kill(min(workers), signal.SIGKILL)
    await process.wait_log("restarting")
    await process.wait_log("gateway listening", count=3)
    for _ in range(10):
        assert (
            await request(address, target="/m/a", headers=[("apikey", "jack-key")])
        ).status == 200
    got = await scrape_until(export, count, 50)
    assert got[count] == 50
    process.signal(signal.SIGTERM)
    assert await process.wait_exit() == 0


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


async def test_metrics_through_a_public_api_route(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """`enable_export_server: false`: no export server; a route with public-api (no
    upstream needed) serves the export, behind key-auth when the route asks for it, at its
    own path with `uri`. Other paths and methods of such a route get 404."""
    export_port = free_port()
    config = prometheus_config(upstream, export_port, enable_export_server=False)
    config["routes"] += [
        {"id": "open", "uri": EXPORT_URI, "plugins": {"public-api": {}}},
        {
            "id": "keyed",
            "uri": "/metrics",
            "plugins": {"public-api": {"uri": EXPORT_URI}, "key-auth": {}},
        },
        {"id": "elsewhere", "uri": "/apisix/other", "plugins": {"public-api": {}}},
    ]
    _, gw = await start_gateway(nursery, config)
    assert (await request(gw, target="/m/a", headers=[("apikey", "jack-key")])).status == 200
    status, _, got = await scrape(gw)
    assert status == 200
    jack = 'route="m",service="",consumer="jack",node="127.0.0.1"'
    assert got[f'apisix_http_latency_count{{type="request",{jack}}}'] == 1
    assert (await request(gw, target="/metrics")).status == 401
    resp = await request(gw, target="/metrics", headers=[("apikey", "jack-key")])
    assert resp.status == 200
    assert samples(resp.body.decode())[f'apisix_http_latency_count{{type="request",{jack}}}'] == 1
    assert (await request(gw, target="/apisix/other")).status == 404
    assert (await request(gw, method="POST", target=EXPORT_URI)).status == 404
    with trio.fail_after(10):
        try:
            await trio.open_tcp_stream("127.0.0.1", export_port)
        except OSError:
            pass
        else:
            raise AssertionError("an export server listens though it is disabled")


async def test_several_workers_through_public_api(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    """Each worker's public-api route serves every worker's counts (as shared once a
    second), as the export server does."""
    address = f"127.0.0.1:{free_port()}"
    config = prometheus_config(upstream, free_port(), enable_export_server=False)
    config["routes"].append({"id": "api", "uri": EXPORT_URI, "plugins": {"public-api": {}}})
    process = await start_workers(config, address, tmp_path, gateway_process)
    for _ in range(40):  # new connections: spread over both workers
        resp = await request(address, target="/m/a", headers=[("apikey", "jack-key")])
        assert resp.status == 200
    jack = 'route="m",service="",consumer="jack",node="127.0.0.1"'
    count = f'apisix_http_latency_count{{type="request",{jack}}}'
    for _ in range(4):  # whichever worker answers
        got = await scrape_until(address, count, 40)
        assert got[count] == 40
    process.signal(signal.SIGTERM)
    assert await process.wait_exit() == 0


async def test_a_route_without_upstream_whose_plugin_stood_aside(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """public-api left out by its `_meta.filter`: nothing to proxy to, 503 as in APISIX."""
    config = prometheus_config(upstream, free_port(), enable_export_server=False)
    meta = {"filter": [["arg_show", "==", "1"]]}
    config["routes"].append(
        {"id": "api", "uri": EXPORT_URI, "plugins": {"public-api": {"_meta": meta}}}
    )
    _, gw = await start_gateway(nursery, config)
    assert (await scrape(gw, EXPORT_URI + "?show=1"))[0] == 200
    resp = await request(gw, target=EXPORT_URI)
    assert resp.status == 503
    assert resp.json() == {"error_msg": "missing upstream configuration in Route or Service"}


async def test_node_status_through_public_api(nursery: trio.Nursery, upstream: Upstream) -> None:
    """`/apisix/status` (APISIX's node-status API): stub_status' figures as strings."""
    config = prometheus_config(upstream, free_port(), enable_export_server=False)
    config["routes"].append(
        {"id": "status", "uri": "/apisix/status", "plugins": {"public-api": {}}}
    )
    _, gw = await start_gateway(nursery, config)
    for _ in range(3):
        assert (await request(gw, target="/plain")).status == 200
    resp = await request(gw, target="/apisix/status")
    assert resp.status == 200
    body = resp.json()
    status = body["status"]
    assert set(status) == {
        "active",
        "accepted",
        "handled",
        "total",
        "reading",
        "writing",
        "waiting",
    }
    assert all(isinstance(v, str) for v in status.values())
    assert int(status["total"]) == 4  # the three, and this one
    assert int(status["accepted"]) == int(status["handled"]) == 4
    assert status["active"] == "1"
    assert len(body["id"]) == 36
    second = (await request(gw, target="/apisix/status")).json()
    assert second["id"] == body["id"]
    assert second["status"]["total"] == "5"
    # Requests refused before routing count once each, wherever they are refused.
    for data in (
        b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",  # once parsed
        b"GET /../x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",  # before h11 parses it
    ):
        assert not (await exchange_raw(gw, data)).startswith(b"HTTP/1.1 2")
    third = (await request(gw, target="/apisix/status")).json()
    assert third["status"]["total"] == "10"
