"""file-logger and http-logger: APISIX's log entries (or a `log_format`) per request, with
credentials never written."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.config.load import load
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from tests.helpers import (
    Arrivals,
    LogLine,
    Received,
    Upstream,
    config_for,
    free_port,
    raw_serve,
    request,
    start_gateway,
)

KEY = "s3cret-key-value"


def logged_config(upstream: Upstream, **loggers: dict[str, Any]) -> dict[str, Any]:
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": rid, "uri": f"/{rid}", "upstream": node, "plugins": {"key-auth": {}, rid: conf}}
        for rid, conf in loggers.items()
    ]
    consumers = [{"username": "jack", "plugins": {"key-auth": {"key": KEY}}}]
    return config_for(routes, consumers=consumers)


async def test_file_logger_writes_apisix_entries(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    full, custom = tmp_path / "full.log", tmp_path / "custom.log"
    fmt = {"client": "$remote_addr", "status": "$status", "key": "$http_apikey",
           "uri": "$request_uri", "team": "api", "took": "$request_time"}  # fmt: skip
    routes = [
        {"id": "full", "uri": "/full", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"key-auth": {}, "file-logger": {"path": str(full)}}},
        {"id": "custom", "uri": "/custom", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"key-auth": {},
                     "file-logger": {"path": str(custom), "log_format": fmt,
                                     "match": [["arg_skip", "~=", "1"]]}}},
    ]  # fmt: skip
    consumers = [{"username": "jack", "plugins": {"key-auth": {"key": KEY}}}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))

    assert (await request(gw, target="/full?a=1", headers=[("apikey", KEY)])).status == 200
    assert (await request(gw, target=f"/full?apikey={KEY}&b=2")).status == 200
    assert (await request(gw, target="/full", headers=[("apikey", "wrong")])).status == 401
    for target in (f"/custom?apikey={KEY}", f"/custom?apikey={KEY}&skip=1"):
        await request(gw, target=target)

    text = full.read_text()
    assert KEY not in text
    first, second, refused = (json.loads(line) for line in text.splitlines())
    assert first["route_id"] == "full"
    assert first["consumer"] == {"username": "jack"}
    assert first["request"]["method"] == "GET"
    assert first["request"]["uri"] == "/full?a=1"
    assert first["request"]["headers"]["apikey"] == "[redacted]"
    assert first["request"]["querystring"] == {"a": "1"}
    assert first["request"]["size"] > 0
    assert first["response"]["status"] == 200
    assert first["response"]["size"] > 0
    assert first["response"]["headers"]["content-type"] == "application/json"
    assert first["upstream"] == upstream.address
    assert first["client_ip"] == "127.0.0.1"
    assert first["latency"] >= first["upstream_latency"] >= 0
    assert second["request"]["uri"] == "/full?apikey=[redacted]&b=2"
    assert second["request"]["querystring"] == {"apikey": "[redacted]", "b": "2"}
    assert refused["response"]["status"] == 401
    assert "consumer" not in refused
    assert "upstream_latency" not in refused

    (line,) = custom.read_text().splitlines()  # `match` left the second one out
    entry = json.loads(line)
    assert entry["client"] == "127.0.0.1"
    assert entry["status"] == "200"
    assert entry["key"] is None  # no apikey header; the query's is redacted below
    assert entry["uri"] == "/custom?apikey=[redacted]"
    assert entry["team"] == "api"
    assert float(entry["took"]) >= 0


class Collector:
    """A log collector: records every POST; answers `statuses` in turn, then 200."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.server = Upstream(responder=self._respond, name="collector")
        self._posted = trio.Event()

    async def _respond(self, req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self._posted.set()
        return (self.statuses.pop(0) if self.statuses else 200), [], b""

    async def wait_posts(self, count: int) -> list[Received]:
        with trio.fail_after(20):
            while len(self.server.received) < count:
                self._posted = trio.Event()
                await self._posted.wait()
        return self.server.received


def http_logger(collector: Collector, **conf: Any) -> dict[str, Any]:
    return {"uri": f"http://{collector.server.address}/logs", **conf}


async def test_http_logger_posts_batches(
    nursery: trio.Nursery, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    full, lines, retried = Collector(), Collector(), Collector(500)
    for c in (full, lines, retried):
        await nursery.start(c.server.serve)
    down = f"127.0.0.1:{free_port()}"
    routes = {
        "batched": http_logger(full, batch_max_size=2, auth_header="Bearer collector-token"),
        "lines": http_logger(lines, concat_method="new_line", inactive_timeout=1,
                             log_format={"route": "$route_id", "key": "$arg_apikey"}),
        "retried": http_logger(retried, batch_max_size=1, max_retry_count=1, retry_delay=0),
        "lost": {"uri": f"http://{down}/logs", "batch_max_size": 1, "name": "lost logs",
                 "auth_header": "Basic c2VjcmV0"},
    }  # fmt: skip
    config = logged_config(upstream, **{})
    node = {"nodes": {upstream.address: 1}}
    config["routes"] = [
        {"id": rid, "uri": f"/{rid}", "upstream": node,
         "plugins": {"key-auth": {}, "http-logger": conf}}
        for rid, conf in routes.items()
    ]  # fmt: skip
    gateway, gw = await start_gateway(nursery, config)
    key = [("apikey", KEY)]

    # A full batch goes at once: one POST, a JSON array, with the collector's credentials.
    for _ in range(2):
        assert (await request(gw, target="/batched", headers=key)).status == 200
    (post,) = await full.wait_posts(1)
    assert post.method == b"POST"
    assert post.target == b"/logs"
    assert post.header(b"authorization") == b"Bearer collector-token"
    assert post.header(b"content-type") == b"application/json"
    entries = json.loads(post.body)
    assert [e["route_id"] for e in entries] == ["batched", "batched"]
    assert entries[0]["consumer"] == {"username": "jack"}
    assert KEY.encode() not in post.body

    # new_line: one entry per line, after inactive_timeout.
    assert (await request(gw, target=f"/lines?apikey={KEY}")).status == 200
    (post,) = await lines.wait_posts(1)
    assert [json.loads(line) for line in post.body.splitlines()] == [
        {"route": "lines", "key": "[redacted]"}
    ]

    # A failed post is tried again.
    assert (await request(gw, target="/retried", headers=key)).status == 200
    first, second = await retried.wait_posts(2)
    assert first.body == second.body

    # A collector that is down: the batch is dropped, said once, with no credentials.
    dropped = LogLine("dropped")
    logging.getLogger("gateway").addHandler(dropped)
    assert (await request(gw, target="/lost", headers=key)).status == 200
    with trio.fail_after(20):
        await dropped.seen.wait()
    logging.getLogger("gateway").removeHandler(dropped)
    assert "http-logger 'lost logs': a batch of 1 entries dropped" in caplog.text
    assert "c2VjcmV0" not in caplog.text
    assert KEY not in caplog.text

    # A graceful stop posts what is still queued.
    assert (await request(gw, target="/batched", headers=key)).status == 200
    gateway.stop()
    _, post = await full.wait_posts(2)
    assert [e["route_id"] for e in json.loads(post.body)] == ["batched"]


async def test_a_reload_starts_the_loggers_it_adds(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    """A reload compiles on a worker thread, where a new logger's queue cannot wake the
    shipper: the reload wakes it once back in the trio thread."""
    collector = Collector()
    await nursery.start(collector.server.serve)
    node = {"nodes": {upstream.address: 1}}
    config = config_for([{"id": "r", "uri": "/r", "upstream": node}])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    registry = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=registry), registry)
    gw = (await nursery.start(gateway.serve))[0]
    config["routes"][0]["plugins"] = {"http-logger": http_logger(collector, batch_max_size=1)}
    path.write_text(json.dumps(config))
    assert await gateway.reload()
    assert (await request(gw, target="/r")).status == 200
    (post,) = await collector.wait_posts(1)
    assert json.loads(post.body)[0]["request"]["uri"] == "/r"


async def test_bodies_in_entries(nursery: trio.Nursery, upstream: Upstream, tmp_path: Path) -> None:
    """`include_req_body` / `include_resp_body`: the bodies as they went by, up to
    `max_req_body_bytes` / `max_resp_body_bytes`, when their `_expr` rules hold."""
    both, capped, chosen = tmp_path / "both.log", tmp_path / "capped.log", tmp_path / "chosen.log"
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "both", "uri": "/both", "upstream": node,
         "plugins": {"file-logger": {"path": str(both), "include_req_body": True,
                                     "include_resp_body": True}}},
        {"id": "capped", "uri": "/capped", "upstream": node,
         "plugins": {"file-logger": {"path": str(capped), "include_req_body": True,
                                     "include_resp_body": True, "max_req_body_bytes": 5,
                                     "max_resp_body_bytes": 7}}},
        {"id": "chosen", "uri": "/chosen", "upstream": node,
         "plugins": {"key-auth": {},
                     "file-logger": {"path": str(chosen), "include_req_body": True,
                                     "include_req_body_expr": [["arg_log", "==", "yes"]],
                                     "include_resp_body": True,
                                     "include_resp_body_expr": [["status", "==", 401]]}}},
    ]  # fmt: skip
    consumers = [{"username": "jack", "plugins": {"key-auth": {"key": KEY}}}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))

    sent = b'{"order": 1, "items": ["a", "b"]}'
    resp = await request(gw, "POST", "/both", body=sent)
    assert resp.status == 200
    # A chunked body is kept as it was decoded.
    chunked = await request(
        gw,
        "POST",
        "/both",
        headers=[("Transfer-Encoding", "chunked")],
        body=b"abc",
    )
    assert chunked.status == 200
    assert (await request(gw, target="/both")).status == 200
    first, second, third = (json.loads(line) for line in both.read_text().splitlines())
    assert first["request"]["body"] == sent.decode()
    assert first["response"]["body"] == resp.body.decode()
    assert second["request"]["body"] == "abc"
    assert "body" not in third["request"]  # no body sent
    assert json.loads(third["response"]["body"])["method"] == "GET"  # the echo upstream's

    await request(gw, "POST", "/capped", body=b"0123456789")
    (entry,) = (json.loads(line) for line in capped.read_text().splitlines())
    assert entry["request"]["body"] == "01234"
    assert len(entry["response"]["body"]) == 7
    assert upstream.received[-1].body == b"0123456789"  # the upstream got all of it

    await request(gw, "POST", "/chosen?log=yes", headers=[("apikey", KEY)], body=b"logged")
    await request(gw, "POST", "/chosen?log=no", headers=[("apikey", KEY)], body=b"not logged")
    await request(gw, "POST", "/chosen?log=yes", body=b"refused")
    yes, no, refused = (json.loads(line) for line in chosen.read_text().splitlines())
    assert yes["request"]["body"] == "logged"
    assert "body" not in yes["response"]  # a 200: the response rule does not hold
    assert "body" not in no["request"]
    assert refused["response"]["status"] == 401
    assert json.loads(refused["response"]["body"]) == {"message": "Missing API key in request"}


