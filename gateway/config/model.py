"""msgspec Structs for config.json, with APISIX's field names unchanged.

Every shape derives from `Conf` (unknown fields are errors, values are frozen). Per-field
bounds use `Meta`; rules that span fields live in `__post_init__`. The `plugins` object is a
Struct generated from the plugin registry so that an error names the plugin, e.g.
`` - at `$.routes[0].plugins.proxy-rewrite.uri` ``. Checks across resources are in `checks.py`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from gateway.addresses import networks
from gateway.config.fields import TOKEN, HeaderName, Host, Id, Labels, Port, Seconds, Username
from gateway.config.ssl import Ssl
from gateway.config.upstream import Upstream, split_host_port
from gateway.expr import compile_vars
from gateway.http.methods import HttpMethod
from gateway.http.path import PathError, route_path
from gateway.metrics import DEFAULT_EXPORT_URI
from gateway.pipeline import AuthPlugin, Conf, Plugin, Resource
from gateway.plugins import PLUGINS
from gateway.plugins.cors import Origins

_HOSTNAME = re.compile(r"^(\*\.)?[a-zA-Z0-9_-]+(\.[a-zA-Z0-9_-]+)*\Z|^\*\Z")


# Plugins that answer every request of their route: such a route needs no upstream.
ANSWERING = frozenset({"public-api", "mocking"})


def _normal_uri(uri: str) -> str:
    """A route uri normalised as request paths are; a prefix keeps its final `*`."""
    if uri.endswith("*"):
        return route_path(uri[:-1]) + "*"
    return route_path(uri)


def _field(name: str) -> str:
    return name.replace("-", "_")


def _plugins_struct(struct_name: str, fields: list[tuple[str, Any]]) -> Any:
    """A Struct with one optional field per plugin, named in the config as the plugin is."""
    return msgspec.defstruct(
        struct_name,
        [(_field(name), conf | None, None) for name, conf in fields],
        bases=(Conf,),
        kw_only=True,
        frozen=True,
        rename={_field(name): name for name, _ in fields},
        module=__name__,
    )


def _holds_credentials(plugin: type[Plugin]) -> bool:
    return issubclass(plugin, AuthPlugin) and hasattr(plugin, "CredentialConf")


# Routes, services and global rules: every plugin, with its route-level conf.
Plugins: Any = _plugins_struct("Plugins", [(p.name, p.Conf) for p in PLUGINS])
# A credential: exactly one auth plugin, with its credential conf.
CredentialPlugins: Any = _plugins_struct(
    "CredentialPlugins",
    [(p.name, p.CredentialConf) for p in PLUGINS if _holds_credentials(p)],  # type: ignore[attr-defined]
)
# A consumer: auth plugins are credentials (the legacy form), the rest are policies.
ConsumerPlugins: Any = _plugins_struct(
    "ConsumerPlugins",
    [
        (p.name, p.CredentialConf if _holds_credentials(p) else p.Conf)  # type: ignore[attr-defined]
        for p in PLUGINS
        if _holds_credentials(p) or not issubclass(p, AuthPlugin)
    ],
)
# A consumer group: policies only.
GroupPlugins: Any = _plugins_struct(
    "GroupPlugins", [(p.name, p.Conf) for p in PLUGINS if not issubclass(p, AuthPlugin)]
)


def plugin_items(plugins: Any) -> list[tuple[str, Any]]:
    """The (name, conf) pairs set in any of the plugins Structs, in registry order."""
    if plugins is None:
        return []
    return [
        (name, conf)
        for field, name in zip(
            plugins.__struct_fields__, plugins.__struct_encode_fields__, strict=True
        )
        if (conf := getattr(plugins, field)) is not None
    ]


class Limits(Conf, frozen=True, kw_only=True):
    """Hostile-input limits (SPEC section 7); defaults after nginx, Envoy and HAProxy."""

    max_request_line: Annotated[int, msgspec.Meta(ge=256)] = 8 * 1024
    max_header_line: Annotated[int, msgspec.Meta(ge=256)] = 8 * 1024
    max_head: Annotated[int, msgspec.Meta(ge=1024)] = 32 * 1024
    max_headers: Annotated[int, msgspec.Meta(ge=1)] = 100
    head_timeout: Seconds = 10.0
    body_idle_timeout: Seconds = 60.0
    keepalive_timeout: Seconds = 60.0
    # A write to the client that makes no progress for this long closes the connection
    # (nginx's send_timeout): a client that stops reading cannot hold it, nor an upstream one.
    send_timeout: Seconds = 60.0
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    buffer_size: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024


class Server(Conf, frozen=True, kw_only=True):
    listen: str | Annotated[list[str], msgspec.Meta(min_length=1)] = "127.0.0.1:9080"
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    shutdown_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    limits: Limits = msgspec.field(default_factory=Limits)
    access_log: bool | Annotated[str, msgspec.Meta(min_length=1)] = True
    # Addresses that speak HTTPS, with the certificates of `ssls` (APISIX's
    # `apisix.ssl.listen`; nginx's `listen ... ssl`).
    ssl_listen: str | list[str] = []
    # The name whose certificate a client that sends no SNI gets (APISIX's
    # `apisix.ssl.fallback_sni`); none: such a handshake fails.
    ssl_fallback_sni: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Za-z_.-]+\Z")] | None = None

    def __post_init__(self) -> None:
        for address in self.addresses + self.ssl_addresses:
            split_host_port(address, allow_port_zero=True)

    @property
    def addresses(self) -> list[str]:
        return [self.listen] if isinstance(self.listen, str) else list(self.listen)

    @property
    def ssl_addresses(self) -> list[str]:
        return [self.ssl_listen] if isinstance(self.ssl_listen, str) else list(self.ssl_listen)


class RouteTimeout(Conf, frozen=True, kw_only=True):
    """A route's own timeouts; each one left out stays its upstream's."""

    connect: Seconds | None = None
    send: Seconds | None = None
    read: Seconds | None = None


class Route(Resource, frozen=True, kw_only=True):
    id: Id
    name: str | None = None
    desc: str | None = None
    labels: Labels = {}
    uri: Annotated[str, msgspec.Meta(pattern=r"^/")] | None = None
    uris: (
        Annotated[list[Annotated[str, msgspec.Meta(pattern=r"^/")]], msgspec.Meta(min_length=1)]
        | None
    ) = None
    methods: list[HttpMethod] | None = None
    host: Annotated[str, msgspec.Meta(pattern=_HOSTNAME.pattern)] | None = None
    hosts: list[Annotated[str, msgspec.Meta(pattern=_HOSTNAME.pattern)]] | None = None
    priority: int = 0
    plugins: Plugins | None = None
    upstream: Upstream | None = None
    upstream_id: Id | None = None
    service_id: Id | None = None
    plugin_config_id: Id | None = None
    enable_websocket: bool = False
    remote_addr: str | None = None
    remote_addrs: Annotated[list[str], msgspec.Meta(min_length=1)] | None = None
    vars: list[Any] | None = None
    timeout: RouteTimeout | None = None
    status: Literal[0, 1] = 1  # APISIX: 0 takes the route out of matching

    def __post_init__(self) -> None:
        if (self.uri is None) == (self.uris is None):
            raise ValueError("a route needs exactly one of `uri` and `uris`")
        if self.host is not None and self.hosts is not None:
            raise ValueError("a route takes `host` or `hosts`, not both")
        if self.upstream is not None and self.upstream_id is not None:
            raise ValueError("a route takes `upstream` or `upstream_id`, not both")
        if (
            self.upstream is None
            and self.upstream_id is None
            and self.service_id is None
            and self.plugin_config_id is None
            and not (ANSWERING & {name for name, _ in plugin_items(self.plugins)})
        ):
            raise ValueError(
                "a route needs `upstream`, `upstream_id` or `service_id`"
                " (or a plugin that answers every request itself: public-api, mocking)"
            )
        for uri in self.uri_list:
            try:
                _normal_uri(uri)
            except PathError as exc:
                raise ValueError(f"uri {uri!r}: {exc}") from None
        if self.vars is not None:
            compile_vars(self.vars)
        if self.remote_addr is not None and self.remote_addrs is not None:
            raise ValueError("a route takes `remote_addr` or `remote_addrs`, not both")
        for address in self.remote_addr_list:
            try:
                networks([address])
            except ValueError:
                raise ValueError(
                    f"remote address {address!r} is neither an IP address nor a network"
                ) from None

    @property
    def uri_list(self) -> list[str]:
        return [self.uri] if self.uri is not None else list(self.uris or ())

    @property
    def normal_uris(self) -> list[str]:
        """`uri_list` in the form requests are routed in (`http.path.route_path`)."""
        return [_normal_uri(uri) for uri in self.uri_list]

    @property
    def host_list(self) -> list[str]:
        return [self.host] if self.host is not None else list(self.hosts or ())

    @property
    def remote_addr_list(self) -> list[str]:
        if self.remote_addr is not None:
            return [self.remote_addr]
        return list(self.remote_addrs or ())


class Service(Resource, frozen=True, kw_only=True):
    id: Id
    name: str | None = None
    desc: str | None = None
    labels: Labels = {}
    plugins: Plugins | None = None
    upstream: Upstream | None = None
    upstream_id: Id | None = None
    enable_websocket: bool = False
    hosts: list[Annotated[str, msgspec.Meta(pattern=_HOSTNAME.pattern)]] | None = None

    def __post_init__(self) -> None:
        if self.upstream is not None and self.upstream_id is not None:
            raise ValueError("a service takes `upstream` or `upstream_id`, not both")


class PluginConfig(Resource, frozen=True, kw_only=True):
    """APISIX's plugin config: plugins that routes take by `plugin_config_id`."""

    id: Id
    name: str | None = None
    desc: str | None = None
    labels: Labels = {}
    plugins: Plugins


