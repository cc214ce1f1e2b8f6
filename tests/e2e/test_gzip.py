"""gzip: answers compressed for clients that accept it, as APISIX's plugin (and nginx's
gzip filter under it) decides."""

from __future__ import annotations

import gzip
import json
from typing import Any

import trio

from tests.helpers import (
    Received,
    Upstream,
    config_for,
    exchange_raw,
    prefixed_route,
    request,
    start_gateway,
)

PAGE = b"<html><body>" + b"hello gateway " * 500 + b"</body></html>"
ACCEPT = ("Accept-Encoding", "deflate, gzip;q=0.8, br")


async def pages(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The page under every path, with the type, status and framing the path asks for."""
    path = req.target.decode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"etag", b'"v1"')]
    headers.append((b"accept-ranges", b"bytes"))
    status = 404 if path.startswith("/missing") else 500 if path.startswith("/error") else 200
    if path.startswith("/json"):
        headers[0] = (b"content-type", b"application/json")
    if path.startswith("/encoded"):
        headers.append((b"content-encoding", b"br"))
    if path.startswith("/tiny"):
        return status, [*headers, (b"content-length", b"5")], b"small"
    if not path.startswith("/chunked"):
        headers.append((b"content-length", str(len(PAGE)).encode()))
    return status, headers, PAGE


def route(upstream: Upstream, rid: str, conf: dict[str, Any]) -> dict[str, Any]:
    return prefixed_route(upstream, rid, {"gzip": conf})


async def test_compresses_what_nginx_would(nursery: trio.Nursery) -> None:
    upstream = await nursery.start(Upstream(responder=pages).serve)
    routes = [
        route(upstream, "html", {}),
        route(upstream, "any", {"types": "*", "comp_level": 9, "vary": True}),
        route(upstream, "long", {"min_length": 100000}),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))

    async def get(target: str, *headers: tuple[str, str]) -> Any:
        return await request(gw, target=target, headers=list(headers))

    for target in ("/html/page", "/html/chunked", "/html/missing", "/any/json"):
        resp = await get(target, ACCEPT)
        assert resp.header(b"content-encoding") == b"gzip", target
        assert resp.header(b"content-length") is None, target
        assert resp.header(b"accept-ranges") is None, target
        assert resp.header(b"etag") == b'W/"v1"', target  # no longer byte for byte
        assert gzip.decompress(resp.body) == PAGE, target
        assert len(resp.body) < len(PAGE) // 10, target
    assert (await get("/any/json", ACCEPT)).header(b"vary") == b"Accept-Encoding"
    # Level 9 packs at least as tight as level 1.
    assert len((await get("/any/page", ACCEPT)).body) <= len((await get("/html/page", ACCEPT)).body)

    # Left as they are: the client does not take gzip; not a listed type; shorter than
    # min_length; already encoded; a status nginx does not compress; a HEAD; a request
    # that came through a proxy (nginx's gzip_proxied off).
    for target, headers in (
        ("/html/page", ()),
        ("/html/page", (("Accept-Encoding", "gzip;q=0, deflate"),)),
        ("/html/json", (ACCEPT,)),
        ("/html/tiny", (ACCEPT,)),
        ("/long/page", (ACCEPT,)),
        ("/any/encoded", (ACCEPT,)),
        ("/any/error", (ACCEPT,)),
        ("/html/page", (ACCEPT, ("Via", "1.1 cdn"))),
    ):
        resp = await get(target, *headers)
        assert resp.header(b"content-encoding") in (None, b"br"), (target, headers)
        expected = b"small" if "tiny" in target else PAGE
        assert resp.body == expected, (target, headers)
    # Vary is set whenever the answer is one the route would compress, taken or not.
    assert (await get("/any/page")).header(b"vary") == b"Accept-Encoding"
    head = await request(gw, "HEAD", "/html/page", headers=[ACCEPT])
    assert (head.status, head.header(b"content-encoding"), head.body) == (200, None, b"")

    # An HTTP/1.0 client is not compressed by default (http_version 1.1).
    raw = await exchange_raw(gw, b"GET /html/page HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n")
    head_part, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-encoding" not in head_part.lower()
    assert body == PAGE

    # Keep-alive holds across compressed answers (the chunked framing ends cleanly).
    stream_requests = (
        b"".join(
            b"GET /html/page HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n" for _ in range(2)
        )
        + b"GET /html/page HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    raw = await exchange_raw(gw, stream_requests)
    assert raw.count(b"HTTP/1.1 200") == 3
    assert raw.lower().count(b"content-encoding: gzip") == 2
    assert raw.endswith(PAGE)


async def test_gateway_answers_and_replaced_bodies(nursery: trio.Nursery) -> None:
    """The gateway's own answers and a body response-rewrite put in are compressed too, as
    nginx compresses whatever goes out."""
    upstream = await nursery.start(Upstream(responder=pages).serve)
    html = {"types": ["text/html", "application/json"], "min_length": 10}
    routes = [
        {"id": "auth", "uri": "/auth", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"gzip": html, "key-auth": {}}},
        {"id": "rw", "uri": "/rw", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"gzip": html, "response-rewrite": {"body": "replaced " * 50}}},
    ]  # fmt: skip
    routes.append(
        {"id": "deny", "uri": "/deny", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"gzip": {"types": "*", "min_length": 10},
                     "ip-restriction": {"blacklist": ["127.0.0.0/8"], "message": "no " * 20}}}
    )  # fmt: skip
    consumers = [{"username": "app", "plugins": {"key-auth": {"key": "k"}}}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    resp = await request(gw, target="/auth", headers=[ACCEPT])
    assert resp.status == 401
    assert resp.header(b"content-encoding") is None  # 401: a status nginx leaves alone
    resp = await request(gw, target="/rw", headers=[ACCEPT])
    assert resp.status == 200
    assert resp.header(b"content-type") == b"text/html; charset=utf-8"
    assert resp.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(resp.body) == b"replaced " * 50
    # A 403 of the gateway's own, with a type the route lists.
    resp = await request(gw, target="/deny", headers=[ACCEPT])
    assert resp.status == 403
    assert resp.header(b"content-encoding") == b"gzip"
    assert json.loads(gzip.decompress(resp.body)) == {"message": "no " * 20}
    assert resp.header(b"content-length") == str(len(resp.body)).encode()
