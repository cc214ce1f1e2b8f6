"""proxy-mirror: a copy of each request goes to another server, whose answer nobody waits
for, as APISIX's plugin (nginx's mirror) sends it."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import Received, Upstream, config_for, free_port, request, start_gateway


class Mirror:
    """A mirror server that counts what it got."""

    def __init__(self) -> None:
        self.server = Upstream(responder=self._respond, name="mirror")
        self._got = trio.Event()

    async def _respond(self, req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self._got.set()
        return 500, [], b"mirror answers are ignored"

    async def wait(self, count: int) -> list[Received]:
        with trio.fail_after(20):
            while len(self.server.received) < count:
                self._got = trio.Event()
                await self._got.wait()
        return self.server.received


async def test_requests_are_mirrored(nursery: trio.Nursery, upstream: Upstream) -> None:
    mirror = Mirror()
    await nursery.start(mirror.server.serve)
    host = f"http://{mirror.server.address}"
    node = {"nodes": {upstream.address: 1}}

    def route(rid: str, conf: dict[str, Any]) -> dict[str, Any]:
        return {"id": rid, "uri": f"/{rid}/*", "upstream": node, "plugins": {"proxy-mirror": conf}}

    routes = [
        route("same", {"host": host}),
        route("prefix", {"host": host, "path": "/shadow", "path_concat_mode": "prefix"}),
        route("replace", {"host": host, "path": "/shadow"}),
        route("down", {"host": f"http://127.0.0.1:{free_port()}"}),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))

    resp = await request(gw, target="/same/a?x=1", headers=[("X-Trace", "t1")])
    assert resp.status == 200  # the upstream's answer, not the mirror's
    (copy,) = await mirror.wait(1)
    assert (copy.method, copy.target, copy.header(b"x-trace")) == (b"GET", b"/same/a?x=1", b"t1")

    resp = await request(gw, "POST", "/same/b", body=b"payload")
    assert resp.status == 200
    copy = (await mirror.wait(2))[-1]
    assert (copy.method, copy.body) == (b"POST", b"payload")
    assert upstream.received[-1].body == b"payload"

    await request(gw, target="/prefix/c?y=2")
    assert (await mirror.wait(3))[-1].target == b"/shadow/prefix/c?y=2"
    await request(gw, target="/replace/d?z=3")
    assert (await mirror.wait(4))[-1].target == b"/shadow?z=3"

    # A mirror that is down changes nothing for the client.
    assert (await request(gw, target="/down/e")).status == 200
