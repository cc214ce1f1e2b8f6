"""gateway.fastio on real connected sockets: bytes arrive whole, waits honour trio's
cancellation, and a connection whose bytes are always ready still lets others run."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
import trio

from gateway.fastio import FAIR_OPS, FastSocket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


async def test_ready_bytes_are_read_without_waiting(pair: tuple[socket.socket, ...]) -> None:
    a, b = pair
    b.sendall(b"hello")
    io = FastSocket(a)
    assert io.try_receive(100) == b"hello"
    assert io.try_receive(100) is None  # nothing more: the caller must wait
    b.close()
    assert await io.receive(100) == b""  # EOF


async def test_wait_receive_is_cancellable(pair: tuple[socket.socket, ...]) -> None:
    io = FastSocket(pair[0])
    with trio.move_on_after(0.05) as scope:
        await io.wait_receive(100)
    assert scope.cancelled_caught


async def read_into(sock: socket.socket, received: bytearray, size: int) -> None:
    peer = FastSocket(sock)
    while len(received) < size:
        received.extend(await peer.receive(65536))


async def test_send_all_larger_than_the_kernel_buffer(pair: tuple[socket.socket, ...]) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_into, b, received, len(payload))
        io = FastSocket(a)
        assert io.send_some(b"") == 0
        await io.send_all(payload)
    assert bytes(received) == payload


async def test_blocked_send_is_cancellable(pair: tuple[socket.socket, ...]) -> None:
    io = FastSocket(pair[0])
    with trio.move_on_after(0.1) as scope:
        await io.send_all(b"x" * (64 * 1024 * 1024))  # the peer never reads
    assert scope.cancelled_caught


async def test_send_timeout_counts_from_the_last_progress(
    pair: tuple[socket.socket, ...],
) -> None:
    a, b = pair
    io = FastSocket(a)
    io.send_timeout = 1.0
    payload = b"x" * (8 * 1024 * 1024)

    async def slow_reader() -> None:  # drains what arrived every 0.05 s: never a 1 s stall
        got = 0
        while got < len(payload):
            await trio.sleep(0.05)
            with contextlib.suppress(BlockingIOError):
                while chunk := b.recv(1024 * 1024):
                    got += len(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_reader)
        started = trio.current_time()
        await io.send_all(payload)  # never times out: each wait ends within about 0.05 s
    assert trio.current_time() - started > 1.0  # longer in all than the timeout
    with pytest.raises(TimeoutError):
        await io.send_all(payload)  # nobody reads any more


async def test_always_ready_reader_lets_other_tasks_run(pair: tuple[socket.socket, ...]) -> None:
    a, b = pair
    b.sendall(b"y" * 4096)
    ticks = 0
    ticks_seen: list[int] = []

    async def other() -> None:
        nonlocal ticks
        while True:
            await trio.lowlevel.checkpoint()
            ticks += 1

    async def busy_reader() -> None:
        io = FastSocket(a)
        got = 0
        while got < 4096:  # 4096 one-byte reads, every one of them ready at once
            got += len(await io.receive(1))
        ticks_seen.append(ticks)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        await busy_reader()
        nursery.cancel_scope.cancel()
    # Without the fairness turn the other task would not run at all during the reads.
    # It gets a turn about every FAIR_OPS reads.
    assert ticks_seen[0] >= 4096 // (FAIR_OPS + 1) - 2
    assert ticks_seen[0] > 100


async def test_send_parts_many_small_and_partial(pair: tuple[socket.socket, ...]) -> None:
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    parts = [b"%d," % i for i in range(5000)] + [b"z" * (1 << 20)]  # > IOV_MAX buffers
    expected = b"".join(parts)
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_into, b, received, len(expected))
        await FastSocket(a).send_parts(parts)
    assert bytes(received) == expected
