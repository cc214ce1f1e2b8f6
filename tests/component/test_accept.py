"""The accept loop's own socket calls, with a real listening socket on loopback."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from gateway.server import _wait_accept


class ListenerWithPendingError(socket.socket):
    """A real listening socket whose next accept() first reports `code`, as Linux's accept
    passes on a network error already pending for a connection (accept(2), NOTES), or as it
    reports ECONNABORTED or a firewall's EPERM. Loopback cannot be made to do that on cue."""

    def __init__(self, code: int) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.pending = code

    def accept(self) -> tuple[socket.socket, object]:
        if self.pending:
            code, self.pending = self.pending, 0
            raise OSError(code, "pending network error")
        return super().accept()


@pytest.mark.parametrize(
    "code", [errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETUNREACH, errno.ECONNRESET]
)
async def test_a_connection_that_failed_before_accept_is_skipped(code: int) -> None:
    with ListenerWithPendingError(code) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        client = trio.socket.socket()
        with client:
            await client.connect(listener.getsockname())
            with trio.fail_after(5):
                sock, peer = await _wait_accept(listener)
            with sock:
                assert peer == client.getsockname()
                assert listener.pending == 0
