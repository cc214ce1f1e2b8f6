"""The plugin base class and the phase runner.

A route's plugins are compiled once, at config load, into a `Chain`: for each phase the
hooks in priority order (higher first), each marked sync or async. Per request the runner
only walks tuples.

The request timeline::

    client ──► downstream (h11 parse) ──► router ──► rewrite ──► access ──► before_proxy
                                                      (auth)    (restrict,   (labels,
                                                                 limits)      identity)
    client ◄── downstream ◄── header_filter ◄── upstream response ◄── proxy ◄──┘
                                   │
                                   └──► log (after the last byte, never changes the reply)

Global rules run first in every phase, then service plugins overridden by route plugins.
A hook returning a `Reply` ends the request there: later hooks and the upstream never see it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from gateway.consumers import Consumer, ConsumerTable, Credential
from gateway.context import RequestContext
from gateway.expr import compile_vars
from gateway.http.compression import start_gzip
from gateway.http.replies import Reply

PHASES = ("rewrite", "access", "before_proxy")
Header = tuple[bytes, bytes]


class Conf(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, gc=False):
    """Base of every config shape: unknown fields are errors, values never change.

    Decoded from JSON, a config is a tree and can hold no reference cycle, so its Structs
    stay out of the cyclic collector's sight (`gc=False`): with 100,000 consumers that is
    600,000 objects fewer for the collection after each reload to walk."""


class Resource(Conf, frozen=True, kw_only=True):
    """A resource of the config (route, service, upstream, consumer, credential, consumer
    group, plugin config, global rule, certificate). APISIX's Admin API stamps each with
    `create_time` and `update_time` (seconds), which a config exported from it carries:
    taken, and unused."""

    create_time: Annotated[int, msgspec.Meta(ge=0)] | None = None
    update_time: Annotated[int, msgspec.Meta(ge=0)] | None = None


class PluginMeta(Conf, frozen=True, kw_only=True):
    """APISIX's `_meta` of a plugin conf; of its fields `disable` and `filter` are taken."""

    disable: bool = False
    # Route `vars` rules: the plugin runs only for the requests they hold for.
    filter: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.filter is not None:
            compile_vars(self.filter)


class PluginConf(Conf, frozen=True, kw_only=True):
    """Base of a plugin's conf, route-level or credential."""

    meta: PluginMeta | None = msgspec.field(default=None, name="_meta")


def disabled(conf: Any) -> bool:
    """Whether a plugin conf is turned off by its `_meta.disable`."""
    meta = getattr(conf, "meta", None)
    return meta is not None and bool(meta.disable)


HookResult = Reply | None
Hook = Callable[[RequestContext], HookResult | Awaitable[HookResult]]
HeaderFilter = Callable[[RequestContext, int, list[Header]], None]
LogHook = Callable[[RequestContext], None]


