"""tcp-logger, udp-logger and syslog: each request's log entry (APISIX's, or `log_format`;
see `plugins.loggers`) sent in batches to `host`:`port`, as APISIX's plugins send them.

- tcp-logger (405), udp-logger (400): a batch is one JSON array (one JSON object when
  `batch_max_size` is 1), over a TCP connection of its own (`tls` to wrap it,
  `tls_options` the server name; `timeout` in ms) or as one UDP datagram (`timeout` in s).
- syslog (401): each entry an RFC 5424 line, `<46>1 <time> <host> apisix <pid> - - <json>`
  (facility SYSLOG, severity INFO, the request's host, the worker's pid), a batch of lines
  per TCP connection (`tls`) or UDP datagram (`sock_type`), `timeout` in ms.

APISIX's batch processor fields, through `gateway.logship`; the request never waits.
"""

from __future__ import annotations

import datetime
import os
from typing import Annotated, Any, Literal

import msgspec

from gateway.context import RequestContext
from gateway.logentry import started_at
from gateway.logship import BatchQueue, TcpQueue, UdpQueue
from gateway.pipeline import PluginEnv
from gateway.plugins.loggers import LoggerConf, QueuedLogger

_ENCODE = msgspec.json.Encoder().encode

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


class SyslogConf(SocketLoggerConf, frozen=True, kw_only=True):
    sock_type: Literal["tcp", "udp"] = "tcp"
    tls: bool = False
    timeout: Positive = 3000
    # lua-resty-logger-socket's buffer and pool settings: accepted; batches are logship's.
    flush_limit: Positive = 4096
    drop_limit: int = 1048576
    pool_size: Annotated[int, msgspec.Meta(ge=5)] = 5
    name: str = "sys logger"


class SyslogLines(BatchQueue):
    """A syslog batch: its lines one after the other."""

    label = "syslog"

    def body(self, batch: list[Any]) -> bytes:
        return b"".join(batch)


class SyslogTcpQueue(SyslogLines, TcpQueue):
    pass


class SyslogUdpQueue(SyslogLines, UdpQueue):
    def timeout_s(self) -> float:
        return float(self.conf.timeout) / 1000  # ms, as for TCP


class Syslog(QueuedLogger):
    name = "syslog"
    priority = 401
    Conf = SyslogConf

    def __init__(self, conf: SyslogConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.pid = os.getpid()

    def kind(self, conf: Any) -> type[BatchQueue]:
        return SyslogUdpQueue if conf.sock_type == "udp" else SyslogTcpQueue

    def queued(self, entry: dict[str, Any], ctx: RequestContext, now: float) -> Any:
        """The entry's RFC 5424 line, timed when the request started (ms, UTC)."""
        when = datetime.datetime.fromtimestamp(started_at(ctx, now), datetime.UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        host = ctx.host.decode("latin-1") or "-"
        return f"<46>1 {stamp} {host} apisix {self.pid} - - ".encode() + _ENCODE(entry) + b"\n"
