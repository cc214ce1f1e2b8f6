"""Hostile traffic over real sockets (SPEC sections 6 and 7): refused framing never reaches
the upstream, limits answer 408/414/431, slow senders are cut, misbehaving upstreams do not
poison the pool, aborted clients release the upstream connection."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio

from gateway.plugins.key_auth import KeyAuth
from gateway.server import Gateway
from tests.e2e.test_proxy import _conn_script
from tests.helpers import (
    Upstream,
    answering,
    config_for,
    connect,
    exchange_raw,
    raw_serve,
    read_response,
    read_until_close,
    request,
    start_gateway,
    start_gateway_to_raw,
)


def node(upstream: Upstream) -> dict[str, object]:
    return {"nodes": {upstream.address: 1}}


async def start_gateway_with_limits(
    nursery: trio.Nursery, upstream: Upstream, **limits: float
) -> tuple[Gateway, str]:
    """A gateway with one route, `/*` to `upstream`, and these `server.limits`."""
    routes = [{"id": "r", "uri": "/*", "upstream": node(upstream)}]
    return await start_gateway(nursery, config_for(routes, server={"limits": limits}))


SMUGGLING = [
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded: yes\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    (b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 4\r\n\r\nabcd", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX_Consumer_Username: admin\r\n\r\n", 400),
    (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffffffff\r\n",
        400,
    ),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(101))
        + b"\r\n",
        431,
    ),
    (
        b"GET / HTTP/1.1\r\n"
        + b"X-Filler: "
        + b"v" * 8000
        + b"\r\n" * 1
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 4000) for i in range(8))
        + b"\r\n",
        431,
    ),
    (b"GET /%2e%2e/etc HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    # RFC 9112 section 3.2: a Host that is not host[:port] is a 400.
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: user@internal\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", 400),  # an empty label (nginx: 400)
    # An empty one names no host (nginx: "client sent invalid host header"); a request
    # without Host at all is HTTP/1.0's right only.
    (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nHost: \r\n\r\n", 400),
    (b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    # As nginx: a NUL in the path (its C upstreams would cut the path there), a method
    # that is not upper-case letters, `_` and `-`, an HTTP major version other than 1
    # (checked against nginx 1.22: 505 for 2.0, 400 for 0.9).
    (b"GET /a%00.php HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"G3T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 400),
]


@pytest.mark.parametrize(("data", "status"), SMUGGLING)
async def test_refused_framing_never_reaches_the_upstream(
    nursery: trio.Nursery, upstream: Upstream, data: bytes, status: int
) -> None:
    _, gw = await start_gateway(
        nursery, config_for([{"id": "r", "uri": "/*", "upstream": node(upstream)}])
    )
    raw = await exchange_raw(gw, data)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:80]
    assert b"\r\nconnection: close\r\n" in raw.lower()
    assert raw.count(b"HTTP/1.1 ") == 1  # nothing after the answer: the connection closed
    assert upstream.received == []


@pytest.mark.parametrize(
    "data",
    [
        b"TRACE /x HTTP/1.1\r\nHost: x\r\nCookie: session=1\r\n\r\n",
        b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    ],
)
async def test_trace_and_connect_are_not_allowed(
    nursery: trio.Nursery, upstream: Upstream, data: bytes
) -> None:
    """nginx, and so APISIX, answers TRACE and CONNECT 405 before any routing: TRACE would
    echo the request's headers (cookies, credentials) back to the client, and CONNECT asks
    for a tunnel the gateway does not offer."""
    routes = [{"id": "r", "uri": "/*", "upstream": node(upstream)}]
    _, gw = await start_gateway(nursery, config_for(routes))
    raw = await exchange_raw(gw, data)
    assert raw.startswith(b"HTTP/1.1 405 "), raw[:80]
    assert raw.endswith(b'{"error_msg":"405 Not Allowed"}\n')
    assert upstream.received == []


async def test_path_normalised_before_routing(nursery: trio.Nursery, upstream: Upstream) -> None:
    routes = [
        {"id": "admin", "uri": "/admin/*", "upstream": node(upstream), "plugins": {"key-auth": {}}},
        {"id": "public", "uri": "/*", "upstream": node(upstream)},
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    tricks = [
        "/public/../admin/users",
        "//admin/users",
        "/%61dmin/users",
        "/./admin/./users",
        # A fragment is the client's own (RFC 9110 section 4.2.5): an upstream would drop
        # it and serve /admin/users, so it must not route the request elsewhere.
        "/admin/users#x",
    ]
    for target in [*tricks, "/public/%2e%2e/admin/users"]:
        resp = await request(gw, target=target)
        assert resp.status == 401, target
    assert upstream.received == []
    assert (await request(gw, target="/public/a/../b?x=1")).status == 200
    assert upstream.received[-1].target == b"/public/b?x=1"
    assert (await request(gw, target="/public/c?y=2#frag")).status == 200
    assert upstream.received[-1].target == b"/public/c?y=2"
    assert (await request(gw, target="/public/a%2Fb")).status == 200  # %2F is data
    assert upstream.received[-1].target == b"/public/a%2Fb"
    # ... but not beside `..`: an upstream that decodes it would climb to /admin.
    assert (await request(gw, target="/public/..%2Fadmin")).status == 400


async def test_a_config_regex_that_backtracks_on_hostile_input_is_cut(
    nursery: trio.Nursery, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """`(a|aa)+$` tries exponentially many ways on `aaa…a!`: Python's `re` would hold the
    worker for seconds on 36 characters (minutes on 50), serving no one. A config regex
    matched against what a client sent gets a time budget (APISIX's PCRE has its match
    limit): past it the request is answered 500, and the gateway serves on."""
    routes = [
        {
            "id": "r",
            "uri": "/*",
            "upstream": node(upstream),
            "plugins": {"ua-restriction": {"denylist": ["(a|aa)+$", "curl"]}},
        }
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    with caplog.at_level(logging.WARNING, logger="gateway"):
        hostile = await request(gw, headers=[("user-agent", "a" * 36 + "!")])
    assert hostile.status == 500
    assert "the pattern '(?:(a|aa)+$)|(?:curl)' ran past 0.1 s" in caplog.text
    assert "Traceback" not in caplog.text  # not a bug of the gateway's
    assert (await request(gw, headers=[("user-agent", "curl/8")])).status == 403
    assert (await request(gw, headers=[("user-agent", "aaaa")])).status == 403
    assert (await request(gw, headers=[("user-agent", "browser")])).status == 200
    assert len(upstream.received) == 1


@pytest.mark.parametrize(
    "where",
    [
        {"vars": [["http_x_name", "~~", "(a|aa)+$"]]},
        {"plugins": {"uri-blocker": {"block_rules": ["(a|aa)+$"]}}},
        {"plugins": {"proxy-rewrite": {"regex_uri": ["(a|aa)+$", "/x"]}}},
        {"plugins": {"redirect": {"regex_uri": ["(a|aa)+$", "/x"]}}},
        {
            "plugins": {
                "request-validation": {
                    "header_schema": {
                        "properties": {"x-name": {"type": "string", "pattern": "(a|aa)+$"}}
                    }
                }
            }
        },
        {
            "plugins": {
                "request-validation": {
                    "header_schema": {"patternProperties": {"(a|aa)+$": {"type": "string"}}}
                }
            }
        },
        # (cors judges the Origin as the response goes out: the upstream was asked)
        {"plugins": {"cors": {"allow_origins_by_regex": ["(a|aa)+$"]}}},
    ],
)
async def test_every_config_regex_meeting_a_request_is_bounded(
    nursery: trio.Nursery, upstream: Upstream, where: dict[str, object]
) -> None:
    routes = [{"id": "r", "uri": "/*", "upstream": node(upstream), **where}]
    _, gw = await start_gateway(nursery, config_for(routes))
    hostile = "a" * 40 + "!"
    headers = [("x-name", hostile), ("origin", hostile), (hostile, "1")]
    assert (await request(gw, target="/" + hostile, headers=headers)).status == 500
    assert len(upstream.received) == ("cors" in str(where))
    assert (await request(gw, target="/ok", headers=[("x-name", "aa")])).status == 200


async def test_slowloris_cut_at_head_deadline_while_others_are_served(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    _, gw = await start_gateway_with_limits(nursery, upstream, head_timeout=1)
    closed_at: list[float] = []
    start = trio.current_time()

    async def slow_sender() -> None:
        stream = await connect(gw)
        async with stream:
            try:
                for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.1)
            except trio.BrokenResourceError:
                pass
            await read_until_close(stream)
        closed_at.append(trio.current_time() - start)

    async with trio.open_nursery() as attackers:
        for _ in range(200):
            attackers.start_soon(slow_sender)
        await trio.sleep(0.3)
        asked = trio.current_time()
        with trio.fail_after(5):
            assert (await request(gw)).status == 200
        print(f"normal request during slowloris: {(trio.current_time() - asked) * 1000:.0f} ms")
    assert len(closed_at) == 200
    print(f"200 slowloris connections cut by {max(closed_at):.2f} s (head deadline 1 s)")
    assert max(closed_at) < 1 + 5  # head deadline plus the lingering answer


async def test_head_deadline_is_not_reset_by_each_byte(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    _, gw = await start_gateway_with_limits(nursery, upstream, head_timeout=0.5)
    stream = await connect(gw)
    async with stream:
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.05)
        raw = await read_until_close(stream)
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert upstream.received == []


@pytest.mark.parametrize(
    "start",
    [
        b"POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        b"POST /stalled HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ],
)
async def test_stalled_body_is_408_and_its_upstream_connection_is_dropped(
    nursery: trio.Nursery, upstream: Upstream, start: bytes
) -> None:
    _, gw = await start_gateway_with_limits(nursery, upstream, body_idle_timeout=0.5)
    raw = await exchange_raw(gw, start)  # then silence: the gateway answers and closes
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert raw.endswith(b'{"error_msg":"408 Request Time-out"}\n')
    assert upstream.received == []  # it got a head and a part of a body, never a request
    # The upstream connection that carried the part is never reused for the next request.
    assert (await request(gw)).status == 200
    assert [r.target for r in upstream.received] == [b"/"]
    assert upstream.received[0].connection == 1


async def test_slow_but_steady_body_is_not_cut(nursery: trio.Nursery, upstream: Upstream) -> None:
    """The body timeout counts between reads, not for the whole body (nginx's
    client_body_timeout): twenty bytes 0.1 s apart outlast 1 s and arrive whole."""
    _, gw = await start_gateway_with_limits(nursery, upstream, body_idle_timeout=1)
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n")
        for byte in b"0123456789" * 2:
            await trio.sleep(0.1)
            await stream.send_all(bytes([byte]))
        answer = await read_response(stream)
    assert answer.status == 200
    assert upstream.received[0].body == b"0123456789" * 2


async def test_keepalive_idle_connection_closed(nursery: trio.Nursery, upstream: Upstream) -> None:
    _, gw = await start_gateway_with_limits(nursery, upstream, keepalive_timeout=0.3)
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(stream)).status == 200
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b""


async def test_max_connections_stops_accepting_then_resumes(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    gateway, gw = await start_gateway_with_limits(nursery, upstream, max_connections=2)
    held = [await connect(gw) for _ in range(2)]
    waiting = await connect(gw)  # the kernel backlog accepts it; the gateway does not serve it
    await waiting.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.move_on_after(0.5) as scope:
        await waiting.receive_some(100)
    assert scope.cancelled_caught
    assert len(gateway.connections) == 2
    await held[0].aclose()
    with trio.fail_after(5):
        assert (await read_response(waiting)).status == 200
    await held[1].aclose()
    await waiting.aclose()


async def test_upstream_closing_after_every_response(nursery: trio.Nursery) -> None:
    connections: list[int] = []

    async def one_shot(stream: trio.SocketStream) -> None:
        connections.append(1)
        await stream.receive_some(65536)
        # No Connection: close, but the socket closes right after the response.
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await stream.aclose()

    _, gw = await start_gateway_to_raw(nursery, one_shot)
    for _ in range(5):
        resp = await request(gw)
        assert (resp.status, resp.body) == (200, b"ok")
        await trio.sleep(0.01)
    assert len(connections) == 5


async def test_reset_mid_response_truncates_and_closes(nursery: trio.Nursery) -> None:
    half = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 40, then="reset")
    _, gw = await start_gateway_to_raw(nursery, half)
    raw = await exchange_raw(
        gw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 100" in head.lower()
    assert body == b"x" * 40  # truncated, then closed: never a complete-looking response


async def test_stale_pooled_connection_not_retried_for_post(nursery: trio.Nursery) -> None:
    seen, handler = _conn_script(serve_first=1)
    _, gw = await start_gateway_to_raw(nursery, handler)
    assert (await request(gw)).status == 200
    assert (await request(gw, "POST", body=b"once")).status == 502
    assert len(seen) == 1


def endless_download(closed: trio.Event) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """An upstream answering with a chunked body that never ends; sets `closed` when the
    gateway drops the connection."""

    async def endless(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        try:
            await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            while True:
                await stream.send_all(b"10000\r\n" + b"z" * 0x10000 + b"\r\n")
        except (trio.BrokenResourceError, OSError):
            closed.set()

    return endless


async def test_aborted_download_releases_the_upstream_connection(nursery: trio.Nursery) -> None:
    upstream_closed = trio.Event()
    gateway, gw = await start_gateway_to_raw(nursery, endless_download(upstream_closed))
    stream = await connect(gw)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await stream.receive_some(65536)
    await trio.aclose_forcefully(stream)
    with trio.fail_after(10):
        await upstream_closed.wait()
    with trio.fail_after(10):
        while gateway.connections:  # noqa: ASYNC110 (polls a state summary; no event exists)
            await trio.sleep(0.01)
    assert gateway.pools.statistics()["idle"] == 0


async def test_client_that_stops_reading_is_cut_after_send_timeout(
    nursery: trio.Nursery,
) -> None:
    """A slow-read client (nginx `send_timeout`): once a write to it has made no progress
    for `send_timeout`, its connection closes and the upstream connection is released."""
    upstream_closed = trio.Event()
    port = await nursery.start(raw_serve, endless_download(upstream_closed))
    cfg = config_for(
        [{"id": "r", "uri": "/*", "upstream": {"nodes": {f"127.0.0.1:{port}": 1}}}],
        server={"limits": {"send_timeout": 0.5}},
    )
    gateway, gw = await start_gateway(nursery, cfg)
    stream = await connect(gw)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(20):  # never read: only the send timeout can end this
        await upstream_closed.wait()
    with trio.fail_after(10):
        while gateway.connections:  # noqa: ASYNC110 (polls a state summary; no event exists)
            await trio.sleep(0.01)
    await trio.aclose_forcefully(stream)


async def test_aborted_upload_releases_the_upstream_connection(nursery: trio.Nursery) -> None:
    upstream_closed = trio.Event()

    async def reader(stream: trio.SocketStream) -> None:
        try:
            while await stream.receive_some(65536):
                pass
        finally:
            upstream_closed.set()

    gateway, gw = await start_gateway_to_raw(nursery, reader)
    stream = await connect(gw)
    await stream.send_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + b"a" * 100_000
    )
    await trio.sleep(0.1)
    await trio.aclose_forcefully(stream)
    with trio.fail_after(10):
        await upstream_closed.wait()
    with trio.fail_after(10):
        while gateway.connections:  # noqa: ASYNC110 (polls a state summary; no event exists)
            await trio.sleep(0.01)


async def test_drain_serves_a_request_that_already_arrived(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    gateway, gw = await start_gateway(
        nursery, config_for([{"id": "r", "uri": "/*", "upstream": node(upstream)}])
    )
    host, _, port = gw.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    with trio.fail_after(10):
        while not any(c.idle_scope is not None for c in gateway.connections):  # noqa: ASYNC110
            await trio.sleep(0.01)
    # A plain blocking send: no trio checkpoint, so the gateway's connection task is still
    # waiting, idle, when the request bytes land in its socket buffer and the drain begins.
    sock.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
    gateway.stop()
    sock.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    async with stream:
        raw = await read_until_close(stream)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in raw.lower()
    assert upstream.received[-1].target == b"/late"


@pytest.mark.parametrize("lines", [720, 2000])
async def test_an_upstream_head_past_64_kib_is_502(nursery: trio.Nursery, lines: int) -> None:
    """Whole, not only while it is still arriving (nginx: "upstream sent too big header")."""
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Big: %s\r\n" % (b"v" * 90) * lines
    _, gw = await start_gateway_to_raw(
        nursery, answering(head + b"Content-Length: 2\r\n\r\nok", then="hold")
    )
    raw = await exchange_raw(gw, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 502 "), raw[:60]
    assert b"x-big" not in raw.lower()


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nBad Name: v\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        # A body that cannot be framed from its first byte, read with the head.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"NOT HTTP\r\n\r\n",
        # Neither interim nor final: it used to be waited past, as if interim, until 504.
        b"HTTP/1.1 099 Below\r\nContent-Length: 2\r\n\r\nok",
        # A transfer coding the gateway would not decode: relayed as if identity, the
        # client would read gzip bytes as the body (as through nginx 1.22, which relays it).
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc",
    ],
)
async def test_malformed_upstream_responses_are_502_and_the_gateway_survives(
    nursery: trio.Nursery, upstream: Upstream, head: bytes
) -> None:
    port = await nursery.start(raw_serve, answering(head, then="hold"))
    routes = [
        {"id": "broken", "uri": "/broken", "upstream": {"nodes": {f"127.0.0.1:{port}": 1}}},
        {"id": "fine", "uri": "/fine", "upstream": node(upstream)},
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    # Read as raw bytes: a client parser would refuse some of these heads itself, and so
    # could not tell a relayed one from a refused one.
    raw = await exchange_raw(gw, b"GET /broken HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 502 "), raw[:80]
    assert raw.endswith(b'{"error_msg":"502 Bad Gateway"}\n')
    assert (await request(gw, target="/fine")).status == 200


async def test_a_body_that_goes_bad_after_the_head_went_out_is_cut(nursery: trio.Nursery) -> None:
    first_piece_seen = trio.Event()  # the bad chunk follows once the client has the head

    async def goes_bad(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
        await first_piece_seen.wait()
        await stream.send_all(b"zz\r\n")
        await trio.sleep_forever()

    _, gw = await start_gateway_to_raw(nursery, goes_bad)
    stream = await connect(gw)
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        with trio.fail_after(10):
            while not raw.endswith(b"2\r\nok\r\n"):
                raw += await stream.receive_some(65536)
            first_piece_seen.set()
            raw += await read_until_close(stream)
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:80]
    assert raw.endswith(b"\r\n\r\n2\r\nok\r\n")  # closed, never a complete-looking end


async def test_a_fault_in_a_plugin_is_a_500_and_the_gateway_serves_on(
    nursery: trio.Nursery, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no handler expected (a bug) answers that request 500, as nginx answers
    a failed Lua handler, and closes its connection; other requests are served."""

    def broken(self: KeyAuth, ctx: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(KeyAuth, "rewrite", broken)
    routes = [
        {"id": "k", "uri": "/k/*", "plugins": {"key-auth": {}}, "upstream": node(upstream)},
        {"id": "r", "uri": "/*", "upstream": node(upstream)},
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    resp = await request(gw, target="/k/x", headers=[("apikey", "x")])
    assert resp.status == 500
    assert resp.body == b'{"error_msg":"500 Internal Server Error"}\n'
    assert resp.header(b"connection") == b"close"
    assert upstream.received == []
    assert (await request(gw, target="/other")).status == 200
