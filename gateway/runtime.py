"""Compile a validated `Config` into the immutable `Runtime` the request path reads.

All load-time work happens here, once: routes into a `Router`, plugin confs into plugin
instances and per-route `Chain`s (global rules first, service plugins overridden by route
plugins), upstreams into balancers with their timeouts. A reload compiles a new Runtime and
swaps it whole; requests in flight keep the one they started with.
"""

from __future__ import annotations

import copy
import hashlib
import platform
import time
from collections.abc import Callable
from typing import Any

import msgspec

from gateway.cache import CacheZones
from gateway.config.health import Checks
from gateway.config.model import (
    Config,
    PluginConfig,
    PrometheusAttr,
    Route,
    RouteTimeout,
    Service,
    plugin_items,
    policy_plugins,
    route_level_plugins,
)
from gateway.config.upstream import Upstream, split_host_port
from gateway.consumers import Consumer, ConsumerTable, Credential
from gateway.context import RequestContext
from gateway.expr import compile_vars
from gateway.fetch import tls_context
from gateway.https import Certificates
from gateway.logentry import ALWAYS_SECRET, SecretNames
from gateway.logship import LogShipper
from gateway.metrics import Metrics
from gateway.mirror import MirrorSender
from gateway.oidc import IdpRegistry
from gateway.pipeline import AuthPlugin, Chain, Plugin, PluginEnv, build, disabled
from gateway.plugins import BY_NAME
from gateway.ratelimit import LimitRegistry
from gateway.router import Router, RouteSpec, host_label, uri_label
from gateway.template import Template
from gateway.upstream.balancer import (
    Balancer,
    ConsistentHash,
    Ewma,
    LeastConn,
    Node,
    Prioritized,
    RoundRobin,
)
from gateway.upstream.health import Health, Limits
from gateway.upstream.prober import Probe
from gateway.variables import getter

BALANCERS: dict[str, type[Balancer]] = {
    "roundrobin": RoundRobin,
    "chash": ConsistentHash,
    "least_conn": LeastConn,
    "ewma": Ewma,
}


def _limits(healthy: Any, unhealthy: Any, statuses: bool = True) -> Limits:
    return Limits(
        healthy.http_statuses if statuses else (),
        unhealthy.http_statuses if statuses else (),
        healthy.successes,
        unhealthy.http_failures,
        unhealthy.tcp_failures,
        unhealthy.timeouts,
    )


def _health_checks(
    upstream_id: str, checks: Checks, balancer: Balancer, client: tuple[str, str] | None
) -> tuple[Health, Probe]:
    """The health state of an upstream with `checks` and what its active probes do
    (`type: https` probes show the upstream's client certificate, if it has one)."""
    active, passive = checks.active, checks.passive
    health = Health(
        upstream_id,
        balancer.nodes,
        balancer,
        _limits(active.healthy, active.unhealthy, active.type != "tcp"),
        _limits(passive.healthy, passive.unhealthy, passive.type == "http") if passive else None,
        key=upstream_id.encode() + b"\0" + msgspec.json.encode(checks),
    )
    probe = Probe(
        health=health,
        nodes=balancer.nodes,
        http=active.type != "tcp",
        tls=(
            tls_context(active.https_verify_certificate, client) if active.type == "https" else None
        ),
        timeout=active.timeout,
        concurrency=active.concurrency,
        host=active.host.encode("latin-1") if active.host else None,
        port=active.port,
        path=active.http_path.encode("ascii"),
        headers=b"".join(line.encode() + b"\r\n" for line in active.req_headers),
        healthy_interval=active.healthy.interval,
        unhealthy_interval=active.unhealthy.interval,
    )
    return health, probe


def hash_key(hash_on: str, key: str | None) -> Callable[[RequestContext], str]:
    """The request's value a chash upstream hashes (APISIX's `hash_on` and `key`); the
    client's address when the request has none."""
    if hash_on == "consumer":
        return lambda ctx: ctx.consumer.username if ctx.consumer is not None else ctx.remote_addr
    assert key is not None  # the config checks it
    if hash_on == "vars_combinations":
        template = Template(key)
        return lambda ctx: template.render(ctx) or ctx.remote_addr
    # As APISIX reads them: a header or cookie through its `http_` / `cookie_` variable.
    prefix = {"header": "http_", "cookie": "cookie_"}.get(hash_on, "")
    read = getter(prefix + key)
    return lambda ctx: read(ctx) or ctx.remote_addr


