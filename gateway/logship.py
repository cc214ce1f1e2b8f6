"""Log entries shipped in batches to collectors, APISIX's batch processor: over HTTP
(http-logger; opentelemetry's spans, `tracing.SpanQueue`), TCP (tcp-logger) or UDP
(udp-logger).

A `BatchQueue` per logger conf collects entries (the plugin's log hook pushes); `LogShipper`
runs one sender per queue, which posts a batch when it holds `batch_max_size` entries,
when `inactive_timeout` passed since the last entry, or `buffer_duration` since the first;
a failed post (no answer within `timeout`, or a status of 400 or more) is tried again
`max_retry_count` times, `retry_delay` apart, then dropped with an error line that names
the logger, never its URI's credentials or its `auth_header`. A queue holds at most
`MAX_BUFFERED_BATCHES` batches: past that the oldest entries are dropped (and counted),
so a collector that is down cannot grow memory. Queues outlive reloads that keep their
conf; a graceful stop posts what is left (`flush`).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections import deque
from typing import Any

import msgspec
import trio

from gateway.fetch import FetchError, tls_context, wait_request
from gateway.wakeup import wake

log = logging.getLogger("gateway")

MAX_BUFFERED_BATCHES = 10
UDP_TIMEOUT_S = 3.0  # datadog's datagrams: name resolution and sending
_encode = msgspec.json.Encoder().encode


class BatchQueue:
    """Entries waiting for one logger's collector."""

    label = "http-logger"  # what the error lines call it

    def __init__(self, conf: Any) -> None:
        self.conf = conf
        self.name = conf.name
        self.entries: deque[Any] = deque()
        self.max_buffered = conf.batch_max_size * MAX_BUFFERED_BATCHES
        self.first_at = 0.0
        self.last_at = 0.0
        self.dropped = 0
        self._arrived = trio.Event()

    def push(self, entry: Any) -> None:
        """Queue one entry (from the log phase: never waits)."""
        now = trio.current_time()
        if not self.entries:
            self.first_at = now
        elif len(self.entries) >= self.max_buffered:
            self.entries.popleft()
            self.dropped += 1
        self.entries.append(entry)
        self.last_at = now
        self._arrived.set()

    def take(self) -> list[Any]:
        """Up to one batch of the oldest entries."""
        size = min(len(self.entries), self.conf.batch_max_size)
        batch = [self.entries.popleft() for _ in range(size)]
        if self.entries:
            self.first_at = trio.current_time()
        return batch

    async def wait_batch(self) -> None:
        """Until a batch is due: full, or the queue idle or old enough."""
        conf = self.conf
        while True:
            if not self.entries:
                self._arrived = trio.Event()
                await self._arrived.wait()
                continue
            if len(self.entries) >= conf.batch_max_size:
                return
            due = min(self.last_at + conf.inactive_timeout, self.first_at + conf.buffer_duration)
            if trio.current_time() >= due:
                return
            self._arrived = trio.Event()
            with trio.move_on_at(due):
                await self._arrived.wait()

    def body(self, batch: list[Any]) -> bytes:
        if self.conf.concat_method == "new_line":
            return b"\n".join(_encode(entry) for entry in batch)
        return _encode(batch)

    def request_headers(self) -> list[tuple[str, str]]:
        headers = [("content-type", "application/json")]
        if self.conf.auth_header:
            headers.append(("authorization", self.conf.auth_header))
        return headers

    def endpoint(self) -> str:
        """Where a batch is posted."""
        return str(self.conf.uri)

    def timeout_s(self) -> float:
        return float(self.conf.timeout)

    def accepted(self, status: int) -> bool:
        return status < 400

    async def deliver(self, body: bytes) -> str | None:
        """Send one encoded batch once: None when it went, else what went wrong."""
        timeout = self.timeout_s()
        try:
            with trio.fail_after(timeout):
                status, _ = await wait_request(
                    "POST",
                    self.endpoint(),
                    self.request_headers(),
                    body,
                    verify_tls=self.conf.ssl_verify,
                )
        except FetchError as exc:
            return str(exc)
        except trio.TooSlowError:
            return f"no answer within {timeout:g} s"
        return None if self.accepted(status) else f"status {status}"

    async def post(self, batch: list[Any]) -> None:
        """Send one batch, with the conf's retries; a batch that cannot go is dropped."""
        conf = self.conf
        body = self.body(batch)
        problem = ""
        for attempt in range(conf.max_retry_count + 1):
            if attempt:
                await trio.sleep(conf.retry_delay)
            failed = await self.deliver(body)
            if failed is None:
                return
            problem = failed
        log.error(
            "%s %r: a batch of %d entries dropped after %d tries: %s",
            self.label,
            self.name,
            len(batch),
            conf.max_retry_count + 1,
            problem,
        )

    def report_dropped(self) -> None:
        if self.dropped:
            log.error(
                "%s %r: %d entries dropped, the queue was full", self.label, self.name, self.dropped
            )
            self.dropped = 0


