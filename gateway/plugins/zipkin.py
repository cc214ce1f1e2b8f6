"""zipkin: B3 trace context to the upstream and spans to a Zipkin collector, as APISIX's
plugin (span version 2, its default).

The client's B3 context is read from `b3` (single header: `traceid-spanid[-sampled
[-parentspanid]]`, or `0`; an invalid one is answered 400, and the header is not passed on)
or from `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`. Its decision
holds (`1`/`true`, `0`/`false`; `X-B3-Flags: 1` or `d` samples); otherwise `sample_ratio`
of the requests are sampled. An unsampled request goes on with `X-B3-Sampled: 0`. A
sampled one records, in the client's trace or a new one, `apisix.request` (kind SERVER,
child of the client's span, tags `component`, `http.method`, `http.url`, `peer.ipv4`,
`peer.port` and the upstream's `http.status_code`) with two children: `apisix.proxy`
(until the answer's head) and `apisix.response_span` (until the end). The upstream gets
`X-B3-TraceId`, `X-B3-SpanId` (the proxy span), `X-B3-ParentSpanId` (the request span) and
`X-B3-Sampled: 1`. Spans are posted as Zipkin v2 JSON arrays to `endpoint` through
`logship`'s batch processor (within a second of the request). Priority 12011.
"""

from __future__ import annotations

import random
import re
from typing import Annotated, Any, Literal

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, status_reply
from gateway.pipeline import Header, Plugin, PluginConf, PluginEnv
from gateway.tracing import new_span_id, new_trace_id

_TRACE_ID = re.compile(rb"^(?:[0-9a-f]{16}|[0-9a-f]{32})\Z")
_SPAN_ID = re.compile(rb"^[0-9a-f]{16}\Z")
_SAMPLED = {b"1": True, b"true": True, b"d": True, b"0": False, b"false": False}
_NOT_SAMPLED_HEADERS = frozenset((b"b3", b"x-b3-sampled"))
_B3_HEADERS = frozenset(
    (b"b3", b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled")
)


class ZipkinConf(PluginConf, frozen=True, kw_only=True):
    endpoint: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+[^\s]*\Z")]
    sample_ratio: Annotated[float, msgspec.Meta(ge=0.00001, le=1)]
    service_name: str = "APISIX"
    server_addr: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,3}(\.[0-9]{1,3}){3}\Z")] | None = (
        None
    )
    span_version: Literal[2] = 2


class ZipkinExport(msgspec.Struct, frozen=True, kw_only=True):
    """What `logship`'s batch processor reads of a conf: one JSON array per batch."""

    name: str = "zipkin"
    uri: str
    auth_header: str | None = None
    concat_method: str = "json"
    timeout: int = 3
    batch_max_size: int = 1000
    inactive_timeout: float = 1.0
    buffer_duration: float = 5.0
    max_retry_count: int = 0
    retry_delay: int = 1
    ssl_verify: bool = False


class Trace:
    """A sampled request's spans while it runs (times in microseconds)."""

    __slots__ = ("headers_at", "parent_id", "proxy_id", "request_id", "start", "trace_id")

    def __init__(self, trace_id: str, parent_id: str | None, start: int) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.request_id = new_span_id()
        self.proxy_id = new_span_id()
        self.start = start
        self.headers_at = 0


def _b3_single(value: bytes) -> tuple[bytes | None, bytes | None, bytes | None, bytes | None]:
    """(trace id, span id, sampled, parent span id) of a `b3` header; ValueError if invalid."""
    if value == b"0":
        return None, None, b"0", None
    pieces = value.split(b"-", 3)
    if len(pieces) < 2:
        raise ValueError("no span id")
    trace_id, span_id = pieces[0], pieces[1]
    sampled = pieces[2] if len(pieces) > 2 else b"1"
    parent = pieces[3] if len(pieces) > 3 else None
    if not _TRACE_ID.match(trace_id) or not _SPAN_ID.match(span_id):
        raise ValueError("bad ids")
    if sampled not in _SAMPLED or (parent is not None and not _SPAN_ID.match(parent)):
        raise ValueError("bad sampling or parent")
    return trace_id, span_id, sampled, parent


