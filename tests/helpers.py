"""Real servers and clients for the tests: upstreams on loopback, raw HTTP clients,
an in-process gateway, and the gateway CLI as a subprocess."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h11
import trio

from gateway.config.load import parse
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway

ROOT = Path(__file__).resolve().parent.parent


# --- upstreams --------------------------------------------------------------------------


@dataclass
class Received:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int  # which upstream connection carried it (0, 1, ...)

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


Responder = Callable[[Received], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]]


async def echo_responder(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    doc = {
        "method": req.method.decode(),
        "target": req.target.decode("latin-1"),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in req.headers],
        "body_length": len(req.body),
        "connection": req.connection,
    }
    return 200, [(b"content-type", b"application/json")], json.dumps(doc).encode()


@dataclass
class Upstream:
    """An h11 upstream that records every request it receives."""

    responder: Responder = echo_responder
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    name: str = "up"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        index = self.connections
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    continue
                if not isinstance(event, h11.Request):
                    return
                body = bytearray()
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(ev, h11.Data):
                        body += ev.data
                    elif isinstance(ev, h11.EndOfMessage):
                        break
                    else:
                        return
                req = Received(event.method, event.target, list(event.headers), bytes(body), index)
                self.received.append(req)
                status, headers, payload = await self.responder(req)
                headers = [*headers, (b"content-length", str(len(payload)).encode())]
                out = conn.send(h11.Response(status_code=status, headers=headers))
                if payload and req.method != b"HEAD":
                    out += conn.send(h11.Data(data=payload))
                out += conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, OSError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def serve(
        self, *, task_status: trio.TaskStatus[Upstream] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await raw_serve(self._handle, task_status=task_status, on_port=self._set_port, result=self)

    def _set_port(self, port: int) -> None:
        self.port = port


async def raw_serve(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    on_port: Callable[[int], None] | None = None,
    result: Any = None,
) -> None:
    """Serve `handler` on a fresh loopback port; `task_status.started` gets `result` or the port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    if on_port is not None:
        on_port(port)
    task_status.started(result if result is not None else port)
    try:
        await trio.serve_listeners(handler, listeners)
    finally:
        for listener in listeners:
            listener.socket.close()


def free_port() -> int:
    """A port nobody listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the gateway ------------------------------------------------------------------------


def prefixed_route(upstream: Upstream, rid: str, plugins: dict[str, Any]) -> dict[str, Any]:
    """Route `rid` for `/<rid>/...` with `plugins`: the upstream sees the path without the
    prefix (so that several routes can ask one upstream for the same paths)."""
    rewrite = {"proxy-rewrite": {"regex_uri": [f"^/{rid}(/.*)", "$1"]}}
    return {
        "id": rid,
        "uri": f"/{rid}/*",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {**plugins, **rewrite},
    }


class Arrivals:
    """What a test server records, awaited: `arrived()` from the server, `wait_for(done)`
    from the test."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def arrived(self) -> None:
        self._event.set()

    async def wait_for(self, done: Callable[[], bool], timeout: float = 20) -> None:
        with trio.fail_after(timeout):
            while not done():
                self._event = trio.Event()
                await self._event.wait()