async def socket_collectors(
    nursery: trio.Nursery,
) -> tuple[list[bytes], Arrivals, int, trio.socket.SocketType]:
    """A TCP collector (what each connection sent, in `received`, `arrivals` told) and a
    bound UDP socket, for the socket loggers."""
    received: list[bytes] = []
    arrivals = Arrivals()

    async def collect(stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while chunk := await stream.receive_some(65536):
                data += chunk
        received.append(data)
        arrivals.arrived()

    tcp_port = await nursery.start(raw_serve, collect)
    udp = trio.socket.socket(type=socket.SOCK_DGRAM)
    await udp.bind(("127.0.0.1", 0))
    return received, arrivals, tcp_port, udp


async def test_tcp_and_udp_loggers(nursery: trio.Nursery, upstream: Upstream) -> None:
    """tcp-logger: a connection per batch with a JSON array (an object when batches hold
    one entry); udp-logger: a datagram per batch."""
    received, arrivals, tcp_port, udp = await socket_collectors(nursery)
    udp_port = udp.getsockname()[1]
    node = {"nodes": {upstream.address: 1}}
    fast = {"inactive_timeout": 1, "batch_max_size": 2}
    routes = [
        {"id": "tcp", "uri": "/tcp", "upstream": node,
         "plugins": {"tcp-logger": {"host": "127.0.0.1", "port": tcp_port, **fast}}},
        {"id": "one", "uri": "/one", "upstream": node,
         "plugins": {"tcp-logger": {"host": "127.0.0.1", "port": tcp_port,
                                    "batch_max_size": 1, "log_format": {"s": "$status"}}}},
        {"id": "udp", "uri": "/udp", "upstream": node,
         "plugins": {"udp-logger": {"host": "127.0.0.1", "port": udp_port, **fast}}},
    ]  # fmt: skip
    with udp:
        _, gw = await start_gateway(nursery, config_for(routes))
        for target in ("/tcp?a=1", "/tcp?a=2"):
            assert (await request(gw, target=target)).status == 200
        await arrivals.wait_for(lambda: len(received) == 1)
        batch = json.loads(received[0])
        assert [e["request"]["uri"] for e in batch] == ["/tcp?a=1", "/tcp?a=2"]
        assert batch[0]["route_id"] == "tcp"
        assert (await request(gw, target="/one")).status == 200
        await arrivals.wait_for(lambda: len(received) == 2)
        assert json.loads(received[1]) == {"s": "200"}

        assert (await request(gw, target="/udp")).status == 200
        with trio.fail_after(20):
            datagram = await udp.recv(65536)
        (entry,) = json.loads(datagram)
        assert entry["route_id"] == "udp"
        assert entry["response"]["status"] == 200


async def test_plugin_metadata_log_format(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    """APISIX's `plugin_metadata`: a logger's `log_format` for every conf of it that has
    none of its own; one with its own keeps it."""
    shared, own = tmp_path / "shared.log", tmp_path / "own.log"
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "a", "uri": "/a", "upstream": node,
         "plugins": {"file-logger": {"path": str(shared)}}},
        {"id": "b", "uri": "/b", "upstream": node,
         "plugins": {"file-logger": {"path": str(own), "log_format": {"mine": "$uri"}}}},
    ]  # fmt: skip
    metadata = [
        {"id": "file-logger", "log_format": {"host": "$host", "route": "$route_id", "k": "$arg_k"}}
    ]
    _, gw = await start_gateway(nursery, config_for(routes, plugin_metadata=metadata))
    assert (await request(gw, target="/a?k=1")).status == 200
    assert (await request(gw, target="/b")).status == 200
    assert json.loads(shared.read_text()) == {"host": "gateway.test", "route": "a", "k": "1"}
    assert json.loads(own.read_text()) == {"mine": "/b"}