class PluginEnv:
    """What plugins may use beyond their conf: the consumer table, the clocks, the
    rate-limit store registry, and `scope`, the resource whose conf is being compiled
    (`route:<id>`, `service:<id>`, `consumer:<name>`, `consumer_group:<id>`, `global:<id>`).

    Clocks are injected (`time.time` and a monotonic clock in a real process) so that
    plugin logic stays pure and tests can fix the time.
    """

    def __init__(
        self,
        consumers: ConsumerTable,
        now: Callable[[], float],
        limits: Any = None,
        monotonic: Callable[[], float] | None = None,
        scope: str = "",
        idps: Any = None,
        upstreams: Any = None,
        metrics: Any = None,
        secrets: Any = None,
        hostname: str = "",
        loggers: Any = None,
        mirrors: Any = None,
        attrs: Any = None,
        caches: Any = None,
        metadata: dict[str, Any] | None = None,
        https_port: int | None = None,
    ) -> None:
        self.consumers = consumers
        # Where the gateway speaks HTTPS, for redirect's `http_to_https` (None: not known).
        self.https_port = https_port
        # The config's `plugin_metadata` by plugin name (`config.model.PluginMetadata`).
        self.metadata = metadata or {}
        # proxy-cache's zones (a `cache.CacheZones`), kept across reloads.
        self.caches = caches
        # The config's `plugin_attr` (a `config.model.PluginAttr`), or None.
        self.attrs = attrs
        # The upstreams a plugin may send a request to (runtime.UpstreamCatalog).
        self.upstreams = upstreams
        # Where the prometheus plugin counts (a `gateway.metrics.Metrics`).
        self.metrics = metrics
        # Where credentials are read from, for the loggers (a `logentry.SecretNames`).
        self.secrets = secrets
        self.hostname = hostname
        # http-logger's queues (a `logship.LogShipper`).
        self.loggers = loggers
        # proxy-mirror's sender (a `mirror.MirrorSender`).
        self.mirrors = mirrors
        self.now = now
        self.limits = limits
        self.idps = idps
        self.monotonic = monotonic if monotonic is not None else now
        self.scope = scope

    def for_scope(self, scope: str) -> PluginEnv:
        """The same environment for plugins held by another resource."""
        env = copy.copy(self)
        env.scope = scope
        return env


class Plugin:
    """A plugin: `name` and `priority` as APISIX has them, `Conf` its config Struct.

    `__init__` does all per-config work (lower-casing names, compiling regexes, building
    replies). Hooks are methods named after phases; a plugin defines only the ones it uses:
    `rewrite`, `access`, `before_proxy` take the context and return `Reply | None`;
    `header_filter(ctx, status, headers)` edits the response headers in place;
    `log(ctx)` runs after the response. Hooks are plain functions unless they do IO.
    """

    name: ClassVar[str]
    priority: ClassVar[int]
    Conf: ClassVar[type[Conf]]

    def __init__(self, conf: Any, env: PluginEnv) -> None:
        # `env` is not kept: a plugin keeps what it reads of it, so that the consumers'
        # plugins do not point back at the table of every consumer (a reference cycle per
        # consumer, which only a full collection of the old config could free).
        self.conf = conf

    def __repr__(self) -> str:
        return f"<plugin {self.name} priority={self.priority}>"


class AuthPlugin(Plugin):
    """An authentication plugin: its `rewrite` sets `ctx.consumer` and `ctx.credential`.

    `CredentialConf` is the shape of a credential (e.g. key-auth's `{"key": ...}`).
    `build_index` turns every credential of this type into the lookup structure the plugin
    uses per request; `unique_keys` names the values that must not repeat across credentials
    (`gateway check` refuses a key, username, jwt key or hmac key_id used twice).
    """

    CredentialConf: ClassVar[type[Conf]]  # absent on multi-auth, which holds no credentials
    challenge: list[Header]  # the WWW-Authenticate header(s) of this plugin's 401s
    # False for jwe-decrypt, which holds credentials but names no consumer (so it is no
    # entry of multi-auth).
    names_consumer: ClassVar[bool] = True

    @classmethod
    def build_index(cls, entries: Sequence[tuple[Any, Credential]]) -> Any:
        raise NotImplementedError

    @classmethod
    def unique_keys(cls, conf: Any) -> list[str]:
        return []

    @staticmethod
    def attach(ctx: RequestContext, credential: Credential) -> None:
        ctx.consumer = credential.consumer
        ctx.credential = credential

    def use_anonymous(self, consumer: Consumer) -> None:
        """APISIX's `anonymous_consumer`: a request this plugin would turn away with 401
        goes on as `consumer` (no credential), whose own plugins then apply."""
        anonymous = Credential(None, consumer)
        inner = self.rewrite  # type: ignore[attr-defined]

        def settle(ctx: RequestContext, reply: Reply | None) -> Reply | None:
            if reply is None or reply.status != 401:
                return reply
            self.attach(ctx, anonymous)
            return None

        if inspect.iscoroutinefunction(inner):

            async def rewrite_async(ctx: RequestContext) -> Reply | None:
                return settle(ctx, await inner(ctx))

            setattr(self, "rewrite", rewrite_async)  # noqa: B010 (subclasses type their own)
        else:
            setattr(self, "rewrite", lambda ctx: settle(ctx, inner(ctx)))  # noqa: B010


