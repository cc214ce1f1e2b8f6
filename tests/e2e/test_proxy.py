"""Contract tests for proxying (SPEC sections 2 and 6) over real loopback sockets."""

from __future__ import annotations

import contextlib
import socket
import time
from email.utils import parsedate_to_datetime
from typing import Any

import h11
import pytest
import trio

from tests.helpers import (
    Received,
    Response,
    Upstream,
    answering,
    config_for,
    connect,
    exchange_raw,
    free_port,
    raw_serve,
    read_response,
    read_until_close,
    request,
    start_gateway,
    start_gateway_to_raw,
)


def route(upstream: Upstream, **extra: object) -> dict[str, object]:
    return {"id": "r1", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}}, **extra}


async def test_get_reaches_upstream_with_forwarding_headers(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    resp = await request(
        gw,
        target="/pets/1?limit=2",
        headers=[("X-Forwarded-For", "10.0.0.9"), ("X-Real-IP", "6.6.6.6")],
    )
    assert resp.status == 200
    got = upstream.received[0]
    assert got.target == b"/pets/1?limit=2"
    assert got.header(b"host") == b"gateway.test"
    assert got.header(b"x-forwarded-for") == b"10.0.0.9, 127.0.0.1"
    assert got.header(b"x-real-ip") == b"127.0.0.1"
    assert got.header(b"x-forwarded-proto") == b"http"
    assert got.header(b"x-forwarded-host") == b"gateway.test"
    assert got.header(b"x-forwarded-port") == gw.rsplit(":", 1)[1].encode()


async def test_forwarded_host_is_the_host_without_its_port(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """X-Forwarded-Host is nginx's `$host`, as APISIX sends it: the host, lower-cased,
    without the port (that is X-Forwarded-Port); none when the client named no host."""
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    port = gw.rsplit(":", 1)[1].encode()
    raw = await exchange_raw(
        gw,
        b"GET /a HTTP/1.1\r\nHost: Pets.Example:8443\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
    )
    assert raw.count(b" 200 OK\r\n") == 2
    named, unnamed = upstream.received
    assert named.header(b"host") == b"Pets.Example:8443"  # pass_host: pass, as it came
    assert named.header(b"x-forwarded-host") == b"pets.example"
    assert named.header(b"x-forwarded-port") == port
    assert unnamed.header(b"x-forwarded-host") is None


async def test_unmatched_route_is_404_with_apisix_body(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    cfg = config_for(
        [{"id": "r", "uri": "/petstore/*", "upstream": {"nodes": {upstream.address: 1}}}]
    )
    _, gw = await start_gateway(nursery, cfg)
    for target in ("/petstore", "/other", "/petstorex/"):
        resp = await request(gw, target=target)
        assert resp.status == 404
        assert resp.body == b'{"error_msg":"404 Route Not Found"}\n'
    assert upstream.received == []
    assert (await request(gw, target="/petstore/")).status == 200


async def test_gateway_made_answers_carry_a_date(nursery: trio.Nursery, upstream: Upstream) -> None:
    """RFC 9110 section 6.6.1: an origin server's 2xx to 4xx answers carry `Date`; the
    gateway is the origin of its own 404, 401 and 400 (nginx dates every answer)."""
    cfg = config_for(
        [{"id": "r", "uri": "/k", "upstream": {"nodes": {upstream.address: 1}},
          "plugins": {"key-auth": {}}}]
    )  # fmt: skip
    _, gw = await start_gateway(nursery, cfg)
    refused = await exchange_raw(gw, b"GET /%zz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400 ")
    head = refused.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    dates = [line.partition(b": ")[2] for line in head if line.lower().startswith(b"date: ")]
    for answer, status in (
        (await request(gw, target="/other"), 404),
        (await request(gw, target="/k"), 401),
    ):
        assert answer.status == status
        dates.append(answer.header(b"date") or b"")
    assert len(dates) == 3
    for date in dates:
        assert abs(parsedate_to_datetime(date.decode()).timestamp() - time.time()) < 60


async def test_methods_and_hosts_select_routes(nursery: trio.Nursery, upstream: Upstream) -> None:
    node = {"nodes": {upstream.address: 1}}
    cfg = config_for(
        [
            {"id": "get-only", "uri": "/a", "methods": ["GET"], "upstream": node},
            {
                "id": "wild",
                "uri": "/h",
                "hosts": ["*.example.com"],
                "upstream": node,
                "plugins": {"proxy-rewrite": {"headers": {"set": {"x-route": "wild"}}}},
            },
        ]
    )
    _, gw = await start_gateway(nursery, cfg)
    assert (await request(gw, "GET", "/a")).status == 200
    assert (await request(gw, "POST", "/a", body=b"x")).status == 404
    ok = await request(gw, target="/h", headers=[("host", "api.Example.com:9080")])
    assert ok.status == 200
    assert upstream.received[-1].header(b"x-route") == b"wild"
    dotted = await request(gw, target="/h", headers=[("host", "api.example.com.")])
    assert dotted.status == 200  # a trailing dot names the same host, as in nginx
    assert (await request(gw, target="/h", headers=[("host", "example.com")])).status == 404


async def test_route_uris_match_requests_in_their_normal_form(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """A route's uri is compared with the request path in the form requests are brought
    to before routing: text a request line cannot carry (a space, text outside ASCII) as
    its UTF-8 escapes, escaped unreserved characters decoded, dot segments resolved; as
    APISIX compares it with the decoded path."""
    node = {"nodes": {upstream.address: 1}}
    uris = {
        "unicode": "/日本/*",
        "spaced": "/docs/my file",
        "tilde": "/%7euser/*",
        "dotted": "/a/./b/../c",
        "slash": "/x%2fy",
    }
    routes = [{"id": rid, "uri": uri, "upstream": node} for rid, uri in uris.items()]
    cfg = config_for(
        [{**r, "plugins": {"proxy-rewrite": {"headers": {"x-route": r["id"]}}}} for r in routes]
    )
    _, gw = await start_gateway(nursery, cfg)
    cases = [
        ("/%E6%97%A5%e6%9c%ac/x", "unicode"),
        ("/docs/my%20file", "spaced"),
        ("/~user/a", "tilde"),
        ("/%7Euser/a", "tilde"),
        ("/a/c", "dotted"),
        ("/x%2Fy", "slash"),
    ]
    for target, rid in cases:
        resp = await request(gw, target=target)
        assert resp.status == 200, target
        assert upstream.received[-1].header(b"x-route") == rid.encode(), target


async def test_raw_utf8_in_the_target_is_served_as_its_escapes(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """curl sends `/日本/x` as raw UTF-8, and nginx serves it; the gateway takes it as the
    URI it stands for (RFC 3987 section 3.1: those bytes percent-encoded), so it is routed
    like `/%E6%97%A5%E6%9C%AC/x` and goes upstream in that form."""
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "unicode", "uri": "/日本/*", "upstream": node},
        {"id": "rest", "uri": "/*", "upstream": node},
    ]
    cfg = config_for(
        [{**r, "plugins": {"proxy-rewrite": {"headers": {"x-route": r["id"]}}}} for r in routes]
    )
    _, gw = await start_gateway(nursery, cfg)
    stream = await connect(gw)
    async with stream:
        for raw, sent in (
            ("/日本/x?q=語", b"/%E6%97%A5%E6%9C%AC/x?q=%E8%AA%9E"),
            ("/caf\u00e9", b"/caf%C3%A9"),
        ):
            await stream.send_all(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % raw.encode())
            resp = await read_response(stream)
            assert resp.status == 200, raw
            assert upstream.received[-1].target == sent
            rid = b"unicode" if raw.startswith("/日本") else b"rest"
            assert upstream.received[-1].header(b"x-route") == rid
    # Only the target is escaped: a method or a version with such bytes is still a 400,
    # and so is a control character in the target.
    for data in (
        "G\u00c9T / HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        "GET /日本 HTTP/1.\u00b9\r\nHost: x\r\n\r\n".encode(),
        "GET /日本\x7f HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        "GET /日本 /x HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    ):
        raw_reply = await exchange_raw(gw, data)
        assert raw_reply.startswith(b"HTTP/1.1 400 "), (data, raw_reply[:80])
    assert len(upstream.received) == 2


async def test_route_uris_with_parameters(nursery: trio.Nursery, upstream: Upstream) -> None:
    """APISIX configs route by `/user/:id` and `/files/*path`: a parameter matches a segment,
    a `*name` the rest; the request goes on with its path as sent."""
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "user", "uri": "/user/:id", "upstream": node},
        {"id": "files", "uris": ["/files/*path", "/u/:id/files/*"], "upstream": node},
    ]
    cfg = config_for(
        [{**r, "plugins": {"proxy-rewrite": {"headers": {"x-route": r["id"]}}}} for r in routes]
    )
    _, gw = await start_gateway(nursery, cfg)
    for target, rid in (
        ("/user/42?x=1", "user"),
        ("/files/a/b.txt", "files"),
        ("/u/7/files/", "files"),
    ):
        resp = await request(gw, target=target)
        assert resp.status == 200, target
        assert upstream.received[-1].header(b"x-route") == rid.encode(), target
        assert upstream.received[-1].target == target.encode()
    seen = len(upstream.received)
    for target in ("/user/", "/user/42/x", "/user/:id/x", "/u/7/files", "/files"):
        assert (await request(gw, target=target)).status == 404, target
    assert len(upstream.received) == seen


async def test_route_remote_addrs(nursery: trio.Nursery, upstream: Upstream) -> None:
    """A route limited to other clients' addresses is not this client's: 404, or the next
    route; one that names the client's network matches."""
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "lan", "uri": "/a", "remote_addrs": ["10.0.0.0/8"], "upstream": node},
        {"id": "local", "uri": "/b", "remote_addrs": ["127.0.0.0/8", "::1"], "upstream": node},
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    assert (await request(gw, target="/a")).status == 404
    assert len(upstream.received) == 0
    assert (await request(gw, target="/b")).status == 200
    assert len(upstream.received) == 1


