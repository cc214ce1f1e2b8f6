"""What file-logger and http-logger share: the conf fields of an APISIX logger and the log
hook that builds each request's entry (`gateway.logentry`) for the plugin's `emit`.

`include_req_body` / `include_resp_body` put the bodies into APISIX's full entry
(`request.body`, `response.body`, as text), the first `max_req_body_bytes` /
`max_resp_body_bytes` of them (512 KiB) as they went by, when `include_req_body_expr` (read
at the log phase) / `include_resp_body_expr` (read when the answer's head is ready) hold.
A request body is copied as it is read from the client; one a plugin read whole is taken as
it went upstream. Not with `log_format`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import msgspec

from gateway.context import BodyCopy, RequestContext
from gateway.expr import compile_vars
from gateway.logentry import SecretNames, custom_format, full_entry
from gateway.logship import BatchQueue
from gateway.pipeline import Header, Plugin, PluginConf, PluginEnv

MAX_BODY_BYTES = 512 * 1024


def _rules(rules: list[Any] | None) -> Callable[[RequestContext], bool] | None:
    return compile_vars(rules) if rules is not None else None


def _text(body: bytes | bytearray) -> str:
    return bytes(body).decode("utf-8", "replace")


class LoggerConf(PluginConf, frozen=True, kw_only=True):
    log_format: dict[str, Any] | None = None
    include_req_body: bool = False
    include_req_body_expr: list[Any] | None = None
    max_req_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = MAX_BODY_BYTES
    include_resp_body: bool = False
    include_resp_body_expr: list[Any] | None = None
    max_resp_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = MAX_BODY_BYTES
    match: list[Any] | None = None

    def __post_init__(self) -> None:
        for rules in (self.match, self.include_req_body_expr, self.include_resp_body_expr):
            if rules is not None:
                compile_vars(rules)


class LoggerPlugin(Plugin):
    """A plugin that writes one entry per request it is on (`match` rules holding)."""

    def __init__(self, conf: LoggerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.now = env.now
        secrets: SecretNames = env.secrets or SecretNames()
        self.match = _rules(conf.match)
        log_format = conf.log_format
        if log_format is None:  # the plugin's `plugin_metadata`, if any
            log_format = getattr(env.metadata.get(self.name), "log_format", None)
        if log_format is not None:
            self.entry = custom_format(log_format, secrets)
        else:
            hostname = env.hostname
            self.entry = lambda ctx, now: full_entry(ctx, now, hostname, secrets)
        full = log_format is None
        self.req_limit = conf.max_req_body_bytes if conf.include_req_body and full else 0
        self.req_when = _rules(conf.include_req_body_expr)
        self.resp_limit = conf.max_resp_body_bytes if conf.include_resp_body and full else 0
        self.resp_when = _rules(conf.include_resp_body_expr)
        if self.req_limit:
            self.rewrite = self._copy_request_body
        if self.resp_limit:
            self.header_filter = self._copy_response_body

    def _copy_request_body(self, ctx: RequestContext) -> None:
        body = ctx.request_body
        if body is None or ctx.body is not None:
            return
        body.copy = BodyCopy.asked(body.copy, self.req_limit)

    def _copy_response_body(self, ctx: RequestContext, status: int, headers: list[Header]) -> None:
        if self.resp_when is not None and not self.resp_when(ctx):
            return
        ctx.response_copy = BodyCopy.asked(ctx.response_copy, self.resp_limit)

    def log(self, ctx: RequestContext) -> None:
        if self.match is not None and not self.match(ctx):
            return
        now = self.now()
        entry = self.entry(ctx, now)
        if self.req_limit and (self.req_when is None or self.req_when(ctx)):
            copied = ctx.request_body.copy if ctx.request_body is not None else None
            body = ctx.body if ctx.body is not None else copied.data if copied else None
            if body:
                entry["request"]["body"] = _text(body[: self.req_limit])
        copy = ctx.response_copy
        if self.resp_limit and copy is not None and copy.data:
            entry["response"]["body"] = _text(copy.data[: self.resp_limit])
        self.emit(entry, ctx, now)

    def emit(self, entry: dict[str, Any], ctx: RequestContext, now: float) -> None:
        """Write one request's entry (`now`: the wall clock at the log phase)."""
        raise NotImplementedError


class QueuedLogger(LoggerPlugin):
    """A logger whose entries go in batches through a `logship` queue of kind
    `queue_kind` (http-logger's posts, tcp-logger's connections, udp-logger's datagrams)."""

    queue_kind: ClassVar[type[BatchQueue]] = BatchQueue

    def __init__(self, conf: LoggerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.queue = env.loggers.queue(env.scope, conf, self.kind(conf))

    def kind(self, conf: Any) -> type[BatchQueue]:
        """The queue for `conf` (one kind per plugin, unless a conf picks the transport)."""
        return self.queue_kind

    def emit(self, entry: dict[str, Any], ctx: RequestContext, now: float) -> None:
        self.queue.push(self.queued(entry, ctx, now))

    def queued(self, entry: dict[str, Any], ctx: RequestContext, now: float) -> Any:
        """What the queue keeps of one request: its entry, or what its collector's
        document needs of the request besides (its time, labels)."""
        return entry
