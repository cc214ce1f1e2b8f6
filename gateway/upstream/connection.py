"""One TCP connection to an upstream node (framing is in `upstream/framing.py`).

This is the IO boundary on the upstream side: trio, h11 and OSError exceptions become
`UpstreamError` here (see `fail`). Nothing here takes a timeout: the proxy wraps each wait
in the upstream's connect, send or read timeout.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import select
import socket
from typing import NoReturn

import trio

from gateway.errors import UpstreamError, UpstreamPhase
from gateway.fastio import FastSocket
from gateway.upstream.balancer import Node
from gateway.upstream.framing import MAX_HEAD, EarlyAnswer, early_answer

# Bytes to read, or the end of the connection: what stops a body piece's wait.
_READABLE = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP


class ConnState(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    CLOSED = "closed"


def fail(phase: UpstreamPhase, exc: BaseException, *, reused: bool, responded: bool) -> NoReturn:
    """Translate an IO exception into the gateway's UpstreamError."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    raise UpstreamError(phase, reason, reused=reused, responded=responded) from exc


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class UpstreamConnection:
    """A connection to `node`, carrying one request at a time."""

    __slots__ = (
        "_io",
        "_poll",
        "_sock",
        "early",
        "early_answer",
        "idle_expires",
        "node",
        "pool_key",
        "requests",
        "reused",
        "state",
        "stream",
    )

    def __init__(self, node: Node, sock: socket.socket, stream: trio.SocketStream) -> None:
        self.node = node
        # Its pool: the node's address, and for TLS the server name too.
        self.pool_key: tuple[str | int | bool | None, ...] = node.address
        self._sock = sock
        self._io = FastSocket(sock)
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self.stream = stream  # for the WebSocket tunnel
        self.requests = 0
        self.idle_expires = 0.0
        self.reused = False
        self.state = ConnState.ACTIVE
        # What the upstream sent while the request body was still going out, and what it
        # means (see `wait_send_body_rest`); the response reader starts from `early`.
        self.early = b""
        self.early_answer = EarlyAnswer.NONE

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.node.host}:{self.node.port} {self.state.name}>"

    @classmethod
    async def wait_open(cls, node: Node, connect_timeout: float) -> UpstreamConnection:
        """Connect to `node`, each address within `connect_timeout`; raises
        UpstreamError(CONNECT), a timeout one (504) when the last address timed out.

        A node named by a host name is tried at each of its addresses in turn, as nginx
        makes every address a peer with its own connect timeout: a name with an IPv6 and an
        IPv4 address still reaches an upstream that listens on one of them, even when the
        other drops the connect."""
        host, port = node.address
        addresses: list[tuple[int, tuple[str, int]]] = []
        if _is_ip(host):
            addresses.append((socket.AF_INET6 if ":" in host else socket.AF_INET, (host, port)))
        else:
            with trio.move_on_after(connect_timeout):
                try:
                    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                except OSError as exc:
                    fail(UpstreamPhase.CONNECT, exc, reused=False, responded=False)
                addresses = [(info[0], (str(info[4][0]), int(info[4][1]))) for info in infos]
                if not addresses:
                    no_address = OSError(errno.EHOSTUNREACH, "no address")
                    fail(UpstreamPhase.CONNECT, no_address, reused=False, responded=False)
            if not addresses:  # the name did not resolve in time
                raise UpstreamError(UpstreamPhase.CONNECT, "timed out", timeout=True)
        failure: OSError | None = None
        for family, address in addresses:
            with trio.move_on_after(connect_timeout):
                try:
                    return await cls._wait_connect(node, family, address)
                except OSError as exc:
                    failure = exc
                    continue
            failure = None  # this one timed out
        if failure is None:
            raise UpstreamError(UpstreamPhase.CONNECT, "timed out", timeout=True)
        fail(UpstreamPhase.CONNECT, failure, reused=False, responded=False)

    @classmethod
    async def _wait_connect(
        cls, node: Node, family: int, address: tuple[str, int]
    ) -> UpstreamConnection:
        """A connection to one address of `node`; raises OSError."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tsock = trio.socket.from_stdlib_socket(sock)
            await tsock.connect(address)
        except BaseException:
            sock.close()
            raise
        return cls(node, sock, trio.SocketStream(tsock))

    def has_unexpected_input(self) -> bool:
        """True when an idle connection became readable: late bytes, the peer's FIN or a
        reset. Either way it must not carry another request (RFC 9112 section 9.3.1 lets a
        server close an idle connection at any time).

        A zero-timeout poll on the connection's own poll object: one syscall, no exception
        (a MSG_PEEK recv cost six times as much, per checkout)."""
        return bool(self._poll.poll(0))

    def send_some(self, data: bytes | bytearray) -> int:
        """Write what the kernel takes now (no wait); raises UpstreamError(SEND)."""
        try:
            return self._io.send_some(data)
        except OSError as exc:
            fail(UpstreamPhase.SEND, exc, reused=self.reused, responded=False)

    async def wait_send_rest(self, data: bytes | bytearray, sent: int) -> None:
        """Write `data[sent:]`, waiting for room; raises UpstreamError(SEND)."""
        try:
            await self._io.wait_send_rest(data, sent)
        except OSError as exc:
            fail(UpstreamPhase.SEND, exc, reused=self.reused, responded=False)

    def send_body_some(self, data: bytes | bytearray) -> int | None:
        """Like `send_some`, for a piece of the request body: None when the upstream no
        longer takes it (it closed or reset, maybe after answering: the reader sees which)."""
        try:
            return self._io.send_some(data)
        except OSError:
            return None

    async def wait_send_body_rest(self, data: bytes | bytearray, sent: int) -> bool:
        """Write `data[sent:]` while the upstream reads it; False when it will not read on.

        An upstream may answer before it has read the body (RFC 9112 section 9.3). While a
        write waits, what arrives is read into `early`: a final answer that closes the
        connection, an invalid one, the upstream's close or a reset stop the body here
        (section 9.5); a final answer on a connection it keeps means it reads (or discards)
        the rest, which then goes out with that answer left waiting in the kernel."""
        sock = self._sock
        with memoryview(data) as view:
            rest = view[sent:]
            while rest:
                if self.early_answer is EarlyAnswer.NONE:
                    # Often the answer is already there: then no waiters are needed.
                    if self._poll.poll(0) or await self._wait_writable_or_readable():
                        self.early_answer = self._receive_early()
                        if self.early_answer is EarlyAnswer.STOPS:
                            return False
                        continue
                else:
                    await trio.lowlevel.wait_writable(sock)
                try:
                    sent = sock.send(rest)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return False
                rest = rest[sent:]
        return True

    def take_early(self) -> bytes:
        """What arrived while the body went out (the response's start), then forgotten."""
        early = self.early
        self.early = b""
        self.early_answer = EarlyAnswer.NONE
        return early

    async def _wait_writable_or_readable(self) -> bool:
        """Wait until the kernel takes more, or the upstream sent something (or closed or
        failed); True for the latter. trio waits on one direction at a time, so both are
        watched by a fresh epoll (Linux), itself waited on: about 10 us more than a plain
        wait, and only when a body piece did not fit at once (two trio tasks cost 15x)."""
        with select.epoll(1) as watch:
            watch.register(self._sock, select.EPOLLIN | select.EPOLLOUT)
            await trio.lowlevel.wait_readable(watch)
            return any(events & _READABLE for _, events in watch.poll(0))

    def _receive_early(self) -> EarlyAnswer:
        """Keep what the upstream sent in `early`, and say what it means so far."""
        try:
            data = self._sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return EarlyAnswer.NONE
        except OSError:
            return EarlyAnswer.STOPS
        if not data:
            return EarlyAnswer.STOPS
        self.early += data
        return early_answer(self.early)

    async def send(self, data: bytes) -> None:
        """Write all of `data`; raises UpstreamError(SEND)."""
        sent = self.send_some(data)
        if sent < len(data):
            await self.wait_send_rest(data, sent)

    def try_receive(self, responded: bool, max_bytes: int) -> bytes | None:
        """Bytes already there (b"" at EOF) or None (no wait); raises UpstreamError(READ)."""
        try:
            return self._io.try_receive(max_bytes)
        except OSError as exc:
            fail(UpstreamPhase.READ, exc, reused=self.reused, responded=responded)

    async def wait_receive(self, responded: bool, max_bytes: int) -> bytes:
        """Wait for at most `max_bytes` (b"" at EOF); raises UpstreamError(READ)."""
        try:
            return await self._io.wait_receive(max_bytes)
        except OSError as exc:
            fail(UpstreamPhase.READ, exc, reused=self.reused, responded=responded)

    def close(self) -> None:
        """Close at once (sync: never blocks, safe in cleanup)."""
        if self.state is not ConnState.CLOSED:
            self.state = ConnState.CLOSED
            self.stream.socket.close()