async def test_route_vars_choose_between_routes(nursery: trio.Nursery, upstream: Upstream) -> None:
    """APISIX's canary pattern: a route whose `vars` hold for the request wins; one whose
    `vars` do not lets the next route answer."""
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {
            "id": "canary",
            "uri": "/api/*",
            "priority": 1,
            "vars": [["OR", ["http_x_canary", "==", "1"], ["cookie_beta", "==", "yes"]]],
            "upstream": node,
        },
        {"id": "stable", "uri": "/api/*", "upstream": node},
        {"id": "json", "uri": "/only", "vars": [["arg_format", "==", "json"]], "upstream": node},
    ]
    cfg = config_for(
        [{**r, "plugins": {"proxy-rewrite": {"headers": {"x-route": r["id"]}}}} for r in routes]
    )
    _, gw = await start_gateway(nursery, cfg)
    for headers, rid in (
        ([], b"stable"),
        ([("x-canary", "1")], b"canary"),
        ([("x-canary", "2")], b"stable"),
        ([("cookie", "a=1; beta=yes")], b"canary"),
    ):
        assert (await request(gw, target="/api/x", headers=headers)).status == 200
        assert upstream.received[-1].header(b"x-route") == rid, headers
    assert (await request(gw, target="/only?format=json")).status == 200
    assert upstream.received[-1].header(b"x-route") == b"json"
    assert (await request(gw, target="/only?format=xml")).status == 404
    assert len(upstream.received) == 5


