"""prometheus: count the route's requests for the metrics export, as APISIX's plugin does.

In the log phase (priority 500), once per request: `apisix_http_status` by code, route,
matched URI and host, service, consumer and node; `apisix_http_latency` (request, upstream
and gateway milliseconds); `apisix_bandwidth` (bytes in and out). The counts are served
by the export server (`plugin_attr.prometheus`, see `gateway.exporter`). `prefer_name`
labels routes and services by name where they have one.
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.pipeline import Plugin, PluginConf, PluginEnv


class PrometheusConf(PluginConf, frozen=True, kw_only=True):
    prefer_name: bool = False


def node_ip(address: str) -> str:
    """The upstream node's IP, as APISIX's `balancer_ip` label holds it."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


class Prometheus(Plugin):
    name = "prometheus"
    priority = 500
    Conf = PrometheusConf

    def __init__(self, conf: PrometheusConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.prefer_name = conf.prefer_name
        self.metrics = env.metrics

    def log(self, ctx: RequestContext) -> None:
        route = ctx.route
        if route is None:
            return
        route_label = (self.prefer_name and route.name) or route.id
        service = route.service_id or ""
        if self.prefer_name and route.service_name:
            service = route.service_name
        consumer = ctx.consumer.username if ctx.consumer is not None else ""
        node = node_ip(ctx.upstream_addr) if ctx.upstream_addr else ""
        upstream_ms = ctx.upstream_time * 1000 if ctx.upstream_time >= 0 else None
        self.metrics.observe(
            (
                str(ctx.status),
                route_label,
                route.uri_label(ctx.path),
                route.host_label(ctx.host),
                service,
                consumer,
                node,
            ),
            (ctx.end - ctx.start) * 1000,
            upstream_ms,
            ctx.request_length,
            ctx.bytes_sent,
        )