class CompiledUpstream:
    """An upstream ready for the proxy: node choice, timeouts, pool and Host settings."""

    __slots__ = (
        "balancer",
        "connect_timeout",
        "hash_key",
        "health",
        "id",
        "idle_timeout",
        "max_requests",
        "pass_host",
        "pool_size",
        "probe",
        "read_timeout",
        "retries",
        "retry_timeout",
        "send_timeout",
        "tls",
        "tls_identity",
        "upstream_host",
    )

    def __init__(self, conf: Upstream, label: str) -> None:
        self.id = conf.id or label
        nodes = [Node(*node) for node in conf.node_list()]
        kind = BALANCERS[conf.type]
        if len({node.priority for node in nodes if node.weight > 0}) > 1:
            self.balancer: Balancer = Prioritized(nodes, kind)
        else:
            self.balancer = kind(nodes)
        # What a chash upstream hashes, read from the request; None for round robin.
        self.hash_key = hash_key(conf.hash_on, conf.key) if conf.type == "chash" else None
        self.connect_timeout = conf.timeout.connect
        self.send_timeout = conf.timeout.send
        self.read_timeout = conf.timeout.read
        self.pool_size = conf.keepalive_pool.size
        self.idle_timeout = conf.keepalive_pool.idle_timeout
        self.max_requests = conf.keepalive_pool.requests
        self.pass_host = conf.pass_host
        # `scheme: https`: the TLS settings every connection of this upstream uses, and
        # what its pooled connections are kept apart by: a connection whose certificate
        # was not checked, or that shows another client certificate, serves no other.
        verify = conf.tls is not None and conf.tls.verify
        client = conf.tls.client_pair if conf.tls is not None else None
        self.tls = tls_context(verify, client) if conf.scheme == "https" else None
        self.tls_identity = (
            verify,
            hashlib.sha256(client[0].encode()).hexdigest()[:32] if client else None,
        )
        self.upstream_host = conf.upstream_host.encode("latin-1") if conf.upstream_host else None
        # Other nodes tried after one that cannot be connected to (APISIX's default: each
        # node once; nginx's proxy_next_upstream error timeout).
        live = len(self.balancer.nodes)
        self.retries = live - 1 if conf.retries is None else min(conf.retries, live - 1)
        self.retry_timeout = conf.retry_timeout  # 0: no bound
        self.health: Health | None = None
        self.probe: Probe | None = None
        if conf.checks is not None:
            self.health, self.probe = _health_checks(self.id, conf.checks, self.balancer, client)

    def with_timeout(self, timeout: RouteTimeout | None) -> CompiledUpstream:
        """This upstream with a route's own timeouts; the nodes, their pools and their
        health stay shared."""
        if timeout is None:
            return self
        view = copy.copy(self)
        if timeout.connect is not None:
            view.connect_timeout = timeout.connect
        if timeout.send is not None:
            view.send_timeout = timeout.send
        if timeout.read is not None:
            view.read_timeout = timeout.read
        return view


class UpstreamCatalog:
    """The upstreams a plugin may send a request to (traffic-split): the configured ones by
    id, and inline ones compiled here. Every one handed out is remembered, so that its
    active health checks run as those of the routes' own upstreams do."""

    def __init__(self, by_id: dict[str, CompiledUpstream]) -> None:
        self.by_id = by_id
        self.handed_out: list[CompiledUpstream] = []
        self.inline_by_label: dict[str, CompiledUpstream] = {}

    def named(self, upstream_id: str) -> CompiledUpstream:
        upstream = self.by_id[upstream_id]  # `checks` guarantees it exists
        self.handed_out.append(upstream)
        return upstream

    def inline(self, conf: Upstream, label: str) -> CompiledUpstream:
        """The upstream `conf` held at `label` (one place in the config: a service's plugin
        is built once per route, but compiled here once)."""
        upstream = self.inline_by_label.get(label)
        if upstream is None:
            upstream = self.inline_by_label[label] = CompiledUpstream(conf, label)
            self.handed_out.append(upstream)
        return upstream


