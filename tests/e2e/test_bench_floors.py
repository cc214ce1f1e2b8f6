"""The benchmark's floors (bench/trio_pipe.py) relay real traffic correctly: a floor that
dropped or mangled requests would make the figures it sets beside the gateway meaningless."""

from __future__ import annotations

import subprocess
import sys

import h11
import pytest
import trio

from tests.helpers import ROOT, Upstream, connect, free_port, read_response, wait_port


@pytest.mark.parametrize("mode", [[], ["--h11"]], ids=["L4 pipe", "trio+h11 floor"])
async def test_floor_relays_requests_and_bodies_on_one_connection(
    upstream: Upstream, mode: list[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, str(ROOT / "bench/trio_pipe.py"), "--port", address.split(":")[1]]
    process = await trio.lowlevel.open_process(
        [*argv, "--upstream", upstream.address, *mode],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_port(address)
        stream = await connect(address)
        with trio.fail_after(30):  # a floor that loses bytes would leave the test waiting
            await _three_requests(stream)
        assert [r.target for r in upstream.received] == [b"/a", b"/b", b"/c?d=1"]
        assert [r.header(b"x-seen") for r in upstream.received] == [b"/a", b"/b", b"/c?d=1"]
        assert len({r.connection for r in upstream.received}) == 1  # one kept connection
    finally:
        process.kill()
        await process.wait()


async def _three_requests(stream: trio.SocketStream) -> None:
    async with stream:
        for method, target, body in [
            ("GET", "/a", b""),
            ("POST", "/b", b"x" * 200_000),
            ("GET", "/c?d=1", b""),
        ]:
            conn = h11.Connection(h11.CLIENT)
            headers = [("host", "floor.test"), ("x-seen", target)]
            if body:
                headers.append(("content-length", str(len(body))))
            data = conn.send(h11.Request(method=method, target=target, headers=headers))
            data += conn.send(h11.Data(data=body)) if body else b""
            await stream.send_all(data + conn.send(h11.EndOfMessage()))
            response = await read_response(stream, conn)
            assert response.status == 200
            assert response.json()["target"] == target
            assert response.json()["body_length"] == len(body)
