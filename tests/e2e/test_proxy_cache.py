"""proxy-cache: answers kept in memory and served again without the upstream, as APISIX's
plugin with its memory strategy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from gateway.config.load import load
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from tests.helpers import Received, Upstream, config_for, prefixed_route, request, start_gateway


async def counted(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A body that names the path and how many requests came before it."""
    path = req.target.decode()
    headers = [(b"content-type", b"text/plain"), (b"x-origin", b"up")]
    if path.startswith("/cookie"):
        headers.append((b"set-cookie", b"session=1"))
    if path.startswith("/private"):
        headers.append((b"cache-control", b"private"))
    if path.startswith("/short"):
        headers.append((b"cache-control", b"public, max-age=1"))
    status = 500 if path.startswith("/error") else 404 if path.startswith("/gone") else 200
    COUNT[0] += 1
    return status, headers, f"{path} #{COUNT[0]}".encode()


COUNT = [0]


def route(upstream: Upstream, rid: str, conf: dict[str, Any]) -> dict[str, Any]:
    return prefixed_route(upstream, rid, {"proxy-cache": conf})


async def test_memory_cache(nursery: trio.Nursery) -> None:
    upstream = await nursery.start(Upstream(responder=counted).serve)
    memory = {"cache_strategy": "memory", "cache_zone": "memory_cache"}
    routes = [
        route(upstream, "c", memory),
        route(upstream, "ttl", {**memory, "cache_ttl": 1}),
        route(upstream, "cc", {**memory, "cache_control": True, "cache_zone": "other"}),
        route(upstream, "skip", {**memory, "cache_bypass": ["$arg_fresh"],
                                 "no_cache": ["$http_x_no_cache"], "hide_cache_headers": True}),
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    async def get(target: str, *headers: tuple[str, str], method: str = "GET") -> Any:
        return await request(gw, method, target, headers=list(headers))

    first = await get("/c/a")
    assert (first.status, first.header(b"apisix-cache-status")) == (200, b"MISS")
    served = len(upstream.received)
    again = await get("/c/a")
    assert (again.status, again.header(b"apisix-cache-status")) == (200, b"HIT")
    assert again.body == first.body
    assert again.header(b"x-origin") == b"up"
    assert again.header(b"content-type") == b"text/plain"
    assert len(upstream.received) == served  # the upstream was not asked
    # HEAD is served from the GET's entry; another query is another key.
    head = await get("/c/a", method="HEAD")
    assert (head.status, head.header(b"apisix-cache-status"), head.body) == (200, b"HIT", b"")
    assert (await get("/c/a?x=1")).header(b"apisix-cache-status") == b"MISS"
    # 404 is kept by default, 500 is not; POST is not a cache method by default.
    assert (await get("/c/gone")).header(b"apisix-cache-status") == b"MISS"
    assert (await get("/c/gone")).header(b"apisix-cache-status") == b"HIT"
    assert (await get("/c/error")).header(b"apisix-cache-status") == b"MISS"
    assert (await get("/c/error")).header(b"apisix-cache-status") == b"MISS"
    posted = await request(gw, "POST", "/c/a", body=b"x")
    assert posted.header(b"apisix-cache-status") is None
    assert posted.body != first.body
    # An answer with Set-Cookie is never kept.
    assert (await get("/c/cookie")).header(b"apisix-cache-status") == b"MISS"
    assert (await get("/c/cookie")).header(b"apisix-cache-status") == b"MISS"

    # cache_ttl: the entry ages out.
    kept = await get("/ttl/a")
    assert (await get("/ttl/a")).body == kept.body
    with trio.fail_after(10):
        while True:
            resp = await get("/ttl/a")
            if resp.header(b"apisix-cache-status") != b"HIT":
                break
            await trio.sleep(0.2)
    assert resp.header(b"apisix-cache-status") == b"EXPIRED"
    assert resp.body != kept.body
    assert (await get("/ttl/a")).header(b"apisix-cache-status") == b"HIT"

    # cache_control: private is not kept, max-age sets the time, a client's no-cache
    # bypasses (and the fresh answer is kept).
    assert (await get("/cc/private")).header(b"apisix-cache-status") == b"MISS"
    assert (await get("/cc/private")).header(b"apisix-cache-status") == b"MISS"
    assert (await get("/cc/short")).header(b"apisix-cache-status") == b"MISS"
    assert (await get("/cc/short")).header(b"apisix-cache-status") == b"HIT"
    assert (await get("/cc/a")).header(b"apisix-cache-status") == b"MISS"
    bypassed = await get("/cc/a", ("Cache-Control", "no-cache"))
    assert bypassed.header(b"apisix-cache-status") == b"BYPASS"
    assert (await get("/cc/a")).body == bypassed.body

    # cache_bypass and no_cache variables; hide_cache_headers.
    assert (await get("/skip/a", ("X-No-Cache", "1"))).header(b"apisix-cache-status") == b"MISS"
    assert (await get("/skip/a")).header(b"apisix-cache-status") == b"MISS"
    hit = await get("/skip/a")
    assert hit.header(b"apisix-cache-status") == b"HIT"
    fresh = await get("/skip/a?fresh=1")
    assert fresh.header(b"apisix-cache-status") == b"BYPASS"
    assert fresh.body != hit.body
    assert (await get("/skip/short")).header(b"cache-control") is None


async def test_entries_survive_a_reload(nursery: trio.Nursery, tmp_path: Path) -> None:
    upstream = await nursery.start(Upstream(responder=counted).serve)
    path = tmp_path / "config.json"
    memory = {"cache_strategy": "memory"}
    path.write_text(json.dumps(config_for([route(upstream, "c", memory)])))
    registry = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=registry), registry)
    (address,) = await nursery.start(gateway.serve)
    first = await request(address, target="/c/a")
    assert first.header(b"apisix-cache-status") == b"MISS"
    path.write_text(
        json.dumps(config_for([route(upstream, "c", memory), route(upstream, "d", {})]))
    )
    assert await gateway.reload()
    again = await request(address, target="/c/a")
    assert (again.header(b"apisix-cache-status"), again.body) == (b"HIT", first.body)
