"""fetch's check of an idle kept connection, on a real socket pair."""

from __future__ import annotations

import trio

from gateway.fetch import _readable


async def test_an_idle_connection_the_server_closed_is_readable() -> None:
    ours, theirs = trio.socket.socketpair()
    with ours, theirs:
        assert not _readable(ours)
        await theirs.send(b"out of turn")
        assert _readable(ours)
        assert await ours.recv(100) == b"out of turn"
        assert not _readable(ours)
        theirs.close()
        assert _readable(ours)  # the FIN
