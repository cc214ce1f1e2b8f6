"""tcp-logger and udp-logger: each request's log entry (APISIX's, or `log_format`; see
`plugins.loggers`) sent in batches to `host`:`port`, as APISIX's plugins send them: a batch
is one JSON array (one JSON object when `batch_max_size` is 1), over a TCP connection of
its own (`tls` to wrap it, `tls_options` the server name; `timeout` in ms) or as one UDP
datagram (`timeout` in s). APISIX's batch processor fields, through `gateway.logship`.
Priorities 405 and 400, log phase; the request never waits.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.logship import TcpQueue, UdpQueue
from gateway.plugins.loggers import LoggerConf, QueuedLogger

Positive = Annotated[int, msgspec.Meta(ge=1)]


class SocketLoggerConf(LoggerConf, frozen=True, kw_only=True):
    host: Annotated[str, msgspec.Meta(min_length=1)]
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    max_retry_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    retry_delay: Annotated[int, msgspec.Meta(ge=0)] = 1
    buffer_duration: Positive = 60
    inactive_timeout: Positive = 5
    batch_max_size: Positive = 1000


class TcpLoggerConf(SocketLoggerConf, frozen=True, kw_only=True):
    tls: bool = False
    tls_options: str | None = None
    timeout: Positive = 1000
    name: str = "tcp logger"


class UdpLoggerConf(SocketLoggerConf, frozen=True, kw_only=True):
    timeout: Positive = 3
    name: str = "udp logger"


class TcpLogger(QueuedLogger):
    name = "tcp-logger"
    priority = 405
    Conf = TcpLoggerConf
    queue_kind = TcpQueue


class UdpLogger(QueuedLogger):
    name = "udp-logger"
    priority = 400
    Conf = UdpLoggerConf
    queue_kind = UdpQueue