class GlobalRule(Resource, frozen=True, kw_only=True):
    id: Id
    plugins: Plugins


class Credential(Resource, frozen=True, kw_only=True):
    id: Id
    desc: str | None = None
    labels: Labels = {}
    plugins: CredentialPlugins


class Consumer(Resource, frozen=True, kw_only=True):
    username: Username
    desc: str | None = None
    labels: Labels = {}
    group_id: Id | None = None
    plugins: ConsumerPlugins | None = None
    credentials: list[Credential] = []


class ConsumerGroup(Resource, frozen=True, kw_only=True):
    id: Id
    desc: str | None = None
    labels: Labels = {}
    plugins: GroupPlugins


class ExportAddr(Conf, frozen=True, kw_only=True):
    ip: Host = "127.0.0.1"
    port: Port = 9091


class PrometheusAttr(Conf, frozen=True, kw_only=True):
    """APISIX's `plugin_attr.prometheus`: where the metrics are served, and their prefix."""

    export_addr: ExportAddr = msgspec.field(default_factory=ExportAddr)
    export_uri: Annotated[str, msgspec.Meta(pattern=r"^/[!-~]*\Z")] = DEFAULT_EXPORT_URI
    metric_prefix: Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")] = "apisix_"
    # False: no export server; the metrics are served only by a route with public-api.
    enable_export_server: bool = True

    @property
    def address(self) -> str:
        ip = self.export_addr.ip
        return f"[{ip}]:{self.export_addr.port}" if ":" in ip else f"{ip}:{self.export_addr.port}"