def config_for(routes: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    server = {"listen": "127.0.0.1:0", "access_log": False, **top.pop("server", {})}
    return {"server": server, "routes": routes, **top}


async def start_gateway(nursery: trio.Nursery, config: dict[str, Any]) -> tuple[Gateway, str]:
    """An in-process gateway on a free port; returns it and `host:port`."""
    limits = LimitRegistry()
    runtime = compile_config(parse(json.dumps(config).encode()), limits=limits)
    gateway = Gateway(None, runtime, limits)
    addresses = await nursery.start(gateway.serve)
    return gateway, addresses[0]


def answering(
    *replies: bytes, then: Literal["close", "reset", "hold"]
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A hand-played upstream connection: each request read gets the next of `replies`
    as raw bytes; then it closes, resets (closes with what it left unread) or holds on."""

    async def handler(stream: trio.SocketStream) -> None:
        for reply in replies:
            await stream.receive_some(65536)
            await stream.send_all(reply)
        if then == "close":
            await stream.aclose()
        elif then == "reset":
            await trio.aclose_forcefully(stream)
        else:
            await trio.sleep_forever()

    return handler


async def start_gateway_to_raw(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> tuple[Gateway, str]:
    """A gateway whose one route, `/*`, goes to an upstream that `handler` plays by hand
    (one call per connection); returns it and `host:port`."""
    port = await nursery.start(raw_serve, handler)
    route = {"id": "r", "uri": "/*", "upstream": {"nodes": {f"127.0.0.1:{port}": 1}}}
    return await start_gateway(nursery, config_for([route]))


class LogLine(logging.Handler):
    """Sets `seen` once a log line holding `text` was written."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


# --- raw HTTP client --------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: bytes = b"1.1"

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)


async def connect(address: str, source: str | None = None) -> trio.SocketStream:
    """A connection to `address`, from the loopback address `source` when given (any of
    127.0.0.0/8 reaches a 127.0.0.1 listener)."""
    host, _, port = address.rpartition(":")
    if source is None:
        return await trio.open_tcp_stream(host.strip("[]"), int(port))
    sock = trio.socket.socket()
    try:
        await sock.bind((source, 0))
        await sock.connect((host.strip("[]"), int(port)))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def read_response(
    stream: trio.SocketStream, conn: h11.Connection | None = None, method: bytes = b"GET"
) -> Response:
    """Read one response with an h11 CLIENT (created for a sent request of `method`)."""
    if conn is None:
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
    head: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return Response(head.status_code, list(head.headers), bytes(body), head.http_version)
        else:
            raise AssertionError(f"unexpected {event!r}")


async def request(
    address: str,
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    source: str | None = None,
) -> Response:
    """One request on a new connection (from `source`, see `connect`), returning the
    parsed response."""
    stream = await connect(address, source)
    async with stream:
        hdrs = list(headers or [])
        if not any(n.lower() == "host" for n, _ in hdrs):
            hdrs.insert(0, ("host", "gateway.test"))
        if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hdrs):
            hdrs.append(("content-length", str(len(body))))
        conn = h11.Connection(h11.CLIENT)
        data = conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        return await read_response(stream, conn)


async def read_until_close(stream: trio.SocketStream) -> bytes:
    out = bytearray()
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            break
        if not data:
            break
        out += data
    return bytes(out)


async def exchange_raw(address: str, data: bytes) -> bytes:
    """Send raw bytes on a new connection, read until the gateway closes it (10 s at most:
    an answer that keeps the connection open fails the test)."""
    stream = await connect(address)
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(10):
            return await read_until_close(stream)


# --- the CLI as a subprocess ------------------------------------------------------------


class GatewayProcess:
    """`python -m gateway --config PATH` in a subprocess, with its output in files."""

    def __init__(self, config_path: Path, workdir: Path) -> None:
        self.config_path = config_path
        self.stdout_path = workdir / "gateway.out"
        self.stderr_path = workdir / "gateway.err"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(self.config_path)],
                stdout=out,
                stderr=err,
                cwd=ROOT,
                env=env,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None
        with trio.fail_after(timeout):
            while self.process.poll() is None:
                await trio.sleep(0.02)
        return int(self.process.returncode)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    async def wait_log(self, text: str, count: int = 1, timeout: float = 30) -> None:
        """Wait until `text` appears `count` times in stderr."""
        with trio.fail_after(timeout):
            while self.stderr().count(text) < count:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"gateway exited early:\n{self.stderr()}")
                await trio.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


async def wait_port(address: str, timeout: float = 30) -> None:
    """Wait until `address` accepts TCP connections."""
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await connect(address)
            except OSError:
                await trio.sleep(0.02)
                continue
            await stream.aclose()
            return
