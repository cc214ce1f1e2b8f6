"""response-rewrite over real sockets: the answer's status, headers and body rewritten,
on the upstream's answers and on the gateway's own, as APISIX's plugin does."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import trio

from tests.helpers import Received, Upstream, config_for, request, start_gateway


async def upstream_answer(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status = 404 if req.target.endswith(b"missing") else 200
    headers = [
        (b"ETag", b'"v1"'),
        (b"X-Internal", b"secret-build-7"),
        (b"Set-Cookie", b"a=1"),
        (b"Content-Type", b"text/plain"),
    ]
    return status, headers, b"x" * 5000


async def gateway_with(nursery: trio.Nursery, upstream: Upstream, **routes: Any) -> str:
    node = {"nodes": {upstream.address: 1}}
    config = config_for(
        [
            {"id": rid, "uri": f"/{rid}/*", "upstream": node, "plugins": plugins}
            for rid, plugins in routes.items()
        ],
        consumers=[
            {"username": "app", "credentials": [{"id": "a", "plugins": {"key-auth": {"key": "k"}}}]}
        ],
    )
    _, gw = await start_gateway(nursery, config)
    return gw


async def test_response_rewrite(nursery: trio.Nursery) -> None:
    upstream = Upstream(responder=upstream_answer)
    await nursery.start(upstream.serve)
    gw = await gateway_with(
        nursery,
        upstream,
        headers={
            "response-rewrite": {
                "headers": {
                    "add": ["Set-Cookie: b=2", "X-Client: $remote_addr"],
                    "set": {"X-Served-By": "gateway", "Content-Type": "text/html"},
                    "remove": ["X-Internal"],
                }
            }
        },
        body={
            "response-rewrite": {
                "status_code": 203,
                "body": '{"replaced": true}\n',
                "headers": {"Content-Type": "application/json"},
            }
        },
        b64={
            "response-rewrite": {
                "body": base64.b64encode(b"\x00\x01bin").decode(),
                "body_base64": True,
            }
        },
        only404={
            "response-rewrite": {
                "vars": [["status", "==", 404]],
                "status_code": 410,
                "body": "gone\n",
            }
        },
        auth={"key-auth": {}, "response-rewrite": {"status_code": 418, "body": "no\n"}},
    )
    resp = await request(gw, target="/headers/a")
    assert resp.status == 200
    assert len(resp.body) == 5000
    assert [v for n, v in resp.headers if n == b"set-cookie"] == [b"a=1", b"b=2"]
    assert resp.header(b"x-client") == b"127.0.0.1"
    assert resp.header(b"x-served-by") == b"gateway"
    assert [v for n, v in resp.headers if n == b"content-type"] == [b"text/html"]
    assert resp.header(b"x-internal") is None
    assert resp.header(b"etag") == b'"v1"'

    resp = await request(gw, target="/body/a")
    assert (resp.status, resp.body) == (203, b'{"replaced": true}\n')
    assert resp.header(b"content-type") == b"application/json"
    assert resp.header(b"content-length") == b"19"
    assert resp.header(b"etag") is None  # the body it named is gone
    # The next one is answered too: the upstream connection whose body went unread is
    # closed, never reused.
    resp = await request(gw, target="/body/b")
    assert resp.body == b'{"replaced": true}\n'
    resp = await request(gw, method="HEAD", target="/body/a")
    assert (resp.status, resp.body, resp.header(b"content-length")) == (203, b"", b"19")

    resp = await request(gw, target="/b64/a")
    assert resp.body == b"\x00\x01bin"

    resp = await request(gw, target="/only404/a")
    assert (resp.status, len(resp.body)) == (200, 5000)
    resp = await request(gw, target="/only404/missing")
    assert (resp.status, resp.body) == (410, b"gone\n")

    # The gateway's own answers are rewritten too.
    resp = await request(gw, target="/auth/a")
    assert (resp.status, resp.body) == (418, b"no\n")
    resp = await request(gw, target="/auth/a", headers=[("apikey", "k")])
    assert (resp.status, resp.body) == (418, b"no\n")


async def page(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = b"<p>Hello Upstream, hello upstream. Cost: 5 USD.</p>"
    headers = [(b"content-type", b"text/html"), (b"etag", b'"v2"')]
    if req.target.endswith(b"gz"):
        return 200, [*headers, (b"content-encoding", b"gzip")], gzip.compress(body)
    if req.target.endswith(b"br"):
        return 200, [*headers, (b"content-encoding", b"br")], b"\x00not-really-brotli"
    if req.target.endswith(b"huge"):
        return 200, headers, b"a" * (8 * 1024 * 1024 + 1)
    return 200, headers, body


async def test_body_filters(nursery: trio.Nursery) -> None:
    """`filters`: regex replacements over the whole body, once or everywhere, with the
    regex's groups; a gzip body decoded first; the gateway's own answers too."""
    upstream = await nursery.start(Upstream(responder=page).serve)
    once = [{"regex": "upstream", "replace": "gateway", "options": "i"}]
    every = [
        {"regex": "(?<w>[Hh])ello (\\w+)", "scope": "global", "replace": "$1i $2!"},
        {"regex": "(\\d+) USD", "replace": "$$$1"},
    ]
    gw = await gateway_with(
        nursery,
        upstream,
        once={"response-rewrite": {"filters": once}},
        every={"response-rewrite": {"filters": every}},
        own={"key-auth": {}, "response-rewrite": {"filters": [
            {"regex": "Missing", "replace": "No"}]}},
    )  # fmt: skip
    resp = await request(gw, target="/once/a")
    assert resp.body == b"<p>Hello gateway, hello upstream. Cost: 5 USD.</p>"
    assert resp.header(b"content-length") == str(len(resp.body)).encode()
    assert resp.header(b"etag") is None  # it described the old body
    resp = await request(gw, target="/every/a")
    assert resp.body == b"<p>Hi Upstream!, hi upstream!. Cost: $5.</p>"
    # A gzip body is decoded, rewritten and sent decoded; another encoding is left alone.
    resp = await request(gw, target="/once/gz")
    assert resp.body == b"<p>Hello gateway, hello upstream. Cost: 5 USD.</p>"
    assert resp.header(b"content-encoding") is None
    resp = await request(gw, target="/once/br")
    assert (resp.header(b"content-encoding"), resp.body) == (b"br", b"\x00not-really-brotli")
    # Past 8 MiB: 502, not a body half rewritten.
    assert (await request(gw, target="/once/huge")).status == 502
    # The gateway's own answer.
    resp = await request(gw, target="/own/a")
    assert resp.status == 401
    assert resp.json() == {"message": "No API key in request"}
    # A HEAD answer has no body to filter: it states no length (the GET's would differ).
    head = await request(gw, "HEAD", "/once/a")
    assert head.status == 200
    assert head.body == b""
    assert head.header(b"content-length") is None