async def test_absolute_form_target_names_the_host(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """RFC 9112 section 3.2.2: with an absolute-form target the Host header is ignored; the
    target's authority chooses the route and is the Host the upstream receives."""
    node = {"nodes": {upstream.address: 1}}
    cfg = config_for(
        [
            {"id": "internal", "uri": "/*", "hosts": ["internal.test"], "upstream": node,
             "plugins": {"key-auth": {}}},
            {"id": "public", "uri": "/*", "hosts": ["public.test"], "upstream": node},
        ]
    )  # fmt: skip
    _, gw = await start_gateway(nursery, cfg)
    smuggled = await request(
        gw, target="http://internal.test/admin?x=1", headers=[("host", "public.test")]
    )
    assert smuggled.status == 401  # the internal route's key-auth, not the public route
    assert upstream.received == []
    ok = await request(
        gw, target="HTTP://Public.test:8080?q=/a", headers=[("host", "internal.test")]
    )
    assert ok.status == 200
    got = upstream.received[-1]
    assert got.target == b"/?q=/a"
    assert got.header(b"host") == b"Public.test:8080"
    assert got.header(b"x-forwarded-host") == b"public.test"  # nginx's $host


async def test_absolute_form_without_a_plain_host_is_400(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    for target in ("http://user@public.test/", "http:///a", "http://:80/a", "http://a b/"):
        raw = await exchange_raw(gw, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode())
        assert raw.startswith(b"HTTP/1.1 400 "), (target, raw[:60])
    assert upstream.received == []


async def test_request_and_response_bodies_pass_byte_exact(nursery: trio.Nursery) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def respond(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 201, [(b"x-len", str(len(req.body)).encode())], req.body[::-1]

    up = await nursery.start(Upstream(responder=respond).serve)
    _, gw = await start_gateway(nursery, config_for([route(up)]))
    resp = await request(gw, "POST", "/upload", body=payload)
    assert resp.status == 201
    assert resp.header(b"x-len") == str(len(payload)).encode()
    assert resp.body == payload[::-1]
    assert up.received[0].body == payload
    assert up.received[0].header(b"content-length") == str(len(payload)).encode()


async def test_chunked_request_body_is_restated_chunked(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(
            b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        resp = await read_response(stream, method=b"POST")
    assert resp.status == 200
    got = upstream.received[0]
    assert got.body == b"hello world"
    assert got.header(b"transfer-encoding") == b"chunked"
    assert got.header(b"content-length") is None


async def test_tiny_request_chunks_are_joined_for_the_upstream(nursery: trio.Nursery) -> None:
    """h11 decodes a chunked body one chunk at a time; what one read brought goes upstream
    as one chunk, so one-byte chunks do not cost one write (and one chunk) each."""
    wire = bytearray()

    async def recorder(stream: trio.SocketStream) -> None:
        while not wire.endswith(b"\r\n0\r\n\r\n"):
            wire.extend(await stream.receive_some(65536))
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

    _, gw = await start_gateway_to_raw(nursery, recorder)
    body = bytes(range(256)) * 8  # 2,048 one-byte chunks, sent in one write
    stream = await connect(gw)
    async with stream:
        await stream.send_all(
            b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"".join(b"1\r\n%c\r\n" % byte for byte in body)
            + b"0\r\n\r\n"
        )
        resp = await read_response(stream, method=b"POST")
    assert resp.status == 200
    head, _, chunked = bytes(wire).partition(b"\r\n\r\n")
    assert b"\r\ntransfer-encoding: chunked" in head.lower()
    decoded, chunks = bytearray(), 0
    while True:
        size_line, _, chunked = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        decoded += chunked[:size]
        chunked = chunked[size + 2 :]
        chunks += 1
    assert decoded == body
    assert chunks <= 16, chunks  # one per read of the client's bytes, not one per chunk


async def test_chunked_and_close_delimited_responses(nursery: trio.Nursery) -> None:
    chunked_then_close = answering(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-close",
        then="close",
    )
    _, gw = await start_gateway_to_raw(nursery, chunked_then_close)
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"GET /1 HTTP/1.1\r\nhost: x\r\n\r\n")
        first = await read_response(stream)
        assert first.body == b"abcde"
        assert first.header(b"transfer-encoding") == b"chunked"
        await stream.send_all(b"GET /2 HTTP/1.1\r\nhost: x\r\n\r\n")
        second = await read_response(stream)
        # The upstream's close-delimited body reaches the client chunked, and the client's
        # connection stays open: Connection is hop-by-hop.
        assert second.body == b"until-close"
        assert second.header(b"transfer-encoding") == b"chunked"
        assert second.header(b"connection") is None


async def test_keepalive_pool_reuses_upstream_connections(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    gateway, gw = await start_gateway(nursery, config_for([route(upstream)]))
    for _ in range(5):
        assert (await request(gw)).status == 200
    assert upstream.connections == 1
    assert {r.connection for r in upstream.received} == {0}
    stats = gateway.pools.statistics()
    assert stats["opened"] == 1
    assert stats["reused"] == 4


async def test_keepalive_pool_requests_limit(nursery: trio.Nursery, upstream: Upstream) -> None:
    cfg = config_for([route(upstream)])
    cfg["routes"][0]["upstream"]["keepalive_pool"] = {"requests": 2}
    _, gw = await start_gateway(nursery, cfg)
    for _ in range(5):
        assert (await request(gw)).status == 200
    assert [r.connection for r in upstream.received] == [0, 0, 1, 1, 2]


async def test_pipelined_requests_answered_in_order(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(
            b"".join(f"GET /p{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode() for i in range(5))
        )
        conn = h11.Connection(h11.CLIENT)
        for i in range(5):
            conn.send(h11.Request(method="GET", target=f"/p{i}", headers=[("host", "x")]))
            conn.send(h11.EndOfMessage())
            resp = await read_response(stream, conn)
            assert resp.json()["target"] == f"/p{i}"
            conn.start_next_cycle()


async def test_pipelined_bodies_split_anywhere_reach_the_right_requests(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """Content-Length bodies end exactly where they say, however the bytes are cut: the
    bytes after a body are the next request, never more body."""
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    wire = (
        b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n0123456789"
        b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n"
        b"POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello"
        b"POST /d HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    for cut in (10, 55, 60, 70, 110, len(wire) - 3):
        upstream.received.clear()
        stream = await connect(gw)
        async with stream:
            await stream.send_all(wire[:cut])
            await trio.sleep(0.05)  # let the gateway read the first part on its own
            await stream.send_all(wire[cut:])
            targets = []
            conn = h11.Connection(h11.CLIENT)  # one reader for the whole pipeline
            for method in ("POST", "GET", "POST", "POST"):
                conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
                conn.send(h11.EndOfMessage())
                resp = await read_response(stream, conn)
                assert resp.status == 200
                targets.append(resp.json()["target"])
                conn.start_next_cycle()
        assert targets == ["/a", "/b", "/c", "/d"], cut
        bodies = {r.target: r.body for r in upstream.received}
        assert bodies == {b"/a": b"0123456789", b"/b": b"", b"/c": b"hello", b"/d": b"abc"}


async def test_early_answer_skips_a_buffered_body_and_keeps_the_connection(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """A gateway answer (404 here) to a request whose small body already arrived skips that
    body and serves the next request on the same connection."""
    cfg = config_for([{"id": "r", "uri": "/ok/*", "upstream": {"nodes": {upstream.address: 1}}}])
    _, gw = await start_gateway(nursery, cfg)
    stream = await connect(gw)
    async with stream:
        await stream.send_all(
            b"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nGET "
            b"GET /ok/1 HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="POST", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        first = await read_response(stream, conn)
        conn.start_next_cycle()
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        second = await read_response(stream, conn)
    assert first.status == 404
    assert second.status == 200
    assert second.json()["target"] == "/ok/1"
    assert [r.target for r in upstream.received] == [b"/ok/1"]


async def test_http10_client(nursery: trio.Nursery, upstream: Upstream) -> None:
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"GET /old HTTP/1.0\r\nhost: x\r\n\r\n")
        raw = await read_until_close(stream)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"target": "/old"' in raw


async def test_http10_keep_alive(nursery: trio.Nursery, upstream: Upstream) -> None:
    """An HTTP/1.0 client that asks for keep-alive (ApacheBench's `-k`) keeps its
    connection, as with nginx; one that does not gets a close."""
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    stream = await connect(gw)
    async with stream:
        ask = b"GET /%d HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n"
        await stream.send_all(ask % 1 + ask % 2 + b"GET /3 HTTP/1.0\r\nhost: x\r\n\r\n")
        raw = await read_until_close(stream)
    heads = [part.partition(b"\r\n\r\n")[0].lower() for part in raw.split(b"HTTP/1.1 ")[1:]]
    assert len(heads) == 3
    assert [h.startswith(b"200 ") for h in heads] == [True, True, True]
    assert [b"connection: keep-alive" in h for h in heads] == [True, True, False]
    assert b"connection: close" in heads[2]
    assert [r.target for r in upstream.received] == [b"/1", b"/2", b"/3"]


async def test_expect_100_continue(nursery: trio.Nursery, upstream: Upstream) -> None:
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(
            b"POST /e HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n"
        )
        interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"data")
        resp = await read_response(stream, method=b"POST")
    assert resp.status == 200
    assert upstream.received[0].body == b"data"
    assert upstream.received[0].header(b"expect") is None


async def test_hop_by_hop_headers_not_forwarded(nursery: trio.Nursery) -> None:
    async def respond(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return (
            200,
            [
                (b"keep-alive", b"timeout=5"),
                (b"x-secret-hop", b"1"),
                (b"connection", b"x-secret-hop"),
                (b"x-kept", b"yes"),
            ],
            b"ok",
        )

    up = await nursery.start(Upstream(responder=respond).serve)
    _, gw = await start_gateway(nursery, config_for([route(up)]))
    resp = await request(
        gw,
        headers=[
            ("Connection", "keep-alive, X-Drop-Me"),
            ("X-Drop-Me", "1"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic Zm9v"),
            ("Keep-Alive", "300"),
            ("X-Keep", "1"),
        ],
    )
    got = up.received[0]
    for name in (b"x-drop-me", b"te", b"proxy-authorization", b"keep-alive"):
        assert got.header(name) is None, name
    assert got.header(b"x-keep") == b"1"
    assert resp.header(b"keep-alive") is None
    assert resp.header(b"x-secret-hop") is None
    assert resp.header(b"x-kept") == b"yes"


async def test_connection_cannot_list_host_away(nursery: trio.Nursery, upstream: Upstream) -> None:
    """`Connection: host` names a header meant for every hop (RFC 9110 section 7.6.1 says a
    sender must not); the request keeps its Host for routing and for the upstream, as
    nginx does, instead of falling to a host-less route."""
    cfg = config_for(
        [
            route(upstream, id="public", hosts=["public.test"], plugins={}),
            {"id": "other", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}},
             "plugins": {"proxy-rewrite": {"headers": {"set": {"x-route": "other"}}}}},
        ]
    )  # fmt: skip
    _, gw = await start_gateway(nursery, cfg)
    resp = await request(gw, headers=[("Host", "public.test"), ("Connection", "host")])
    assert resp.status == 200
    got = upstream.received[0]
    assert got.header(b"x-route") is None
    assert got.header(b"host") == b"public.test"
    assert got.header(b"x-forwarded-host") == b"public.test"


async def test_refused_port_is_502(nursery: trio.Nursery) -> None:
    cfg = config_for(
        [{"id": "r", "uri": "/*", "upstream": {"nodes": {f"127.0.0.1:{free_port()}": 1}}}]
    )
    _, gw = await start_gateway(nursery, cfg)
    resp = await request(gw)
    assert resp.status == 502
    assert resp.body == b'{"error_msg":"502 Bad Gateway"}\n'


async def test_a_refused_node_is_skipped_for_the_next_one(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """Upstream `retries` (APISIX; nginx's proxy_next_upstream error timeout): a node that
    refuses the connection never got the request, so any method goes to the next node.
    By default every node is tried once; `retries: 0` answers 502 at once. The refused
    node is then left out of the picks (nginx's fail_timeout), so only the first request
    that picked it failed."""
    dead = f"127.0.0.1:{free_port()}"
    nodes = {dead: 1, upstream.address: 1}
    cfg = config_for(
        [
            {"id": "retry", "uri": "/retry", "upstream": {"nodes": nodes}},
            {"id": "once", "uri": "/once", "upstream": {"nodes": nodes, "retries": 0}},
            {"id": "all-dead", "uri": "/dead", "upstream": {"nodes": {dead: 1}}},
        ]
    )
    _, gw = await start_gateway(nursery, cfg)
    for method in ("GET", "POST") * 3:
        assert (await request(gw, method, "/retry", body=b"x")).status == 200
    assert [r.method for r in upstream.received] == [b"GET", b"POST"] * 3
    statuses = [(await request(gw, target="/once")).status for _ in range(6)]
    assert statuses == [502, 200, 200, 200, 200, 200]  # the dead node first in order
    assert (await request(gw, target="/dead")).status == 502


async def test_an_unreachable_node_is_left_out_after_its_timeout(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """A node whose connects time out (a listener whose backlog is full drops the SYNs)
    costs one 504 with `retries: 0`, not every other request's connect timeout."""
    with socket.socket() as blackhole, socket.socket() as filler:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        filler.connect(blackhole.getsockname())  # the one place in its queue, never accepted
        port = blackhole.getsockname()[1]
        nodes = {f"127.0.0.1:{port}": 1, upstream.address: 1}
        timeout = {"connect": 1, "send": 5, "read": 5}
        cfg = config_for(
            [
                {
                    "id": "r",
                    "uri": "/*",
                    "upstream": {"nodes": nodes, "retries": 0, "timeout": timeout},
                }
            ]
        )
        _, gw = await start_gateway(nursery, cfg)
        statuses = [(await request(gw)).status for _ in range(5)]
    assert statuses == [504, 200, 200, 200, 200]


async def test_retry_timeout_bounds_the_time_spent_on_other_nodes(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX's `retry_timeout`: once it has passed since the first try, a failed connect
    is the answer (504 here) instead of a try on the next node."""
    with socket.socket() as blackhole, socket.socket() as filler:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        filler.connect(blackhole.getsockname())
        nodes = {f"127.0.0.1:{blackhole.getsockname()[1]}": 1, upstream.address: 1}
        timeout = {"connect": 1, "send": 5, "read": 5}
        routes = [
            {
                "id": rid,
                "uri": f"/{rid}",
                "upstream": {"nodes": nodes, "timeout": timeout, **extra},
            }
            for rid, extra in (("bounded", {"retry_timeout": 0.5}), ("unbounded", {}))
        ]
        _, gw = await start_gateway(nursery, config_for(routes))
        assert (await request(gw, target="/bounded")).status == 504
        assert (await request(gw, target="/unbounded")).status == 200


class TwoAddressResolver(trio.abc.HostnameResolver):
    """Resolves `name` to two loopback addresses, the first with nothing listening, as a
    name with an IPv6 and an IPv4 address does when the upstream listens on one only.
    (trio's resolver hook: the connects themselves are real.)"""

    def __init__(self, name: bytes, dead: str, live: str) -> None:
        self.name, self.addresses = name, (dead, live)

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def]
        assert host == self.name
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))
            for address in self.addresses
        ]

    async def getnameinfo(self, sockaddr, flags):  # type: ignore[no-untyped-def]
        raise NotImplementedError


async def test_a_node_name_with_several_addresses_tries_each(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """nginx makes every address of a node's name a peer; a connect refused on the first
    address goes on to the next, within the connect timeout."""
    host, port = upstream.address.rsplit(":", 1)
    trio.socket.set_custom_hostname_resolver(TwoAddressResolver(b"multi.test", "127.0.0.2", host))
    node = {"nodes": {f"multi.test:{port}": 1}}
    cfg = config_for([{"id": "r", "uri": "/*", "upstream": node}])
    _, gw = await start_gateway(nursery, cfg)
    assert [(await request(gw)).status for _ in range(3)] == [200, 200, 200]
    assert len(upstream.received) == 3


async def test_each_address_of_a_node_name_has_its_own_connect_timeout(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """As nginx's peers, each address gets the whole connect timeout: a first address that
    drops the SYNs (a listener whose backlog is full) no longer uses it up for the next."""
    host, port = upstream.address.rsplit(":", 1)
    with socket.socket() as blackhole, socket.socket() as filler:
        blackhole.bind(("127.0.0.2", int(port)))
        blackhole.listen(0)
        filler.connect(("127.0.0.2", int(port)))  # the one place in its queue
        trio.socket.set_custom_hostname_resolver(
            TwoAddressResolver(b"multi.test", "127.0.0.2", host)
        )
        timeout = {"connect": 0.5, "send": 5, "read": 5}
        node = {"nodes": {f"multi.test:{port}": 1}, "timeout": timeout}
        _, gw = await start_gateway(
            nursery, config_for([{"id": "r", "uri": "/*", "upstream": node}])
        )
        resp = await request(gw)
    assert resp.status == 200
    assert len(upstream.received) == 1


async def test_silent_upstream_is_504(nursery: trio.Nursery) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await trio.sleep_forever()

    port = await nursery.start(raw_serve, silent)
    cfg = config_for(
        [
            {
                "id": "r",
                "uri": "/*",
                "upstream": {
                    "nodes": {f"127.0.0.1:{port}": 1},
                    "timeout": {"connect": 5, "send": 5, "read": 0.3},
                },
            }
        ]
    )
    _, gw = await start_gateway(nursery, cfg)
    resp = await request(gw)
    assert resp.status == 504
    assert resp.body == b'{"error_msg":"504 Gateway Time-out"}\n'


async def test_a_route_timeout_overrides_its_upstreams(nursery: trio.Nursery) -> None:
    """APISIX's route `timeout`: the route's values replace the upstream's, the ones it
    leaves out stay the upstream's."""

    async def silent(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await trio.sleep_forever()

    port = await nursery.start(raw_serve, silent)
    cfg = config_for(
        [{"id": "r", "uri": "/*", "upstream_id": "u", "timeout": {"read": 0.3}}],
        upstreams=[{"id": "u", "nodes": {f"127.0.0.1:{port}": 1}}],
    )
    _, gw = await start_gateway(nursery, cfg)
    with trio.fail_after(20):
        resp = await request(gw)
    assert resp.status == 504
    assert resp.body == b'{"error_msg":"504 Gateway Time-out"}\n'


async def test_a_route_with_status_0_is_disabled(nursery: trio.Nursery, upstream: Upstream) -> None:
    """APISIX's route `status`: 0 takes the route out of matching, 1 (the default) keeps it."""
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "off", "uri": "/a", "status": 0, "priority": 9, "upstream": node},
        {"id": "on", "uri": "/a", "status": 1, "upstream": node},
        {"id": "gone", "uri": "/b", "status": 0, "upstream": node},
    ]
    cfg = config_for(
        [{**r, "plugins": {"proxy-rewrite": {"headers": {"x-route": r["id"]}}}} for r in routes]
    )
    _, gw = await start_gateway(nursery, cfg)
    assert (await request(gw, target="/a")).status == 200
    assert upstream.received[-1].header(b"x-route") == b"on"
    assert (await request(gw, target="/b")).status == 404
    assert len(upstream.received) == 1


async def test_upstream_reset_before_response_is_502(nursery: trio.Nursery) -> None:
    async def hangup(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    _, gw = await start_gateway_to_raw(nursery, hangup)
    assert (await request(gw)).status == 502


def _conn_script(serve_first: int) -> tuple[list[int], object]:
    """An upstream that answers `serve_first` requests per connection, then hangs up on the
    next one without a byte: what a pooled connection that went stale looks like."""
    seen: list[int] = []

    async def handler(stream: trio.SocketStream) -> None:
        index = len(seen)
        seen.append(0)
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            if seen[index] >= serve_first:
                await trio.aclose_forcefully(stream)
                return
            seen[index] += 1
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    return seen, handler


async def test_stale_pooled_connection_retried_once_for_idempotent(nursery: trio.Nursery) -> None:
    seen, handler = _conn_script(serve_first=1)
    _, gw = await start_gateway_to_raw(nursery, handler)
    assert (await request(gw)).status == 200
    # The pooled connection fails without a response byte: GET is retried on a fresh one.
    resp = await request(gw)
    assert resp.status == 200
    assert resp.body == b"ok"
    assert len(seen) == 2
    # POST is not idempotent: no retry, 502.
    resp = await request(gw, "POST", body=b"x")
    assert resp.status == 502
    assert len(seen) == 2


async def test_pooled_connection_with_unexpected_bytes_is_discarded(nursery: trio.Nursery) -> None:
    connections: list[int] = []

    async def chatty(stream: trio.SocketStream) -> None:
        connections.append(1)
        while await stream.receive_some(65536):
            # A complete response followed by bytes nobody asked for.
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
            )

    _, gw = await start_gateway_to_raw(nursery, chatty)
    for _ in range(3):
        resp = await request(gw)
        assert resp.status == 200
        assert resp.body == b"ok"
    assert len(connections) == 3


async def test_weighted_round_robin(
    nursery: trio.Nursery, upstream: Upstream, second_upstream: Upstream
) -> None:
    cfg = config_for(
        [
            {
                "id": "r",
                "uri": "/*",
                "upstream": {
                    "nodes": [
                        {"host": "127.0.0.1", "port": upstream.port, "weight": 3},
                        {"host": "127.0.0.1", "port": second_upstream.port, "weight": 1},
                    ]
                },
            }
        ]
    )
    _, gw = await start_gateway(nursery, cfg)
    for _ in range(8):
        assert (await request(gw)).status == 200
    assert len(upstream.received) == 6
    assert len(second_upstream.received) == 2


async def test_consistent_hashing_keeps_a_key_on_one_node(
    nursery: trio.Nursery, upstream: Upstream, second_upstream: Upstream
) -> None:
    """APISIX's `type: chash`: requests with one key value (a variable, a header, a cookie,
    a combination, the consumer) go to one node; different values spread over the nodes;
    without a value the client's address is the key."""
    third = await nursery.start(Upstream(name="third").serve)
    ups = (upstream, second_upstream, third)
    nodes = {u.address: 1 for u in ups}

    def chash(hash_on: str, key: str | None) -> dict[str, Any]:
        conf = {"nodes": nodes, "type": "chash", "hash_on": hash_on}
        return conf if key is None else {**conf, "key": key}

    routes = [
        {"id": "arg", "uri": "/arg", "upstream": chash("vars", "arg_user")},
        {"id": "hdr", "uri": "/hdr", "upstream": chash("header", "X-User")},
        {"id": "cookie", "uri": "/cookie", "upstream": chash("cookie", "sid")},
        {"id": "combo", "uri": "/combo", "upstream": chash("vars_combinations", "$arg_a-$arg_b")},
        {
            "id": "who",
            "uri": "/who",
            "plugins": {"key-auth": {}},
            "upstream": chash("consumer", None),
        },
    ]
    consumers = [
        {
            "username": f"c{i}",
            "credentials": [{"id": f"k{i}", "plugins": {"key-auth": {"key": f"key{i}"}}}],
        }
        for i in range(12)
    ]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    serial = 0

    async def node_for(
        path: str, query: str = "", headers: list[tuple[str, str]] | None = None
    ) -> str:
        nonlocal serial
        serial += 1
        target = f"{path}?n={serial}" + (f"&{query}" if query else "")
        assert (await request(gw, target=target, headers=headers or [])).status == 200
        (name,) = [u.name for u in ups if any(r.target == target.encode() for r in u.received)]
        return name

    for key_of in (
        lambda i: ("/arg", f"user=u{i}", []),
        lambda i: ("/hdr", "", [("x-user", f"u{i}")]),
        lambda i: ("/cookie", "", [("cookie", f"a=1; sid=s{i}")]),
        lambda i: ("/combo", f"a=x{i}&b=y", []),
        lambda i: ("/who", "", [("apikey", f"key{i}")]),
    ):
        chosen = []
        for i in range(12):
            path, query, headers = key_of(i)
            first = await node_for(path, query, headers)
            assert [await node_for(path, query, headers) for _ in range(3)] == [first] * 3
            chosen.append(first)
        assert len(set(chosen)) > 1, key_of(0)
    # No value: the client's address is the key, so every request goes to one node.
    assert len({await node_for("/arg") for _ in range(6)}) == 1


async def test_least_conn_sends_requests_to_the_node_with_fewest_in_flight(
    nursery: trio.Nursery,
) -> None:
    """APISIX's `type: least_conn`: while one node holds a request, the next ones go to the
    other node (round robin would send every other one to the busy node)."""
    release = trio.Event()
    arrived = trio.Event()

    async def hold(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if req.target == b"/slow":
            arrived.set()
            await release.wait()
        return 200, [], b"first"

    async def fast(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 200, [], b"second"

    first = await nursery.start(Upstream(responder=hold).serve)
    second = await nursery.start(Upstream(responder=fast, name="second").serve)
    nodes = {first.address: 1, second.address: 1}
    route = {"id": "r", "uri": "/*", "upstream": {"nodes": nodes, "type": "least_conn"}}
    _, gw = await start_gateway(nursery, config_for([route]))
    slow: list[Response] = []
    answered = trio.Event()

    async def slow_request() -> None:
        slow.append(await request(gw, target="/slow"))
        answered.set()

    nursery.start_soon(slow_request)
    with trio.fail_after(10):
        await arrived.wait()
    bodies = [(await request(gw, target="/x")).body for _ in range(4)]
    assert bodies == [b"second"] * 4
    release.set()
    with trio.fail_after(10):
        await answered.wait()
    assert slow[0].body == b"first"
    # Nothing in flight any more: a tie, which the first node in order wins.
    bodies = [(await request(gw, target="/x")).body for _ in range(4)]
    assert bodies == [b"first"] * 4


async def test_node_priority_sends_to_the_highest_level_that_answers(
    nursery: trio.Nursery, upstream: Upstream, second_upstream: Upstream
) -> None:
    """APISIX's node `priority`: a node of a lower priority stands in only while every node
    above it is out. Here the highest one refuses connections, so the request goes on to
    the next level, whose node then takes every request; the backup gets none."""
    dead = free_port()
    nodes = [
        {"host": "127.0.0.1", "port": second_upstream.port, "priority": 0},
        {"host": "127.0.0.1", "port": dead, "priority": 2},
        {"host": "127.0.0.1", "port": upstream.port, "priority": 1},
    ]
    route = {"id": "r", "uri": "/*", "upstream": {"nodes": nodes}}
    _, gw = await start_gateway(nursery, config_for([route]))
    assert [(await request(gw)).status for _ in range(6)] == [200] * 6
    assert len(upstream.received) == 6
    assert len(second_upstream.received) == 0


async def test_pass_host_modes(nursery: trio.Nursery, upstream: Upstream) -> None:
    node = {upstream.address: 1}
    cfg = config_for(
        [
            {"id": "pass", "uri": "/pass", "upstream": {"nodes": node}},
            {"id": "node", "uri": "/node", "upstream": {"nodes": node, "pass_host": "node"}},
            {
                "id": "rw",
                "uri": "/rw",
                "upstream": {
                    "nodes": node,
                    "pass_host": "rewrite",
                    "upstream_host": "internal.svc",
                },
            },
        ]
    )
    _, gw = await start_gateway(nursery, cfg)
    for target in ("/pass", "/node", "/rw"):
        assert (
            await request(gw, target=target, headers=[("host", "public.example")])
        ).status == 200
    hosts = [r.header(b"host") for r in upstream.received]
    assert hosts == [b"public.example", upstream.address.encode(), b"internal.svc"]


async def test_upstream_id_service_and_global_rule_merge(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    cfg = config_for(
        [
            {
                "id": "svc-route",
                "uri": "/s/*",
                "service_id": "svc",
                "plugins": {"proxy-rewrite": {"headers": {"set": {"x-from": "route"}}}},
            },
            {"id": "plain", "uri": "/p", "service_id": "svc"},
        ],
        upstreams=[{"id": "u", "nodes": {upstream.address: 1}}],
        services=[
            {
                "id": "svc",
                "upstream_id": "u",
                "plugins": {"proxy-rewrite": {"headers": {"set": {"x-from": "service"}}}},
            }
        ],
    )
    _, gw = await start_gateway(nursery, cfg)
    assert (await request(gw, target="/s/1")).status == 200
    assert (await request(gw, target="/p")).status == 200
    assert upstream.received[0].header(b"x-from") == b"route"
    assert upstream.received[1].header(b"x-from") == b"service"


async def test_proxy_rewrite_end_to_end(nursery: trio.Nursery, upstream: Upstream) -> None:
    cfg = config_for(
        [
            {
                "id": "r",
                "uri": "/api/*",
                "upstream": {"nodes": {upstream.address: 1}},
                "plugins": {
                    "proxy-rewrite": {
                        "regex_uri": ["^/api/(\\w+)/(\\w+)", "/v2/$2/$1"],
                        "host": "backend.internal",
                        "method": "PUT",
                        "headers": {
                            "add": {"x-added": "$remote_addr"},
                            "remove": ["x-remove"],
                            "set": {"x-set": "v-$1"},
                        },
                    }
                },
            }
        ]
    )
    _, gw = await start_gateway(nursery, cfg)
    resp = await request(
        gw, target="/api/users/42?full=1", headers=[("x-remove", "1"), ("x-set", "old")]
    )
    assert resp.status == 200
    got = upstream.received[0]
    assert got.method == b"PUT"
    assert got.target == b"/v2/42/users?full=1"
    assert got.header(b"host") == b"backend.internal"
    assert got.header(b"x-added") == b"127.0.0.1"
    assert got.header(b"x-remove") is None
    assert [v for n, v in got.headers if n == b"x-set"] == [b"v-users"]


async def test_rewritten_uri_reaches_the_upstream_as_a_valid_target(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """A space from the config or a decoded argument would split the request line: the new
    URI is percent-encoded (APISIX's `uri_safe_encode`). `use_real_request_uri_unsafe`
    sends the target as the client sent it."""
    node = {"nodes": {upstream.address: 1}}
    cfg = config_for(
        [
            {"id": "spaced", "uri": "/spaced/*", "upstream": node,
             "plugins": {"proxy-rewrite": {"uri": "/files/my docs/$arg_name"}}},
            {"id": "raw", "uri": "/raw/*", "upstream": node,
             "plugins": {"proxy-rewrite": {"use_real_request_uri_unsafe": True}}},
        ]
    )  # fmt: skip
    _, gw = await start_gateway(nursery, cfg)
    assert (await request(gw, target="/spaced/x?name=a%20b")).status == 200
    assert upstream.received[-1].target == b"/files/my%20docs/a%20b?name=a%20b"
    assert (await request(gw, target="/raw/./a/%7Eb?c=1")).status == 200
    assert upstream.received[-1].target == b"/raw/./a/%7Eb?c=1"


async def test_head_request_has_no_body(nursery: trio.Nursery, upstream: Upstream) -> None:
    _, gw = await start_gateway(nursery, config_for([route(upstream)]))
    stream = await connect(gw)
    async with stream:
        await stream.send_all(
            b"HEAD /h HTTP/1.1\r\nhost: x\r\n\r\nGET /after HTTP/1.1\r\nhost: x\r\n\r\n"
        )
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="HEAD", target="/h", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        head = await read_response(stream, conn)
        assert head.status == 200
        assert head.body == b""
        conn.start_next_cycle()
        conn.send(h11.Request(method="GET", target="/after", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        after = await read_response(stream, conn)
        assert after.json()["target"] == "/after"


async def test_no_content_answer_carries_no_framing_headers(nursery: trio.Nursery) -> None:
    """RFC 9110 section 8.6, RFC 9112 section 6.1: a 204 has no Content-Length or
    Transfer-Encoding, whatever the upstream sent (nginx drops them too); the bytes the
    upstream wrongly sent after it never reach the client."""

    no_content = answering(
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\nx-up: 1\r\n\r\nhello",
        b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n",
        then="hold",
    )
    _, gw = await start_gateway_to_raw(nursery, no_content)
    raw = await exchange_raw(
        gw,
        b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET /b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    first, second = raw.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"204 ")
    assert b"x-up: 1\r\n" in first
    assert first.endswith(b"\r\n\r\n")  # nothing after the head: no "hello"
    assert second.startswith(b"204 ")
    assert second.endswith(b"\r\n\r\n")
    for answer in (first, second):
        assert b"content-length" not in answer.lower()
        assert b"transfer-encoding" not in answer.lower()


@pytest.mark.parametrize("then", ["holds", "closes"])
async def test_early_upstream_answer_to_an_upload_is_relayed(
    nursery: trio.Nursery, upstream: Upstream, then: str
) -> None:
    """An upstream may answer before it has read the body (RFC 9112 section 9.3), saying it
    closes the connection, and then stop reading ("holds") or close ("closes", a reset: it
    left bytes unread). The gateway stops sending the body (RFC 9112 section 9.5), relays
    the answer and closes the client connection (its body was not read to the end)."""
    answered: list[int] = []

    async def refuse_upload(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 9\r\n\r\n"
            b"too large"
        )
        answered.append(1)
        if then == "closes":
            await trio.aclose_forcefully(stream)
        else:
            await trio.sleep_forever()

    port = await nursery.start(raw_serve, refuse_upload)
    routes = [
        {
            "id": "upload",
            "uri": "/upload",
            "upstream": {"nodes": {f"127.0.0.1:{port}": 1}, "timeout": {"send": 30}},
        },
        route(upstream),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    size = 64 << 20  # far more than the socket buffers between the client and the upstream
    stream = await connect(gw)
    async with stream:

        async def upload() -> None:
            await stream.send_all(
                b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size
            )
            piece = b"x" * 65536
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(size // len(piece)):
                    await stream.send_all(piece)

        async with trio.open_nursery() as client:
            client.start_soon(upload)
            with trio.fail_after(10):  # well before the 30 s send timeout
                raw = await read_until_close(stream)
            client.cancel_scope.cancel()
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert raw.endswith(b"\r\n\r\ntoo large")
    assert b"\r\nconnection: close\r\n" in raw.lower()
    # The gateway serves on; the next upload to that upstream takes a new connection.
    assert (await request(gw, target="/other")).status == 200
    answer = await request(gw, "POST", "/upload", body=b"small")
    assert answer.status == 413
    assert len(answered) == 2


async def test_interim_answer_during_an_upload_does_not_stop_it(nursery: trio.Nursery) -> None:
    """A 103 that arrives while the body is still going out is not an early answer: the
    whole body still reaches the upstream, and the client gets the final answer."""
    size = 16 << 20

    async def hints_first(stream: trio.SocketStream) -> None:
        data = await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
        await trio.sleep(0.5)  # the gateway's writes back up meanwhile, with the 103 readable
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        body = len(data) - data.index(b"\r\n\r\n") - 4
        while body < size:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            body += len(chunk)
        length = b"%d" % body
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(length) + length
        )
        await trio.sleep_forever()

    _, gw = await start_gateway_to_raw(nursery, hints_first)
    with trio.fail_after(30):
        answer = await request(gw, "POST", "/upload", body=b"x" * size)
    assert answer.status == 200
    assert answer.body == b"%d" % size


async def test_early_answer_on_a_kept_connection_still_sends_the_body(
    nursery: trio.Nursery,
) -> None:
    """An upstream that answers at once but keeps the connection (nginx's `return` does)
    reads or discards the body: the gateway sends all of it, relays the answer, and both
    connections serve the next request."""
    size = 16 << 20
    bodies: list[int] = []
    connections: list[int] = []
    both_read = trio.Event()

    async def answer_first(stream: trio.SocketStream) -> None:
        connections.append(1)
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
            await trio.sleep(0.3)  # the gateway's writes back up, with the answer readable
            while len(data) < length:
                data += await stream.receive_some(65536)
            bodies.append(length)
            if len(bodies) == 2:
                both_read.set()
            data = data[length:]

    _, gw = await start_gateway_to_raw(nursery, answer_first)
    stream = await connect(gw)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        for _ in range(2):
            data = conn.send(
                h11.Request(
                    method="POST",
                    target="/upload",
                    headers=[("host", "x"), ("content-length", str(size))],
                )
            )
            async with trio.open_nursery() as client:
                client.start_soon(stream.send_all, data + conn.send(h11.Data(b"x" * size)))
                conn.send(h11.EndOfMessage())
                with trio.fail_after(30):
                    answer = await read_response(stream, conn)
            assert answer.status == 200
            assert answer.body == b"ok\n"
            assert answer.header(b"connection") is None
            conn.start_next_cycle()
    with trio.fail_after(10):
        await both_read.wait()
    assert bodies == [size, size]  # both bodies whole, on the one upstream connection
    assert len(connections) == 1


async def test_ewma_sends_requests_to_the_faster_node(nursery: trio.Nursery) -> None:
    """APISIX's `type: ewma`: once each node has answered, the one whose answers came
    faster takes the requests (a node that took 300 ms is not picked again soon)."""

    async def slow(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        await trio.sleep(0.3)
        return 200, [], b"slow"

    async def fast(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 200, [], b"fast"

    slow_up = await nursery.start(Upstream(responder=slow).serve)
    fast_up = await nursery.start(Upstream(responder=fast, name="fast").serve)
    nodes = {slow_up.address: 1, fast_up.address: 1}
    route = {"id": "r", "uri": "/*", "upstream": {"nodes": nodes, "type": "ewma"}}
    _, gw = await start_gateway(nursery, config_for([route]))
    bodies = [(await request(gw, target="/x")).body for _ in range(12)]
    # Before any answer both score 0: the first picks may go to either, but once the slow
    # node answered it has the higher average for the rest of this test.
    assert bodies.count(b"slow") <= 1
    assert bodies[-10:] == [b"fast"] * 10
