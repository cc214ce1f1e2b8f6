"""Copies of requests sent in the background (proxy-mirror), nginx's `mirror`.

Nobody waits for a copy's answer: the client's request goes on at once. At most
`MAX_IN_FLIGHT` copies are out at a time and each gets `TIMEOUT_S`; a copy beyond that is
dropped (and counted in a warning now and then), so a slow mirror cannot hold memory or
connections. Copies outlive the draining of a graceful stop, as http-logger's posts do.
"""

from __future__ import annotations

import logging

import trio

from gateway.fetch import FetchError, KeepAlive, wait_response

log = logging.getLogger("gateway")

MAX_IN_FLIGHT = 64
TIMEOUT_S = 10.0
# Idle connections kept per mirror host: as many as copies may be in flight.
KEEPALIVE = KeepAlive(pool=MAX_IN_FLIGHT)


class MirrorSender:
    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self.in_flight = 0
        self.dropped = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, verify: bool
    ) -> None:
        """Start sending a copy (from a request's hook: never waits)."""
        if self._nursery is None or self.in_flight >= MAX_IN_FLIGHT:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("proxy-mirror: %d copies dropped, too many in flight", self.dropped)
            return
        self.in_flight += 1
        self._nursery.start_soon(self._send, method, url, headers, body, verify)

    async def _send(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes, verify: bool
    ) -> None:
        try:
            await wait_response(
                method,
                url,
                headers,
                body,
                verify_tls=verify,
                within_s=TIMEOUT_S,
                keepalive=KEEPALIVE,
            )
        except FetchError as exc:
            log.debug("proxy-mirror: a copy failed: %s", exc)
        finally:
            self.in_flight -= 1
