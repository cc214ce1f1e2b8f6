"""Resource targets under load, measured on a gateway subprocess: idle keep-alive
connections, stalled readers on either side, exact limits at 500 concurrent requests, and
reloads and drains that lose no request."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import h11
import trio

from tests.e2e.test_large_bodies import rss_kb
from tests.helpers import (
    GatewayProcess,
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
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    routes = [{"id": "r", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}}}]
    process, gw = await start(tmp_path, gateway_process, routes)
    results: list[int] = []
    stop = trio.Event()

    async def client() -> None:
        while not stop.is_set():
            results.append((await request(gw)).status)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(client)
        for i in range(5):
            await trio.sleep(0.1)
            process.signal(signal.SIGHUP)
            await process.wait_log("config reloaded", count=i + 1)
        await trio.sleep(0.1)
        stop.set()
    assert len(results) > 50
    assert set(results) == {200}

    # SIGTERM while requests are in flight: every started request gets its answer.
    in_flight: list[int] = []

    async def one() -> None:
        # Refused, reset or closed by the kernel before the gateway accepted the connection
        # (the listener closed first): that request never started. Requests the gateway
        # accepted are served; test_hostile.py checks that deterministically.
        with contextlib.suppress(OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
            in_flight.append((await request(gw, target="/x")).status)

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one)
        await trio.sleep(0.01)
        process.signal(signal.SIGTERM)
    assert await process.wait_exit() == 0
    assert in_flight
    assert all(status == 200 for status in in_flight)