AttrValue = bool | int | float | str


class OtelCollector(Conf, frozen=True, kw_only=True):
    # host:port (http), or an http:// or https:// URL of the collector.
    address: Annotated[
        str, msgspec.Meta(pattern=r"^(https?://)?[A-Za-z0-9.\[\]:_-]+(:\d+)?/?\Z")
    ] = "127.0.0.1:4318"
    request_timeout: Annotated[int, msgspec.Meta(ge=1)] = 3
    request_headers: dict[Annotated[str, msgspec.Meta(pattern=TOKEN)], AttrValue] | None = None


class OtelBatch(Conf, frozen=True, kw_only=True):
    """opentelemetry-lua's batch span processor fields and defaults."""

    drop_on_queue_full: bool = True
    max_queue_size: Annotated[int, msgspec.Meta(ge=1)] = 2048
    batch_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    inactive_timeout: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    max_export_batch_size: Annotated[int, msgspec.Meta(ge=1)] = 256


class OpenTelemetryAttr(Conf, frozen=True, kw_only=True):
    """APISIX's `plugin_attr.opentelemetry`: the collector spans go to, the resource they
    describe, and where trace ids come from."""

    trace_id_source: Literal["x-request-id", "random"] = "random"
    resource: dict[str, AttrValue] | None = None
    collector: OtelCollector = msgspec.field(default_factory=OtelCollector)
    batch_span_processor: OtelBatch = msgspec.field(default_factory=OtelBatch)
    set_ngx_var: bool = False

    def __post_init__(self) -> None:
        if self.set_ngx_var:
            raise ValueError("`set_ngx_var`: the gateway has no nginx variables to set")