class CompiledRoute:
    """A matched route: its id, its plugin chain and where it proxies to; its names and
    which of its URIs and hosts a request came in by, for metrics."""

    __slots__ = (
        "chain",
        "enable_websocket",
        "host_label",
        "id",
        "name",
        "service_id",
        "service_name",
        "upstream",
        "uri_label",
    )

    def __init__(
        self,
        route_id: str,
        service_id: str | None,
        chain: Chain,
        upstream: CompiledUpstream | None,
        enable_websocket: bool,
    ) -> None:
        self.id = route_id
        self.service_id = service_id
        self.chain = chain
        self.upstream = upstream
        self.enable_websocket = enable_websocket
        self.name: str | None = None
        self.service_name: str | None = None
        self.uri_label: Callable[[bytes], str] = lambda path: ""
        self.host_label: Callable[[bytes], str] = lambda host: ""

    def __repr__(self) -> str:
        return f"CompiledRoute({self.id!r}, plugins={self.chain.names()})"


def enabled_items(plugins: Any) -> list[tuple[str, Any]]:
    """`plugin_items` without the confs that `_meta.disable` turns off."""
    return [(name, conf) for name, conf in plugin_items(plugins) if not disabled(conf)]


def instantiate(plugins: Any, env: PluginEnv, scope: str) -> dict[str, Plugin]:
    """Plugin instances for a plugins Struct value held by resource `scope`, by name."""
    items = enabled_items(plugins)
    if not items:
        return {}
    scoped = env.for_scope(scope)
    return {name: build(BY_NAME[name], conf, scoped) for name, conf in items}


def merge(
    levels: list[tuple[list[tuple[str, Any]], str]], env: PluginEnv
) -> dict[str, Plugin | None]:
    """The plugins of several levels, lowest first, each ((name, conf) pairs, scope): a
    higher level's conf replaces a lower one's, and only then are the confs `_meta.disable`
    turns off left out (as APISIX merges, then filters), so a disabled conf turns the
    plugin off where it overrides it. A name maps to None when that is so."""
    confs: dict[str, tuple[Any, str]] = {}
    for items, scope in levels:
        for name, conf in items:
            confs[name] = (conf, scope)
    envs: dict[str, PluginEnv] = {}
    merged: dict[str, Plugin | None] = {}
    for name, (conf, scope) in confs.items():
        if disabled(conf):
            merged[name] = None
            continue
        scoped = envs.get(scope)
        if scoped is None:
            scoped = envs[scope] = env.for_scope(scope)
        merged[name] = build(BY_NAME[name], conf, scoped)
    return merged


def secret_names(config: Config) -> SecretNames:
    """Where the config's authentication plugins read credentials (key-auth's and
    jwt-auth's `header`, `query` and `cookie`, inside multi-auth too) and where jwe-decrypt
    puts its plaintext: never logged."""
    headers, args, cookies = set(ALWAYS_SECRET), set(), set()
    confs: list[Any] = []
    for _, plugins in route_level_plugins(config):
        for name, conf in plugin_items(plugins):
            if name == "multi-auth":
                confs.extend(c for _, c in conf.confs())
            elif issubclass(BY_NAME[name], AuthPlugin):
                confs.append(conf)
    for conf in confs:
        if getattr(conf, "header", None):
            headers.add(conf.header.lower().encode("latin-1"))
        if getattr(conf, "forward_header", None):  # jwe-decrypt's plaintext
            headers.add(conf.forward_header.lower().encode("latin-1"))
        if getattr(conf, "query", None):
            args.add(conf.query)
        if getattr(conf, "cookie", None):
            cookies.add(conf.cookie)
    return SecretNames(frozenset(headers), frozenset(args), frozenset(cookies))


def _https_port(config: Config) -> int | None:
    """The port redirect's `http_to_https` names, as APISIX picks it: `plugin_attr.redirect
    .https_port`, else an HTTPS listen address's (here the first)."""
    attr = config.plugin_attr.redirect
    if attr is not None and attr.https_port is not None:
        return attr.https_port
    addresses = config.server.ssl_addresses
    return split_host_port(addresses[0], allow_port_zero=True)[1] if addresses else None