P = TypeVar("P", bound=Plugin)


def build(plugin: type[P], conf: Any, env: PluginEnv) -> P:
    """The instance of `plugin` for `conf`, with its `anonymous_consumer` when it names one
    (the config check makes sure that consumer exists)."""
    instance = plugin(conf, env)
    anonymous = getattr(conf, "anonymous_consumer", None)
    if anonymous is not None and isinstance(instance, AuthPlugin):
        instance.use_anonymous(env.consumers.by_name[anonymous])
    meta = getattr(conf, "meta", None)
    if meta is not None and meta.filter is not None:
        _only_when(instance, compile_vars(meta.filter))
    return instance


def _only_when(plugin: Plugin, check: Callable[[RequestContext], bool]) -> None:
    """`_meta.filter`: each of the plugin's hooks runs only when `check` holds (but for
    a `log` that gives back what the plugin took: it must always run)."""
    phases = ["rewrite", "access", "before_proxy"]
    if not getattr(plugin, "log_gives_back", False):
        phases.append("log")
    for phase in phases:
        hook = getattr(plugin, phase, None)
        if hook is None:
            continue
        if inspect.iscoroutinefunction(hook):

            async def gated_async(ctx: RequestContext, hook: Any = hook) -> Any:
                return await hook(ctx) if check(ctx) else None

            setattr(plugin, phase, gated_async)
        else:
            setattr(plugin, phase, lambda ctx, hook=hook: hook(ctx) if check(ctx) else None)
    header_filter = getattr(plugin, "header_filter", None)
    if header_filter is not None:

        def gated_filter(ctx: RequestContext, status: int, headers: list[Header]) -> None:
            if check(ctx):
                header_filter(ctx, status, headers)

        setattr(plugin, "header_filter", gated_filter)  # noqa: B010


class Chain:
    """The compiled hooks of one route (global rules included), phase by phase."""

    __slots__ = (
        "_by_consumer",
        "access",
        "before_proxy",
        "consumer_rewrite",
        "header_filters",
        "logs",
        "plugins",
        "rewrite",
    )

    def __init__(self, plugins: Iterable[Plugin], merged: Iterable[Plugin] = ()) -> None:
        # Stable sort: among equal priorities, global rules keep their place before the route's.
        self.plugins = tuple(sorted(plugins, key=lambda p: -p.priority))
        self.rewrite = self._hooks("rewrite", self.plugins)
        self.access = self._hooks("access", self.plugins)
        self.before_proxy = self._hooks("before_proxy", self.plugins)
        self.header_filters: tuple[HeaderFilter, ...] = tuple(
            p.header_filter for p in self.plugins if hasattr(p, "header_filter")
        )
        self.logs: tuple[LogHook, ...] = tuple(p.log for p in self.plugins if hasattr(p, "log"))
        # Rewrite hooks of the plugins merged in from a consumer (or its group): they run
        # once authentication has named the consumer.
        merged_ids = {id(p) for p in merged}
        self.consumer_rewrite = self._hooks(
            "rewrite", [p for p in self.plugins if id(p) in merged_ids]
        )
        self._by_consumer: dict[str, Chain] = {}

    @staticmethod
    def _hooks(phase: str, plugins: Iterable[Plugin]) -> tuple[tuple[Hook, bool], ...]:
        hooks = []
        for plugin in plugins:
            fn = getattr(plugin, phase, None)
            if fn is not None:
                hooks.append((fn, inspect.iscoroutinefunction(fn)))
        return tuple(hooks)

    def for_consumer(self, consumer: Consumer) -> Chain:
        """This chain with the consumer's plugins merged over it (consumer > group > route).

        Built on first use per consumer and kept: the set of consumers is fixed per config.
        """
        chain = self._by_consumer.get(consumer.username)
        if chain is None:
            own = consumer.plugins
            kept = [p for p in self.plugins if p.name not in own]
            added = [p for p in own.values() if p is not None]
            chain = Chain([*kept, *added], merged=added)
            self._by_consumer[consumer.username] = chain
        return chain

    def names(self) -> list[str]:
        return [p.name for p in self.plugins]


