"""Redis as the distributed engine: two gateway processes share one quota; Redis Cluster."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import (
    GatewayProcess,
    Upstream,
    config_for,
    free_port,
    request,
    start_gateway,
    wait_port,
)
from tests.redis_server import RedisServer, redis_command


async def test_two_gateway_processes_share_one_quota(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream, redis: RedisServer
) -> None:
    conf = {
        "count": 6,
        "time_window": 60,
        "policy": "redis",
        "redis_host": "127.0.0.1",
        "redis_port": redis.port,
        "key_type": "constant",
        "key": "everyone",
    }
    addresses = []
    for name in ("a", "b"):
        address = f"127.0.0.1:{free_port()}"
        config = {
            "server": {"listen": address, "access_log": False},
            "routes": [
                {
                    "id": "r",
                    "uri": "/*",
                    "upstream": {"nodes": {upstream.address: 1}},
                    "plugins": {"limit-count": conf},
                }
            ],
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        workdir = tmp_path / name
        workdir.mkdir()
        process = GatewayProcess(path, workdir)
        gateway_process.append(process)
        process.start()
        addresses.append(address)
    for address in addresses:
        await wait_port(address)
    results: list[int] = []

    async def hit(address: str) -> None:
        results.append((await request(address)).status)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(hit, addresses[i % 2])
    assert results.count(200) == 6
    assert results.count(503) == 14
    assert len(upstream.received) == 6


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    base = tmp_path_factory.mktemp("cluster")
    nodes = [
        RedisServer(
            base / str(i),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{i}.conf",
            port=cluster_port(),
        )
        for i in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in nodes:
            for _ in range(500):
                if b"cluster_state:ok" in redis_command(node.port, "CLUSTER", "INFO"):
                    break
                trio.run(trio.sleep, 0.02)
            else:
                raise RuntimeError("redis cluster did not become ready")
        yield [n.port for n in nodes]
    finally:
        for node in nodes:
            node.stop()


async def test_redis_cluster_policy(
    nursery: trio.Nursery, upstream: Upstream, redis_cluster: list[int]
) -> None:
    conf: dict[str, Any] = {
        "count": 3,
        "time_window": 60,
        "policy": "redis-cluster",
        "redis_cluster_nodes": [f"127.0.0.1:{p}" for p in redis_cluster],
        "redis_cluster_name": "test",
        "key": "http_x_user",
    }
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": conf},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    # Many users, so their keys land on all three nodes; each has its own quota of 3.
    for user in range(12):
        got = [(await request(gw, headers=[("x-user", f"u{user}")])).status for _ in range(4)]
        assert got == [200, 200, 200, 503], user


async def test_sync_interval_counts_locally_and_pushes_to_redis(
    nursery: trio.Nursery, upstream: Upstream, redis: RedisServer
) -> None:
    conf = {
        "count": 4,
        "time_window": 60,
        "policy": "redis",
        "redis_host": "127.0.0.1",
        "redis_port": redis.port,
        "sync_interval": 0.05,
        "key_type": "constant",
        "key": "k",
    }
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": conf},
    }
    _, gw = await start_gateway(nursery, config_for([route]))
    assert [(await request(gw)).status for _ in range(5)] == [200, 200, 200, 200, 503]
    # The local increments reach Redis in the background.
    with trio.fail_after(10):
        while True:
            keys = redis_command(redis.port, "KEYS", "gateway:limit-count:*")
            if keys.startswith(b"*1"):
                key = keys.split(b"\r\n")[2].decode()
                if redis_command(redis.port, "GET", key).split(b"\r\n")[1] == b"4":
                    break
            await trio.sleep(0.05)