def _uses_plugin(config: Config, name: str) -> bool:
    """Whether any resource of `config` holds a conf of plugin `name`."""
    return any(n == name for _, plugins in policy_plugins(config) for n, _ in plugin_items(plugins))


def build_consumers(config: Config, env: PluginEnv) -> None:
    """Fill `env.consumers`: consumers with their policy plugins, and each auth plugin's
    credential index (credentials and the legacy form alike)."""
    table = env.consumers
    group_plugins = {
        g.id: merge([(plugin_items(g.plugins), f"consumer_group:{g.id}")], env)
        for g in config.consumer_groups
    }
    entries: dict[str, list[tuple[Any, Credential]]] = {}
    for conf in config.consumers:
        policies = dict(group_plugins.get(conf.group_id, {})) if conf.group_id else {}
        policy_items = [
            (name, c)
            for name, c in plugin_items(conf.plugins)
            if not issubclass(BY_NAME[name], AuthPlugin)
        ]
        own = merge([(policy_items, f"consumer:{conf.username}")], env)
        policies.update(own)
        consumer = Consumer(conf.username, dict(conf.labels), conf.group_id, policies)
        table.by_name[consumer.username] = consumer
        for name, c in enabled_items(conf.plugins):
            if issubclass(BY_NAME[name], AuthPlugin):
                entries.setdefault(name, []).append((c, Credential(None, consumer)))
        for cred in conf.credentials:
            for name, c in enabled_items(cred.plugins):
                entries.setdefault(name, []).append((c, Credential(cred.id, consumer)))
    for name, items in entries.items():
        plugin = BY_NAME[name]
        assert issubclass(plugin, AuthPlugin)
        table.indexes[name] = plugin.build_index(items)


