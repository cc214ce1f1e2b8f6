"""Socket reads and writes that enter trio's scheduler only when the kernel would block.

trio's socket streams pass through the scheduler on every call, even when the bytes are
already there (a checkpoint per successful send or receive), and wrap each call in a
conflict detector and context managers. On the request path of a small proxied request
that cost more than the HTTP work (see README, "Performance"). Here a read or write is
first tried directly on the non-blocking socket; only when it would block does the task
wait for readiness, which is a real checkpoint where cancellation and deadlines apply.

Fairness: a connection whose bytes are always ready would otherwise never yield, so every
`FAIR_OPS`-th read that completed at once reports "would block" instead, and its caller
waits (with its timeout) like any other wait. Writes need no such turn: every loop on the
request path reads between its writes.

Raises OSError like the socket does; the callers translate at their IO boundary.
"""

from __future__ import annotations

import math
import select
import socket
from typing import Protocol

import trio

FAIR_OPS = 16
MAX_PARTS = 64
JOIN_BELOW = 16 * 1024


class ClientIO(Protocol):
    """A client connection's reads and writes: `FastSocket`, or `https.TlsConnection` over TLS."""

    send_timeout: float

    def try_receive(self, max_bytes: int) -> bytes | None: ...

    async def wait_receive(self, max_bytes: int) -> bytes: ...

    async def send_parts(self, parts: list[bytes]) -> None: ...

    async def send_all(self, data: bytes | bytearray) -> None: ...

    def has_input(self) -> bool: ...


class FastSocket:
    """One connected non-blocking socket; one reader and one writer at a time."""

    __slots__ = ("_credit", "send_timeout", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._credit = FAIR_OPS
        # Longest wait for the kernel to take more of a write (then TimeoutError).
        self.send_timeout = math.inf

    def try_receive(self, max_bytes: int) -> bytes | None:
        """Bytes already waiting (b"" at EOF), or None when a read would block (or when it
        is this socket's turn to yield)."""
        if self._credit <= 0:
            return None
        try:
            data = self.sock.recv(max_bytes)
        except (BlockingIOError, InterruptedError):
            return None
        self._credit -= 1
        return data

    async def wait_receive(self, max_bytes: int) -> bytes:
        """Wait until readable, then read (b"" at EOF); always a checkpoint."""
        self._credit = FAIR_OPS
        sock = self.sock
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                return sock.recv(max_bytes)
            except (BlockingIOError, InterruptedError):
                continue

    async def receive(self, max_bytes: int) -> bytes:
        """Read at most `max_bytes` (b"" at EOF), waiting only when nothing is there."""
        data = self.try_receive(max_bytes)
        if data is None:
            return await self.wait_receive(max_bytes)
        return data

    def send_some(self, data: bytes | bytearray) -> int:
        """Write what the kernel takes now; the number of bytes written (0 when full)."""
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    async def wait_send_rest(self, data: bytes | bytearray, sent: int) -> None:
        """Write `data[sent:]`, waiting while the kernel's send buffer is full; raises
        TimeoutError when one wait lasts `send_timeout`."""
        sock = self.sock
        self._credit = FAIR_OPS
        with memoryview(data) as view:
            remaining = view[sent:]
            while remaining:
                with trio.move_on_after(self.send_timeout) as waited:
                    await trio.lowlevel.wait_writable(sock)
                if waited.cancelled_caught:
                    raise TimeoutError("no write progress within the send timeout")
                try:
                    sent = sock.send(remaining)
                except (BlockingIOError, InterruptedError):
                    continue
                remaining = remaining[sent:]

    async def send_parts(self, parts: list[bytes]) -> None:
        """Write `parts` back to back in one write (joined when small, gathered when not)
        when the kernel takes them all (the common case); waits only while the send buffer
        is full."""
        total = 0
        for part in parts:
            total += len(part)
        try:
            if total <= JOIN_BELOW or len(parts) > MAX_PARTS:
                # Small parts cost less copied into one buffer than gathered (sendmsg sets up
                # a buffer view per part); the kernel takes at most IOV_MAX buffers per call.
                data = b"".join(parts)
                sent = self.sock.send(data)
            else:
                data = None
                sent = self.sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < total:
            await self.wait_send_rest(data if data is not None else b"".join(parts), sent)

    async def send_all(self, data: bytes | bytearray) -> None:
        """Write all of `data`; waits only while the kernel's send buffer is full."""
        sent = self.send_some(data)
        if sent < len(data):
            await self.wait_send_rest(data, sent)

    def has_input(self) -> bool:
        return socket_has_input(self.sock)


def socket_has_input(sock: socket.socket) -> bool:
    """True when bytes (or the peer's close) wait on `sock`, without reading them (a poll:
    `select` cannot take a descriptor past 1023)."""
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False
