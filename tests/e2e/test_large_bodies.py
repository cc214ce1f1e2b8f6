"""100 MB bodies through a gateway subprocess: byte-exact both ways, memory flat."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h11
import trio

from tests.helpers import GatewayProcess, connect, free_port, raw_serve, wait_port

BODY_BYTES = 100 * 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB, repeated
MEMORY_SLACK_KB = 48 * 1024  # buffers are 64 KiB per direction; this is generous slack


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing")


async def streaming_upstream(stream: trio.SocketStream) -> None:
    """Hashes the request body as it arrives; answers with the digest, then (for GET
    /download) a chunked body of BODY_BYTES, produced block by block."""
    conn = h11.Connection(h11.SERVER)
    async with stream:
        while True:
            digest = hashlib.sha256()
            size = 0
            request = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    digest.update(event.data)
                    size += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            assert request is not None
            if request.target == b"/download":
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])))
                for _ in range(BODY_BYTES // len(BLOCK)):
                    await stream.send_all(conn.send(h11.Data(data=BLOCK)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
            else:
                body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
                headers = [("content-length", str(len(body)))]
                await stream.send_all(
                    conn.send(h11.Response(status_code=200, headers=headers))
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
            conn.start_next_cycle()


async def exchange(
    stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, upload: bool
) -> tuple[bytes, int, str]:
    """Send `request` (with a BODY_BYTES body when `upload`), return (head status, size, sha256)."""
    await stream.send_all(conn.send(request))
    if upload:
        for _ in range(BODY_BYTES // len(BLOCK)):
            await stream.send_all(conn.send(h11.Data(data=BLOCK)))
    await stream.send_all(conn.send(h11.EndOfMessage()))
    digest = hashlib.sha256()
    size = 0
    status = b""
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = str(event.status_code).encode()
        elif isinstance(event, h11.Data):
            digest.update(event.data)
            size += len(event.data)
            if size < 4096:
                body += event.data
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            if upload:
                doc = json.loads(body)
                return status, doc["size"], doc["sha256"]
            return status, size, digest.hexdigest()


async def test_100mb_bodies_stream_with_flat_memory(
    tmp_path: Path, gateway_process: list[GatewayProcess], nursery: trio.Nursery
) -> None:
    port = await nursery.start(raw_serve, streaming_upstream)
    address = f"127.0.0.1:{free_port()}"
    config = {
        "server": {"listen": address, "access_log": False},
        "routes": [{"id": "big", "uri": "/*", "upstream": {"nodes": {f"127.0.0.1:{port}": 1}}}],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    process = GatewayProcess(path, tmp_path)
    gateway_process.append(process)
    process.start()
    await wait_port(address)

    expected = hashlib.sha256()
    for _ in range(BODY_BYTES // len(BLOCK)):
        expected.update(BLOCK)
    expected_hex = expected.hexdigest()

    stream = await connect(address)
    conn = h11.Connection(h11.CLIENT)
    async with stream:
        # Warm up, then take the baseline.
        status, _, _ = await exchange(
            stream, conn, h11.Request(method="GET", target="/warm", headers=[("host", "x")]), False
        )
        assert status == b"200"
        baseline = rss_kb(process.pid, "VmRSS")

        length = [("host", "x"), ("content-length", str(BODY_BYTES))]
        chunked = [("host", "x"), ("transfer-encoding", "chunked")]
        for headers in (length, chunked):
            request = h11.Request(method="POST", target="/upload", headers=headers)
            status, size, digest = await exchange(stream, conn, request, True)
            assert (status, size, digest) == (b"200", BODY_BYTES, expected_hex)

        request = h11.Request(method="GET", target="/download", headers=[("host", "x")])
        status, size, digest = await exchange(stream, conn, request, False)
        assert (status, size, digest) == (b"200", BODY_BYTES, expected_hex)

    peak = rss_kb(process.pid, "VmHWM")
    print(f"gateway RSS baseline {baseline} kB, peak {peak} kB")
    assert peak - baseline < MEMORY_SLACK_KB, (
        f"gateway grew from {baseline} kB to a peak of {peak} kB"
    )
