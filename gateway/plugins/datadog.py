"""datadog: six DogStatsD metrics per request to a Datadog agent over UDP, tagged as
APISIX's plugin tags them (priority 495, log phase).

`<namespace>.request.counter` (1, c), `request.latency`, `upstream.latency` (when an
upstream answered), `apisix.latency` (the request's less the upstream's, ms, h),
`ingress.size` and `egress.size` (bytes read and written, ms). Tags: `plugin_metadata`'s
`constant_tags` (`source:apisix`), the conf's, `route_name` (the route's name with
`prefer_name`, else its id), `service_name` (likewise), `consumer`, `balancer_ip` (the
node's IP), `response_status`, `scheme` (the upstream's), and with `include_path` /
`include_method` the route's URI pattern and the method. The agent is `plugin_metadata`'s
`host`:`port` (127.0.0.1:8125) and `namespace` (`apisix`) prefixes the names. Lines go in
batches through `gateway.logship` (APISIX's batch processor fields); the request never
waits.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.logship import DogStatsdQueue
from gateway.pipeline import Plugin, PluginConf, PluginEnv
from gateway.plugins.prometheus import node_ip

Positive = Annotated[int, msgspec.Meta(ge=1)]
Tag = Annotated[str, msgspec.Meta(pattern=r"^[^,|#\s]+\Z")]  # a tag cannot hold the separators
DEFAULT_AGENT = ("127.0.0.1", 8125)
DEFAULT_NAMESPACE = "apisix"
DEFAULT_TAGS = ["source:apisix"]


class DatadogConf(PluginConf, frozen=True, kw_only=True):
    prefer_name: bool = True
    include_path: bool = False
    include_method: bool = False
    constant_tags: list[Tag] = []
    buffer_duration: Positive = 60
    inactive_timeout: Positive = 5
    batch_max_size: Positive = 5000
    max_retry_count: Annotated[int, msgspec.Meta(ge=0)] = 1
    retry_delay: Annotated[int, msgspec.Meta(ge=0)] = 1
    name: str = "datadog"


class DatadogBatch(DatadogConf, frozen=True, kw_only=True):
    """A conf with the agent it sends to: what its queue reads, and the key that keeps the
    queue across reloads that change neither."""

    agent: tuple[str, int]


def _number(value: float) -> bytes:
    return f"{value:.3f}".rstrip("0").rstrip(".").encode()


class Datadog(Plugin):
    name = "datadog"
    priority = 495
    Conf = DatadogConf

    def __init__(self, conf: DatadogConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        metadata = env.metadata.get(self.name)
        host = getattr(metadata, "host", None) or DEFAULT_AGENT[0]
        port = getattr(metadata, "port", None) or DEFAULT_AGENT[1]
        namespace = getattr(metadata, "namespace", None)
        namespace = DEFAULT_NAMESPACE if namespace is None else namespace
        tags = getattr(metadata, "constant_tags", None)
        constant = [*(DEFAULT_TAGS if tags is None else tags), *conf.constant_tags]
        self.constant = ",".join(constant)
        prefix = f"{namespace}." if namespace else ""
        self.names = tuple(
            (prefix + name).encode()
            for name in (
                "request.counter",
                "request.latency",
                "upstream.latency",
                "apisix.latency",
                "ingress.size",
                "egress.size",
            )
        )
        self.prefer_name = conf.prefer_name
        self.include_path = conf.include_path
        self.include_method = conf.include_method
        batch = DatadogBatch(**msgspec.structs.asdict(conf), agent=(host, port))
        self.queue = env.loggers.queue(env.scope, batch, DogStatsdQueue)

    def _tags(self, ctx: RequestContext) -> bytes:
        tags = [self.constant] if self.constant else []
        route = ctx.route
        if route is not None:
            tags.append("route_name:" + ((self.prefer_name and route.name) or route.id))
            service = (self.prefer_name and route.service_name) or route.service_id
            if service:
                tags.append("service_name:" + service)
        if ctx.consumer is not None:
            tags.append("consumer:" + ctx.consumer.username)
        if ctx.upstream_addr:
            tags.append("balancer_ip:" + node_ip(ctx.upstream_addr))
        tags.append(f"response_status:{ctx.status}")
        if ctx.upstream_addr:
            upstream = ctx.upstream or (route.upstream if route is not None else None)
            tls = getattr(upstream, "tls", None)
            tags.append("scheme:https" if tls is not None else "scheme:http")
        if self.include_path and route is not None:
            tags.append("path:" + route.uri_label(ctx.path))
        if self.include_method:
            tags.append("method:" + ctx.method.decode("latin-1"))
        return b"|#" + ",".join(tags).encode("utf-8", "replace")

    def log(self, ctx: RequestContext) -> None:
        tags = self._tags(ctx)
        counter, latency, upstream_latency, own_latency, ingress, egress = self.names
        total = (ctx.end - ctx.start) * 1000
        lines = [counter + b":1|c" + tags, latency + b":" + _number(total) + b"|h" + tags]
        if ctx.upstream_time >= 0:
            upstream_ms = ctx.upstream_time * 1000
            lines.append(upstream_latency + b":" + _number(upstream_ms) + b"|h" + tags)
            total = max(total - upstream_ms, 0.0)
        lines.append(own_latency + b":" + _number(total) + b"|h" + tags)
        lines.append(ingress + b":" + str(ctx.request_length).encode() + b"|ms" + tags)
        lines.append(egress + b":" + str(ctx.bytes_sent).encode() + b"|ms" + tags)
        self.queue.push(lines)