class Zipkin(Plugin):
    name = "zipkin"
    priority = 12011
    Conf = ZipkinConf

    def __init__(self, conf: ZipkinConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.ratio = conf.sample_ratio
        self.now = env.now
        self.endpoint = {"serviceName": conf.service_name}
        if conf.server_addr is not None:
            self.endpoint["ipv4"] = conf.server_addr
        self.queue = env.loggers.queue(env.scope, ZipkinExport(uri=conf.endpoint))
        self.bad_b3 = status_reply(400)

    def _micros(self) -> int:
        return int(self.now() * 1e6)

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        single = ctx.header(b"b3")
        if single is not None:
            try:
                trace_id, span_id, sampled, _ = _b3_single(single.strip().lower())
            except ValueError:
                return self.bad_b3
            if sampled == b"d":
                ctx.remove_header(b"x-b3-flags")
                ctx.headers.append((b"x-b3-flags", b"1"))
        else:
            trace_id = ctx.header(b"x-b3-traceid")
            span_id = ctx.header(b"x-b3-spanid")
            sampled = ctx.header(b"x-b3-sampled")
        decided = _SAMPLED.get(sampled.strip().lower()) if sampled is not None else None
        if ctx.header(b"x-b3-flags") == b"1":
            decided = True
        if decided is None:
            decided = random.random() < self.ratio
        if not decided:  # the client's ids go on as they came
            ctx.headers[:] = [h for h in ctx.headers if h[0] not in _NOT_SAMPLED_HEADERS]
            ctx.headers.append((b"x-b3-sampled", b"0"))
            return None
        ctx.headers[:] = [h for h in ctx.headers if h[0] not in _B3_HEADERS]
        if trace_id is None or not _TRACE_ID.match(trace_id.lower()):
            trace = Trace(new_trace_id(), None, self._micros())
        else:
            valid_span = span_id is not None and _SPAN_ID.match(span_id.lower())
            parent = span_id.lower().decode() if valid_span and span_id else None
            trace = Trace(trace_id.lower().decode(), parent, self._micros())
        ctx.zipkin = trace
        ctx.headers += [
            (b"x-b3-traceid", trace.trace_id.encode()),
            (b"x-b3-parentspanid", trace.request_id.encode()),
            (b"x-b3-spanid", trace.proxy_id.encode()),
            (b"x-b3-sampled", b"1"),
        ]
        return None

    def header_filter(self, ctx: RequestContext, status: int, headers: list[Header]) -> None:
        trace: Trace | None = ctx.zipkin
        if trace is not None:
            trace.headers_at = self._micros()

    def log(self, ctx: RequestContext) -> None:
        trace: Trace | None = ctx.zipkin
        if trace is None:
            return
        end = self._micros()
        headers_at = trace.headers_at or end
        tags = {
            "component": "apisix",
            "http.method": ctx.method.decode("latin-1"),
            "http.url": ctx.request_target.decode("latin-1"),
            "peer.ipv4": ctx.remote_addr,
            "peer.port": str(ctx.remote_port),
        }
        status = ctx.upstream_status
        if status is not None:
            tags["http.status_code"] = str(status)
        endpoint = {**self.endpoint, "port": ctx.server_port}
        request: dict[str, Any] = {
            "traceId": trace.trace_id,
            "id": trace.request_id,
            "name": "apisix.request",
            "kind": "SERVER",
            "timestamp": trace.start,
            "duration": end - trace.start,
            "localEndpoint": endpoint,
            "tags": tags,
        }
        if trace.parent_id is not None:
            request["parentId"] = trace.parent_id
        children = [
            ("apisix.proxy", trace.proxy_id, trace.start, headers_at),
            ("apisix.response_span", new_span_id(), headers_at, end),
        ]
        self.queue.push(request)
        for name, span_id, start, finish in children:
            self.queue.push(
                {
                    "traceId": trace.trace_id,
                    "id": span_id,
                    "parentId": trace.request_id,
                    "name": name,
                    "timestamp": start,
                    "duration": finish - start,
                    "localEndpoint": endpoint,
                }
            )