class RedirectAttr(Conf, frozen=True, kw_only=True):
    """The port `http_to_https` redirects to (default: the first `server.ssl_listen`'s)."""

    https_port: Port | None = None


class PluginAttr(Conf, frozen=True, kw_only=True):
    """APISIX's `plugin_attr` (its config.yaml's): settings of a plugin shared by every
    conf of it."""

    prometheus: PrometheusAttr | None = None
    redirect: RedirectAttr | None = None
    opentelemetry: OpenTelemetryAttr = msgspec.field(default_factory=OpenTelemetryAttr)


class PluginMetadata(Conf, frozen=True, kw_only=True):
    """APISIX's `plugin_metadata`: settings shared by every conf of one plugin (`id`, the
    plugin's name). Here the loggers' `log_format`, for their confs without one, cors'
    named `allow_origins` lists, for its confs' `allow_origins_by_metadata`,
    batch-requests' bounds on a batch, datadog's agent, and limit-count's quota header
    names."""

    id: Literal[
        "http-logger",
        "tcp-logger",
        "udp-logger",
        "file-logger",
        "loki-logger",
        "elasticsearch-logger",
        "splunk-hec-logging",
        "clickhouse-logger",
        "syslog",
        "cors",
        "batch-requests",
        "datadog",
        "limit-count",
    ]
    log_format: dict[str, Any] | None = None
    allow_origins: dict[str, Origins] | None = None
    max_body_size: Annotated[int, msgspec.Meta(gt=0)] | None = None
    max_pipeline_items: Annotated[int, msgspec.Meta(gt=0)] | None = None
    # datadog's agent (DogStatsD) and what every metric carries.
    host: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    namespace: str | None = None
    constant_tags: list[str] | None = None
    # limit-count's quota header names.
    limit_header: HeaderName | None = None
    remaining_header: HeaderName | None = None
    reset_header: HeaderName | None = None

    def __post_init__(self) -> None:
        taken = {
            "cors": {"allow_origins"},
            "batch-requests": {"max_body_size", "max_pipeline_items"},
            "datadog": {"host", "port", "namespace", "constant_tags"},
            "limit-count": {"limit_header", "remaining_header", "reset_header"},
        }.get(self.id, {"log_format"})
        for field in self.__struct_fields__:
            if field != "id" and getattr(self, field) is not None and field not in taken:
                raise ValueError(
                    f"{self.id} metadata takes {', '.join(f'`{t}`' for t in sorted(taken))},"
                    f" not `{field}`"
                )


class Config(Conf, frozen=True, kw_only=True):
    server: Server = msgspec.field(default_factory=Server)
    plugin_attr: PluginAttr = msgspec.field(default_factory=PluginAttr)
    routes: list[Route] = []
    services: list[Service] = []
    plugin_configs: list[PluginConfig] = []
    upstreams: list[Upstream] = []
    consumers: list[Consumer] = []
    consumer_groups: list[ConsumerGroup] = []
    global_rules: list[GlobalRule] = []
    ssls: list[Ssl] = []
    plugin_metadata: list[PluginMetadata] = []


def route_level_plugins(config: Config) -> list[tuple[str, Any]]:
    """(JSON path, plugins) of every resource whose plugins run on routes: routes,
    services, plugin configs and global rules."""
    places: list[tuple[str, Any]] = []
    places += [(f"$.routes[{i}].plugins", r.plugins) for i, r in enumerate(config.routes)]
    places += [(f"$.services[{i}].plugins", s.plugins) for i, s in enumerate(config.services)]
    places += [
        (f"$.plugin_configs[{i}].plugins", p.plugins) for i, p in enumerate(config.plugin_configs)
    ]
    places += [
        (f"$.global_rules[{i}].plugins", g.plugins) for i, g in enumerate(config.global_rules)
    ]
    return places


def policy_plugins(config: Config) -> list[tuple[str, Any]]:
    """(JSON path, plugins) of every resource whose non-auth plugins run on requests: the
    route-level ones, consumers and consumer groups."""
    places = route_level_plugins(config)
    places += [(f"$.consumers[{i}].plugins", c.plugins) for i, c in enumerate(config.consumers)]
    places += [
        (f"$.consumer_groups[{i}].plugins", g.plugins) for i, g in enumerate(config.consumer_groups)
    ]
    return places