async def test_syslog(nursery: trio.Nursery, upstream: Upstream) -> None:
    """syslog: RFC 5424 lines (facility SYSLOG, severity INFO, the request's host, app
    `apisix`, the worker's pid), a batch per TCP connection or UDP datagram."""
    received, arrivals, tcp_port, udp = await socket_collectors(nursery)
    node = {"nodes": {upstream.address: 1}}
    fmt = {"uri": "$uri"}
    routes = [
        {"id": "tcp", "uri": "/tcp", "upstream": node,
         "plugins": {"syslog": {"host": "127.0.0.1", "port": tcp_port, "batch_max_size": 2,
                                "log_format": fmt}}},
        {"id": "udp", "uri": "/udp", "upstream": node,
         "plugins": {"syslog": {"host": "127.0.0.1", "port": udp.getsockname()[1],
                                "sock_type": "udp", "batch_max_size": 1}}},
    ]  # fmt: skip
    line = re.compile(
        rb"<46>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z gateway\.test apisix (\d+) - - (\{.*\})\n"
    )
    with udp:
        _, gw = await start_gateway(nursery, config_for(routes))
        for target in ("/tcp?a=1", "/tcp?a=2"):
            assert (await request(gw, target=target)).status == 200
        await arrivals.wait_for(lambda: len(received) == 1)
        lines = [line.fullmatch(text + b"\n") for text in received[0].split(b"\n")[:-1]]
        assert all(m is not None for m in lines), received[0]
        assert [json.loads(m.group(2)) for m in lines if m] == [{"uri": "/tcp"}] * 2
        assert {int(m.group(1)) for m in lines if m} == {os.getpid()}
        assert (await request(gw, target="/udp")).status == 200
        with trio.fail_after(20):
            datagram = await udp.recv(65536)
        match = line.fullmatch(datagram)
        assert match is not None, datagram
        assert json.loads(match.group(2))["route_id"] == "udp"