IDENTITY_USERNAME = b"x-consumer-username"
IDENTITY_CREDENTIAL = b"x-credential-identifier"
IDENTITY_CUSTOM_ID = b"x-consumer-custom-id"


async def run_request_phases(chain: Chain, ctx: RequestContext) -> Reply | None:
    """rewrite, access, before_proxy: the phases before the upstream is contacted.

    After the rewrite phase (where authentication happens) the consumer's plugins are merged
    over the route's and `ctx.chain` becomes the merged chain. After before_proxy the
    identity headers are added for an authenticated request. The first `Reply` a hook
    returns ends the request there. (One coroutine for all phases: most hooks are plain
    functions, and a coroutine per phase cost more than the hooks.)
    """
    later: tuple[tuple[tuple[Hook, bool], ...], ...]
    for fn, is_async in chain.rewrite:
        result = fn(ctx)
        if is_async:
            result = await result  # type: ignore[misc]
        if result is not None:
            return result  # type: ignore[return-value]
    consumer = ctx.consumer
    if consumer is not None and consumer.plugins:
        chain = chain.for_consumer(consumer)
        ctx.chain = chain
        later = (chain.consumer_rewrite, chain.access, chain.before_proxy)
    else:
        later = (chain.access, chain.before_proxy)
    for hooks in later:
        for fn, is_async in hooks:
            result = fn(ctx)
            if is_async:
                result = await result  # type: ignore[misc]
            if result is not None:
                return result  # type: ignore[return-value]
    if consumer is not None:
        add_identity_headers(ctx, consumer)
    return None


def add_identity_headers(ctx: RequestContext, consumer: Consumer) -> None:
    """X-Consumer-Username, X-Credential-Identifier, X-Consumer-Custom-ID for the upstream.

    Client-sent copies were removed when the request arrived, so a header without a value
    here is simply absent upstream.
    """
    headers = ctx.headers
    headers.append((IDENTITY_USERNAME, consumer.username_bytes))
    credential = ctx.credential
    if credential is not None and credential.id_bytes is not None:
        headers.append((IDENTITY_CREDENTIAL, credential.id_bytes))
    if consumer.custom_id is not None:
        headers.append((IDENTITY_CUSTOM_ID, consumer.custom_id))


def run_header_filters(
    chain: Chain, ctx: RequestContext, status: int, headers: list[Header]
) -> None:
    """Let plugins edit the response head before it goes to the client."""
    for fn in chain.header_filters:
        fn(ctx, status, headers)


def finish_whole_body(
    ctx: RequestContext, method: bytes, status: int, headers: list[Header], body: bytes
) -> bytes:
    """A whole body as it goes out once the header filters ran (the gateway's own answer,
    or one a filter put in place): copied for whoever asked (`ctx.response_copy`), then
    gzipped when the gzip plugin asked and nginx's rules agree (`headers` edited for it)."""
    copy = ctx.response_copy
    if copy is not None:
        copy.add(body)
        copy.complete = True
    if ctx.gzip:
        gzip = start_gzip(ctx.gzip, method, status, ctx.headers, headers)
        if gzip is not None:
            return gzip.whole(body)
    return body


def run_log(chain: Chain, ctx: RequestContext) -> None:
    for fn in chain.logs:
        fn(ctx)