class SocketQueue(BatchQueue):
    """A batch as tcp-logger and udp-logger send it: one JSON object when batches hold one
    entry, else a JSON array."""

    def body(self, batch: list[Any]) -> bytes:
        return _encode(batch[0]) if self.conf.batch_max_size == 1 else _encode(batch)


class TcpQueue(SocketQueue):
    """tcp-logger's: a connection per batch (`tls`: with TLS, `tls_options` the server
    name, the certificate not checked, as APISIX does), `timeout` in milliseconds."""

    label = "tcp-logger"

    def timeout_s(self) -> float:
        return float(self.conf.timeout) / 1000  # ms

    async def deliver(self, body: bytes) -> str | None:
        conf = self.conf
        try:
            with trio.fail_after(self.timeout_s()):
                stream: trio.abc.Stream = await trio.open_tcp_stream(conf.host, conf.port)
                if conf.tls:
                    name = getattr(conf, "tls_options", None) or None
                    stream = trio.SSLStream(stream, tls_context(False), server_hostname=name)
                async with stream:
                    await stream.send_all(body)
        except trio.TooSlowError:
            return f"not sent within {self.timeout_s():g} s"
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


class UdpQueue(SocketQueue):
    """udp-logger's: a datagram per batch, `timeout` in seconds."""

    label = "udp-logger"

    async def deliver(self, body: bytes) -> str | None:
        return await send_datagrams(self.conf.host, self.conf.port, [body], self.timeout_s())


async def send_datagrams(
    host: str, port: int, datagrams: list[bytes], within_s: float
) -> str | None:
    """Send `datagrams` to `host`:`port` over one UDP socket within `within_s` seconds:
    None when they went, else what went wrong."""
    try:
        with trio.fail_after(within_s):
            family, kind, proto, _, address = (
                await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            )[0]
            with trio.socket.socket(family, kind, proto) as sock:
                await sock.connect(address)
                for datagram in datagrams:
                    await sock.send(datagram)
    except trio.TooSlowError:
        return f"not sent within {within_s:g} s"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class DogStatsdQueue(BatchQueue):
    """datadog's: each entry a few DogStatsD lines, each line a datagram of its own (as
    APISIX sends them: an agent reads at most 8 KiB a datagram), over one UDP socket per
    batch to the agent of `plugin_metadata` (`conf.agent`)."""

    label = "datadog"

    def body(self, batch: list[Any]) -> bytes:
        return b"\n".join(line for lines in batch for line in lines)

    async def deliver(self, body: bytes) -> str | None:
        host, port = self.conf.agent
        return await send_datagrams(host, port, body.split(b"\n"), UDP_TIMEOUT_S)


class LogShipper:
    """Every http-logger queue of the configs, kept across reloads; `run` sends."""

    def __init__(self) -> None:
        self._queues: dict[bytes, BatchQueue] = {}
        self._pending: list[BatchQueue] = []
        self._wakeup = trio.Event()

    def queue(self, scope: str, conf: Any, kind: type[BatchQueue] = BatchQueue) -> BatchQueue:
        """The queue of a logger conf held by `scope` (the same one after a reload that
        kept them both); `kind` for queues that post another document."""
        key = scope.encode() + b"\0" + msgspec.json.encode(conf)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = kind(conf)
            self._pending.append(queue)
            wake(self._wakeup)
        return queue

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                pending, self._pending = self._pending, []
                for queue in pending:
                    nursery.start_soon(self._send, queue)
                self._wakeup = trio.Event()
                await self._wakeup.wait()

    @staticmethod
    async def _send(queue: BatchQueue) -> None:
        while True:
            await queue.wait_batch()
            queue.report_dropped()
            await queue.post(queue.take())

    async def flush(self) -> None:
        """Post every queued entry (a graceful stop; the caller bounds the time)."""
        async with trio.open_nursery() as nursery:
            for queue in self._queues.values():
                if queue.entries:
                    nursery.start_soon(self._flush_one, queue)

    @staticmethod
    async def _flush_one(queue: BatchQueue) -> None:
        while queue.entries:
            await queue.post(queue.take())
