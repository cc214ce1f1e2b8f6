"""One request's body, read from the client on demand, after h11 has parsed the head.

`http.framing` has already made sure a request with Content-Length has exactly one, valid,
and no Transfer-Encoding, so such a body is exactly that many bytes (and a request with
neither has none, RFC 9112 section 6.3): they are read straight from the socket as they
come (never past the body's end), with none of h11's buffering and per-piece events (on a
1 MiB upload those were a third of the gateway's CPU). Chunked bodies stay with h11, which
decodes them. Bytes that arrived after the body belong to the next request (`rest`).

Owns `Expect: 100-continue` (answered when the body is first read), the body idle timeout,
and skipping what is already buffered before an early answer. Raises `DownstreamError`
(400 bad chunk, 408 idle, 499 client gone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import h11
import trio

from gateway.context import BodyCopy
from gateway.errors import DownstreamError, protocol_fault
from gateway.fastio import ClientIO
from gateway.http.replies import Header

CLIENT_GONE = 499  # nginx's status for "client closed the connection"
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")


class BodyClient(Protocol):
    """What reading a body needs of the client connection."""

    @property
    def h11(self) -> h11.Connection: ...

    @property
    def io(self) -> ClientIO: ...

    async def send(self, data: bytes | bytearray) -> None: ...


class RequestBody:
    """The body of the request whose head `client.h11` has just parsed."""

    __slots__ = (
        "_chunked",
        "_client",
        "_done",
        "_early",
        "_idle_timeout",
        "_left",
        "_size",
        "copy",
        "length",
        "limit",
        "started",
    )

    def __init__(
        self,
        client: BodyClient,
        headers: Sequence[Header],
        receive_size: int,
        idle_timeout: float,
    ) -> None:
        self._client = client
        self._size = receive_size
        self._idle_timeout = idle_timeout
        self._done = False
        self._chunked = 0  # decoded bytes of a chunked body so far
        # At most this many bytes (client-control's `max_body_size`); None: no bound. A
        # counted body is judged by its length before it is read.
        self.limit: int | None = None
        self.started = False
        # A copy of what is read, when a logger asked for one (`include_req_body`).
        self.copy: BodyCopy | None = None
        # A counted body (Content-Length, or none at all): the bytes still to come, and
        # what arrived after the head. None: a chunked body, which h11 reads.
        self._left: int | None = 0
        for name, value in headers:
            if name == b"content-length":
                self._left = int(value)
            elif name == b"transfer-encoding":
                self._left = None
                break
        self._early = client.h11.trailing_data[0] if self._left is not None else b""
        # The body's declared length (0: none), None when chunked: the framing the upstream
        # request restates.
        self.length = self._left

    async def receive(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        if self._done:
            return None
        if self._left == 0:  # no body, or all of it read: no 100 Continue either
            self._done = True
            return None
        client = self._client
        if not self.started and client.h11.they_are_waiting_for_100_continue:
            await client.send(client.h11.send(_CONTINUE) or b"")
        piece: bytes | None
        if self._left is not None:
            piece = await self._receive_counted(self._left)
        else:
            piece = await self._receive_chunks()
        if self.copy is not None and piece:
            self.copy.add(piece)
        return piece

    async def _receive_chunks(self) -> bytes | None:
        """The decoded chunks h11 has buffered, joined (up to a read's size), waiting only
        when there are none: h11 gives one event per chunk, and one write upstream per
        chunk would let tiny chunks cost a syscall (and a restated chunk) each."""
        parser = self._client.h11
        pieces: list[bytes] = []
        size = 0
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                raise DownstreamError(400, f"bad request body: {protocol_fault(exc)}") from None
            if type(event) is h11.Data:
                self.started = True
                pieces.append(event.data)
                size += len(event.data)
                if size >= self._size:
                    break
            elif type(event) is h11.EndOfMessage:
                self._done = True  # the next call returns None
                break
            elif event is h11.NEED_DATA:
                if pieces:
                    break
                parser.receive_data(await self._receive_some(self._size))
            else:
                raise DownstreamError(CLIENT_GONE, "client closed mid-body")
        if not pieces:
            return None
        self._chunked += size
        if self.limit is not None and self._chunked > self.limit:
            raise DownstreamError(413, "request body larger than the route allows")
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def read_whole(self, limit: int) -> bytes | None:
        """The whole body, or None when it is larger than `limit` bytes.

        For plugins that must see the body before proxying (hmac-auth's digest); bounded so
        that one request cannot hold more than `limit` in memory.
        """
        body = bytearray()
        while (chunk := await self.receive()) is not None:
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    @property
    def received(self) -> int:
        """The body bytes read so far (decoded, for a chunked body)."""
        if self.length is not None and self._left is not None:
            return self.length - self._left
        return self._chunked

    def complete(self) -> bool:
        """True when the whole request, body included, has been read."""
        if self._left is not None:
            return self._left == 0
        return self._client.h11.their_state is h11.DONE

    def skip_buffered(self) -> None:
        """Consume what is already buffered of the body (often all of a small one)."""
        if self._left is not None:
            taken = min(len(self._early), self._left)
            self._early = self._early[taken:]
            self._left -= taken
            return
        parser = self._client.h11
        try:
            while parser.their_state is h11.SEND_BODY:
                event = parser.next_event()
                if event is h11.NEED_DATA or type(event) is h11.EndOfMessage:
                    return
        except h11.RemoteProtocolError:
            return

    def rest(self) -> tuple[bytes, bool]:
        """What arrived after this request (the next one's start), and whether the client
        had closed: for the next request's parser."""
        if self._left is not None:
            return self._early, False
        return self._client.h11.trailing_data

    async def _receive_counted(self, left: int) -> bytes:
        if self._early:
            piece = self._early[:left]
            self._early = self._early[len(piece) :]
        else:
            piece = await self._receive_some(min(self._size, left))
        self._left = left - len(piece)
        self.started = True
        return piece

    async def _receive_some(self, size: int) -> bytes:
        """Some bytes, within the body idle timeout; raises DownstreamError (408, 499)."""
        io = self._client.io
        try:
            data = io.try_receive(size)
            if data is None:
                with trio.move_on_after(self._idle_timeout) as scope:
                    data = await io.wait_receive(size)
                if scope.cancelled_caught:
                    raise DownstreamError(408, "request body timed out")
        except OSError:
            data = b""
        if not data:
            raise DownstreamError(CLIENT_GONE, "client closed mid-body")
        return data