class Runtime:
    """Everything the request path reads, built once per config and never changed."""

    def __init__(
        self,
        config: Config,
        now: Callable[[], float] = time.time,
        limits: LimitRegistry | None = None,
        idps: IdpRegistry | None = None,
        metrics: Metrics | None = None,
        loggers: LogShipper | None = None,
        mirrors: MirrorSender | None = None,
        caches: CacheZones | None = None,
    ) -> None:
        self.config = config
        self.server = config.server
        self.limits = config.server.limits
        registry = limits if limits is not None else LimitRegistry()
        self.idps = idps if idps is not None else IdpRegistry()
        self.upstreams = {
            u.id: CompiledUpstream(u, u.id) for u in config.upstreams if u.id is not None
        }
        catalog = UpstreamCatalog(self.upstreams)
        self.metrics = metrics if metrics is not None else Metrics()
        self.loggers = loggers if loggers is not None else LogShipper()
        self.mirrors = mirrors if mirrors is not None else MirrorSender()
        self.caches = caches if caches is not None else CacheZones()
        self.env = env = PluginEnv(
            ConsumerTable(),
            now,
            registry,
            time.monotonic,
            idps=self.idps,
            upstreams=catalog,
            metrics=self.metrics,
            secrets=secret_names(config),
            hostname=platform.node(),
            loggers=self.loggers,
            mirrors=self.mirrors,
            attrs=config.plugin_attr,
            caches=self.caches,
            metadata={m.id: m for m in config.plugin_metadata},
            https_port=_https_port(config),
        )
        build_consumers(config, env)
        global_plugins: list[Plugin] = []
        for rule in config.global_rules:
            global_plugins.extend(instantiate(rule.plugins, env, f"global:{rule.id}").values())
        self.global_chain = Chain(global_plugins)
        services = {s.id: s for s in config.services}
        plugin_configs = {p.id: p for p in config.plugin_configs}
        specs = []
        for route in config.routes:
            service = services.get(route.service_id) if route.service_id else None
            shared = plugin_configs.get(route.plugin_config_id) if route.plugin_config_id else None
            compiled = self._compile_route(route, service, shared, global_plugins)
            if route.status == 0:
                continue
            hosts = route.host_list or (service.hosts if service and service.hosts else [])
            compiled.name = route.name
            compiled.service_name = service.name if service is not None else None
            compiled.uri_label = uri_label(route.uri_list, route.normal_uris)
            compiled.host_label = host_label(hosts)
            specs.append(
                RouteSpec(
                    compiled,
                    route.normal_uris,
                    route.methods,
                    hosts,
                    route.priority,
                    route.remote_addr_list,
                    compile_vars(route.vars) if route.vars is not None else None,
                )
            )
        self.router: Router[CompiledRoute] = Router(specs)
        # The active health checks of the upstreams routes and plugins use, one per upstream.
        used = [s.value.upstream for s in specs if s.value.upstream is not None]
        used += catalog.handed_out
        probes = {id(u.balancer): u.probe for u in used}
        self.probes = [probe for probe in probes.values() if probe is not None]
        # The metrics export server's address, when any prometheus conf (or its
        # `plugin_attr`) is in the config; its URI and the metric names' prefix.
        attr = config.plugin_attr.prometheus
        exported = attr is not None or _uses_plugin(config, "prometheus")
        attr = attr if attr is not None else PrometheusAttr()
        # Counted, and served on the export server unless `enable_export_server` is false
        # (then through a public-api route only).
        # A worker shares its counts (once a second) when they are served anywhere.
        self.shares_counts = exported or _uses_plugin(config, "public-api")
        self.metrics_address = attr.address if exported and attr.enable_export_server else None
        self.export_uri = attr.export_uri.encode()
        self.metric_prefix = attr.metric_prefix
        # The counter stores this config uses; the server keeps only these after a swap.
        self.limit_stores = registry.take_used()
        # The HTTPS addresses' certificates, by SNI.
        enabled = [entry for entry in config.ssls if entry.status == 1]
        fallback = config.server.ssl_fallback_sni
        self.certificates = Certificates(enabled, fallback) if enabled else None

    def carry_over_health(self, previous: Runtime) -> None:
        """Nodes the previous config's health checks found unhealthy stay so here, for the
        upstreams whose id and checks did not change."""
        old = {probe.health.key: probe.health for probe in previous.probes}
        for probe in self.probes:
            before = old.get(probe.health.key)
            if before is not None:
                probe.health.carry_over(before)

    def _compile_route(
        self,
        route: Route,
        service: Service | None,
        shared: PluginConfig | None,
        global_plugins: list[Plugin],
    ) -> CompiledRoute:
        """The route's chain: its service's plugins, overridden by its plugin config's
        (which APISIX merges into the route's, the route's own winning), overridden by the
        route's. A plugin config's plugins belong to the route: their counters are its."""
        levels = []
        if service is not None:
            levels.append((plugin_items(service.plugins), f"service:{service.id}"))
        if shared is not None:
            levels.append((plugin_items(shared.plugins), f"route:{route.id}"))
        levels.append((plugin_items(route.plugins), f"route:{route.id}"))
        merged = [p for p in merge(levels, self.env).values() if p is not None]
        chain = Chain([*global_plugins, *merged])
        upstream = self._route_upstream(route, service)
        if upstream is not None:
            upstream = upstream.with_timeout(route.timeout)
        websocket = route.enable_websocket or bool(service and service.enable_websocket)
        return CompiledRoute(route.id, route.service_id, chain, upstream, websocket)

    def _route_upstream(self, route: Route, service: Service | None) -> CompiledUpstream | None:
        """The route's upstream; None for a route whose plugin answers every request
        (checks.py allows no other route without one)."""
        if route.upstream is not None:
            return CompiledUpstream(route.upstream, f"route:{route.id}")
        if route.upstream_id is not None:
            return self.upstreams[route.upstream_id]
        if service is None:
            return None
        if service.upstream is not None:
            return CompiledUpstream(service.upstream, f"service:{service.id}")
        if service.upstream_id is not None:
            return self.upstreams[service.upstream_id]
        return None


def compile_config(
    config: Config,
    now: Callable[[], float] = time.time,
    limits: LimitRegistry | None = None,
    idps: IdpRegistry | None = None,
    metrics: Metrics | None = None,
    loggers: LogShipper | None = None,
    mirrors: MirrorSender | None = None,
    caches: CacheZones | None = None,
) -> Runtime:
    """Build the runtime for a validated config; `now` is the wall clock plugins read,
    `limits`, `idps`, `metrics`, `loggers`, `mirrors` and `caches` the server's long-lived
    registries, counts, log queues, mirror sender and cache zones (fresh ones when only
    checking)."""
    return Runtime(config, now, limits, idps, metrics, loggers, mirrors, caches)
