"""opentelemetry: a server span per request and W3C trace context to the upstream, as
APISIX's plugin (with the collector settings of `plugin_attr.opentelemetry`, see
`gateway.tracing`).

`sampler`: `always_off` (APISIX's default), `always_on`, `trace_id_ratio` with
`options.fraction`, or `parent_base`: the client's sampled flag when it sent a trace
context, `options.root` (a sampler of the first three) otherwise. The upstream gets a
`traceparent` naming this request's span whatever the decision. A sampled span is named
after the method and the route's URI, has APISIX's attributes (`net.host.name`,
`http.method`, `http.scheme`, `http.target`, `http.user_agent`, `apisix.route_id`,
`apisix.route_name`, `http.route`, `apisix.service_id`, `apisix.service_name`), the
`$variables` named in `additional_attributes` and the request headers named in
`additional_header_prefix_attributes` (`x-tenant-*`: every header with that prefix), and
at its end the upstream's status (`http.status_code`, `http.response.status_code`; an
error status from 500). Priority 12009, rewrite and log.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway.context import RequestContext
from gateway.pipeline import Conf, Plugin, PluginConf, PluginEnv
from gateway.tracing import (
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    Sampler,
    SpanQueue,
    attribute,
    fixed_sampler,
    new_span_id,
    new_trace_id,
    parent_based,
    parse_traceparent,
    ratio_sampler,
    span_export,
    trace_id_from,
    traceparent,
)
from gateway.variables import getter

Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
Key = Annotated[str, msgspec.Meta(min_length=1)]


class RatioOptions(Conf, frozen=True, kw_only=True):
    fraction: Fraction = 0.0


class RootSampler(Conf, frozen=True, kw_only=True):
    name: Literal["always_on", "always_off", "trace_id_ratio"] = "always_off"
    options: RatioOptions = msgspec.field(default_factory=RatioOptions)


class SamplerOptions(Conf, frozen=True, kw_only=True):
    fraction: Fraction = 0.0
    root: RootSampler | None = None


class SamplerConf(Conf, frozen=True, kw_only=True):
    name: Literal["always_on", "always_off", "trace_id_ratio", "parent_base"] = "always_off"
    options: SamplerOptions = msgspec.field(default_factory=SamplerOptions)


class OpenTelemetryConf(PluginConf, frozen=True, kw_only=True):
    sampler: SamplerConf = msgspec.field(default_factory=SamplerConf)
    additional_attributes: list[Key] | None = None
    additional_header_prefix_attributes: list[Key] | None = None


def _sampler(name: str, fraction: float, root: RootSampler | None) -> Sampler:
    if name == "always_on":
        return fixed_sampler(True)
    if name == "trace_id_ratio":
        return ratio_sampler(fraction)
    if name == "parent_base":
        first = root or RootSampler()
        return parent_based(_sampler(first.name, first.options.fraction, None))
    return fixed_sampler(False)


class Span:
    """A sampled request's span while the request runs."""

    __slots__ = ("attributes", "name", "parent_id", "span_id", "start", "trace_id")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        name: str,
        start: int,
        attributes: list[dict[str, Any]],
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.start = start
        self.attributes = attributes


class OpenTelemetry(Plugin):
    name = "opentelemetry"
    priority = 12009
    Conf = OpenTelemetryConf

    def __init__(self, conf: OpenTelemetryConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        if env.attrs is not None:
            attr = env.attrs.opentelemetry
        else:  # (imported here: the config model imports the plugins)
            from gateway.config.model import OpenTelemetryAttr

            attr = OpenTelemetryAttr()
        self.from_request_id = attr.trace_id_source == "x-request-id"
        self.queue = env.loggers.queue("opentelemetry", span_export(attr, env.hostname), SpanQueue)
        options = conf.sampler.options
        self.sample = _sampler(conf.sampler.name, options.fraction, options.root)
        self.now = env.now
        self.variables = [(n, getter(n)) for n in conf.additional_attributes or ()]
        exact: list[bytes] = []
        prefixes: list[bytes] = []
        for key in conf.additional_header_prefix_attributes or ():
            if len(key) >= 2 and key.endswith("*"):
                prefixes.append(key[:-1].lower().encode("latin-1"))
            else:
                exact.append(key.lower().encode("latin-1"))
        self.header_names = frozenset(exact)
        self.header_prefixes = tuple(prefixes)

    def rewrite(self, ctx: RequestContext) -> None:
        parent = parse_traceparent(ctx.header(b"traceparent"), ctx.header(b"tracestate"))
        if parent is not None:
            trace_id = parent.trace_id
        elif self.from_request_id:
            trace_id = trace_id_from(ctx.header(b"x-request-id")) or new_trace_id()
        else:
            trace_id = new_trace_id()
        span_id = new_span_id()
        sampled = self.sample(trace_id, parent)
        ctx.remove_header(b"traceparent")
        ctx.headers.append((b"traceparent", traceparent(trace_id, span_id, sampled)))
        if not sampled:
            return
        ctx.span = Span(
            trace_id,
            span_id,
            parent.span_id if parent is not None else None,
            self._name(ctx),
            int(self.now() * 1e9),
            self._attributes(ctx),
        )

    def _name(self, ctx: RequestContext) -> str:
        route = ctx.route
        if route is None:
            return ctx.method.decode("latin-1")
        return f"{ctx.method.decode('latin-1')} {route.uri_label(ctx.path)}"

    def _attributes(self, ctx: RequestContext) -> list[dict[str, Any]]:
        text = _text
        attributes = [
            attribute("net.host.name", text(ctx.host)),
            attribute("http.method", text(ctx.method)),
            attribute("http.scheme", ctx.scheme),
            attribute("http.target", text(ctx.request_target)),
            attribute("http.user_agent", text(ctx.header(b"user-agent") or b"")),
        ]
        route = ctx.route
        if route is not None:
            attributes += [
                attribute("apisix.route_id", route.id),
                attribute("apisix.route_name", route.name or ""),
                attribute("http.route", route.uri_label(ctx.path)),
            ]
            if route.service_id is not None:
                attributes += [
                    attribute("apisix.service_id", route.service_id),
                    attribute("apisix.service_name", route.service_name or ""),
                ]
        for name, read in self.variables:
            value = read(ctx)
            if value is not None:
                attributes.append(attribute(name, value))
        if self.header_names or self.header_prefixes:
            for header, raw in ctx.headers:
                if header in self.header_names or header.startswith(self.header_prefixes):
                    attributes.append(attribute(text(header), text(raw)))
        return attributes

    def log(self, ctx: RequestContext) -> None:
        span: Span | None = ctx.span
        if span is None:
            return
        document: dict[str, Any] = {
            "traceId": span.trace_id,
            "spanId": span.span_id,
            "name": span.name,
            "kind": SPAN_KIND_SERVER,
            "startTimeUnixNano": str(span.start),
            "endTimeUnixNano": str(int(self.now() * 1e9)),
            "attributes": span.attributes,
        }
        if span.parent_id is not None:
            document["parentSpanId"] = span.parent_id
        status = ctx.upstream_status
        if status is not None:
            span.attributes.append(attribute("http.status_code", status))
            span.attributes.append(attribute("http.response.status_code", status))
            if status >= 500:
                document["status"] = {
                    "code": STATUS_ERROR,
                    "message": f"upstream response status: {status}",
                }
        self.queue.push(document)


def _text(value: bytes) -> str:
    return value.decode("latin-1")
