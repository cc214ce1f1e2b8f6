"""Active health checks: probe each node of an upstream with `checks.active` on its own.

Each node is probed every `healthy.interval` while healthy and every `unhealthy.interval`
while not, at most `concurrency` probes of one upstream at a time. An `http` probe sends
`GET http_path HTTP/1.0` (Host: `host` or the node's, then `req_headers`) and reads the
status line within `timeout`; an `https` probe does the same over TLS (the certificate
checked unless `https_verify_certificate` is false); a `tcp` probe only connects. A
refused or reset connection, a failed handshake or a bad status line is a TCP failure, no
answer within `timeout` a timeout; the status counts by `upstream.health`'s rules.
"""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass

import trio

from gateway.upstream.balancer import Node
from gateway.upstream.health import SUCCESS, TCP_FAILURE, TIMEOUT, Health, Limits
from gateway.upstream.tls import tls_server_name

log = logging.getLogger("gateway.health")

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9])[ \r]")
MAX_STATUS_LINE = 8192


@dataclass(frozen=True)
class Probe:
    """What one upstream's active check does, compiled at load."""

    health: Health
    nodes: tuple[Node, ...]
    http: bool
    timeout: float
    concurrency: int
    host: bytes | None  # the Host to send; None: each node's own
    port: int | None  # the port to probe; None: each node's own
    path: bytes
    headers: bytes  # `Name: value\r\n` lines
    healthy_interval: float
    unhealthy_interval: float
    tls: ssl.SSLContext | None = None  # `type: https`

    def request(self, node: Node) -> bytes:
        host = self.host if self.host is not None else node.host_header
        return (
            b"GET " + self.path + b" HTTP/1.0\r\nHost: " + host + b"\r\n"
            b"Connection: close\r\n" + self.headers + b"\r\n"
        )


async def run_probes(probe: Probe) -> None:
    """Probe every node of one upstream until cancelled."""
    limiter = trio.CapacityLimiter(probe.concurrency)
    async with trio.open_nursery() as nursery:
        for node in probe.nodes:
            nursery.start_soon(_watch, probe, node, limiter)


async def _watch(probe: Probe, node: Node, limiter: trio.CapacityLimiter) -> None:
    limits: Limits = probe.health.active
    while True:
        healthy = probe.health.healthy(node)
        await trio.sleep(probe.healthy_interval if healthy else probe.unhealthy_interval)
        async with limiter:
            outcome, status = await check(probe, node)
        if status is not None:
            probe.health.report_status(node, status, limits)
        else:
            probe.health.report(node, outcome, limits)


async def check(probe: Probe, node: Node) -> tuple[int, int | None]:
    """One probe of `node`: (outcome, status); the status is None unless one was read."""
    port = probe.port if probe.port is not None else node.port
    with trio.move_on_after(probe.timeout):
        try:
            stream = await trio.open_tcp_stream(node.host, port)
        except OSError as exc:
            log.debug("probe of %s: %s", node.label, exc)
            return TCP_FAILURE, None
        async with stream:
            if not probe.http:
                return SUCCESS, None
            channel: trio.abc.Stream = stream
            try:
                if probe.tls is not None:
                    host = probe.host if probe.host is not None else node.host_header
                    channel = trio.SSLStream(
                        stream, probe.tls, server_hostname=tls_server_name(host)
                    )
                await channel.send_all(probe.request(node))
                status = await _read_status(channel)
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                log.debug("probe of %s: %s", node.label, exc)
                return TCP_FAILURE, None
            if status is None:
                return TCP_FAILURE, None
            return SUCCESS, status
    return TIMEOUT, None


async def _read_status(stream: trio.abc.Stream) -> int | None:
    buffer = b""
    while b"\n" not in buffer and len(buffer) < MAX_STATUS_LINE:
        data = await stream.receive_some(4096)
        if not data:
            break
        buffer += data
    match = _STATUS_LINE.match(buffer)
    return int(match.group(1)) if match is not None else None
