"""Resource targets under load, measured on a gateway subprocess: idle keep-alive
connections, stalled readers on either side, exact limits at 500 concurrent requests, and
reloads and drains that lose no request."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import trio

from tests.e2e.test_large_bodies import rss_kb
from tests.helpers import (
    GatewayProcess,
    Received,
    Upstream,
    connect,
    free_port,
    raw_serve,
    read_response,
    request,
    wait_port,
)

MB = 1024 * 1024


async def start(
    tmp_path: Path, started: list[GatewayProcess], routes: list[dict[str, Any]], **server: Any
) -> tuple[GatewayProcess, str]:
    address = f"127.0.0.1:{free_port()}"
    config = {"server": {"listen": address, "access_log": False, **server}, "routes": routes}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    process = GatewayProcess(path, tmp_path)
    started.append(process)
    process.start()
    await wait_port(address)
    return process, address


async def test_idle_keepalive_connections_are_cheap(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    process, gw = await start(
        tmp_path,
        gateway_process,
        [{"id": "r", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}}}],
    )
    assert (await request(gw)).status == 200
    before = rss_kb(process.pid, "VmRSS")
    streams = []
    for _ in range(2000):
        stream = await connect(gw)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        streams.append(stream)
    for stream in streams:
        assert (await read_response(stream)).status == 200
    after = rss_kb(process.pid, "VmRSS")
    per_connection = (after - before) * 1024 / 2000
    print(f"2000 idle keep-alive connections: {per_connection / 1024:.1f} KiB each")
    assert per_connection < 50 * 1024
    for stream in streams:
        await stream.aclose()


async def test_stalled_readers_keep_memory_flat(
    tmp_path: Path, gateway_process: list[GatewayProcess], nursery: trio.Nursery
) -> None:
    stall = trio.Event()
    downloaded = [0]
    downloaded = [0]

    async def stalled_upstream(stream: trio.SocketStream) -> None:
        head = await stream.receive_some(65536)
        if head.startswith(b"GET"):
            # A 200 MB download the client will not read.
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (200 * MB))
            block = b"d" * 65536
            try:
                for _ in range(200 * MB // 65536):
                    await stream.send_all(block)
                    downloaded[0] += len(block)
                    downloaded[0] += len(block)
            except (trio.BrokenResourceError, OSError):
                return
        else:
            await stall.wait()  # an upload the upstream will not read

    port = await nursery.start(raw_serve, stalled_upstream)
    routes = [
        {
            "id": "r",
            "uri": "/*",
            "upstream": {
                "nodes": {f"127.0.0.1:{port}": 1},
                "timeout": {"connect": 5, "send": 60, "read": 60},
            },
        }
    ]
    process, gw = await start(tmp_path, gateway_process, routes)
    before = rss_kb(process.pid, "VmRSS")

    # Download to a client that never reads: the gateway must stop reading the upstream.
    download = await connect(gw)
    await download.send_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    # Upload to an upstream that never reads: the gateway must stop reading the client.
    upload = await connect(gw)
    await upload.send_all(
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (200 * MB)
    )
    sent = 0
    block = b"u" * 65536
    while sent < 200 * MB:
        with trio.move_on_after(2) as blocked:
            await upload.send_all(block)
            sent += len(block)
        if blocked.cancelled_caught:
            break  # the gateway stopped reading: backpressure
    await trio.sleep(1)
    growth_kb = rss_kb(process.pid, "VmRSS") - before
    print(
        f"stalled readers: upstream pushed {downloaded[0] // 1024} KiB, client pushed "
        f"{sent // 1024} KiB before backpressure; RSS grew {growth_kb} KiB"
    )
    assert downloaded[0] < 200 * MB  # backpressure reached the upstream
    assert sent < 200 * MB  # backpressure reached the client
    assert growth_kb < 50 * 1024
    stall.set()
    await trio.aclose_forcefully(download)
    await trio.aclose_forcefully(upload)


async def test_500_concurrent_against_a_limit_of_100(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    routes = [
        {
            "id": "r",
            "uri": "/*",
            "upstream": {"nodes": {upstream.address: 1}},
            "plugins": {
                "limit-count": {
                    "count": 100,
                    "time_window": 60,
                    "key_type": "constant",
                    "key": "all",
                }
            },
        }
    ]
    _, gw = await start(tmp_path, gateway_process, routes)
    results: list[int] = []

    async def one() -> None:
        results.append((await request(gw)).status)

    async with trio.open_nursery() as nursery:
        for _ in range(500):
            nursery.start_soon(one)
    assert results.count(200) == 100
    assert results.count(503) == 400
    assert len(upstream.received) == 100


async def test_reloads_and_drain_under_load_lose_no_request(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream, nursery: trio.Nursery
) -> None:
    routes = [{"id": "r", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}}}]
    process, gw = await start(tmp_path, gateway_process, routes)
    results: list[int] = []
    stop = trio.Event()

    async def client() -> None:
        while not stop.is_set():
            results.append((await request(gw)).status)

    async with trio.open_nursery() as load:
        for _ in range(20):
            load.start_soon(client)
        for i in range(5):
            await trio.sleep(0.1)
            process.signal(signal.SIGHUP)
            await process.wait_log("config reloaded", count=i + 1)
        await trio.sleep(0.1)
        stop.set()
    assert len(results) > 50
    assert set(results) == {200}

    # SIGTERM while 30 requests are in flight (all arrived at the upstream, which holds
    # them): every one gets its answer, then the process exits 0.
    in_flight: list[int] = []
    arrived = [0]
    all_arrived = trio.Event()
    release = trio.Event()

    async def held(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        arrived[0] += 1
        if arrived[0] == 30:
            all_arrived.set()
        await release.wait()
        return 200, [], b"done"

    holder = await nursery.start(Upstream(responder=held).serve)
    config = json.loads((tmp_path / "config.json").read_text())
    config["routes"].append(
        {"id": "held", "uri": "/held", "upstream": {"nodes": {holder.address: 1}}}
    )
    (tmp_path / "config.json").write_text(json.dumps(config))
    process.signal(signal.SIGHUP)
    await process.wait_log("config reloaded", count=6)

    async def one() -> None:
        in_flight.append((await request(gw, target="/held")).status)

    async with trio.open_nursery() as clients:
        for _ in range(30):
            clients.start_soon(one)
        with trio.fail_after(30):
            await all_arrived.wait()
        process.signal(signal.SIGTERM)
        await process.wait_log("draining")
        release.set()
    assert await process.wait_exit() == 0
    assert in_flight == [200] * 30
