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

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply

PHASES = ("rewrite", "access", "before_proxy")
Header = tuple[bytes, bytes]


class Conf(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every config shape: unknown fields are errors, values never change."""


HookResult = Reply | None
Hook = Callable[[RequestContext], HookResult | Awaitable[HookResult]]
HeaderFilter = Callable[[RequestContext, int, list[Header]], None]
LogHook = Callable[[RequestContext], None]


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

    def __init__(self, conf: Any) -> None:
        self.conf = conf

    def __repr__(self) -> str:
        return f"<plugin {self.name} priority={self.priority}>"


class Chain:
    """The compiled hooks of one route (global rules included), phase by phase."""

    __slots__ = ("access", "before_proxy", "header_filters", "logs", "plugins", "rewrite")

    def __init__(self, plugins: Iterable[Plugin]) -> None:
        # Stable sort: among equal priorities, global rules keep their place before the route's.
        self.plugins = tuple(sorted(plugins, key=lambda p: -p.priority))
        self.rewrite = self._hooks("rewrite")
        self.access = self._hooks("access")
        self.before_proxy = self._hooks("before_proxy")
        self.header_filters: tuple[HeaderFilter, ...] = tuple(
            p.header_filter for p in self.plugins if hasattr(p, "header_filter")
        )
        self.logs: tuple[LogHook, ...] = tuple(p.log for p in self.plugins if hasattr(p, "log"))

    def _hooks(self, phase: str) -> tuple[tuple[Hook, bool], ...]:
        hooks = []
        for plugin in self.plugins:
            fn = getattr(plugin, phase, None)
            if fn is not None:
                hooks.append((fn, inspect.iscoroutinefunction(fn)))
        return tuple(hooks)

    @property
    def empty(self) -> bool:
        return not self.plugins

    def names(self) -> list[str]:
        return [p.name for p in self.plugins]


async def run_phase(hooks: tuple[tuple[Hook, bool], ...], ctx: RequestContext) -> Reply | None:
    """Run one phase's hooks in order; the first `Reply` returned ends the request."""
    for fn, is_async in hooks:
        result = fn(ctx)
        if is_async:
            result = await result  # type: ignore[misc]
        if result is not None:
            return result  # type: ignore[return-value]
    return None


async def run_request_phases(chain: Chain, ctx: RequestContext) -> Reply | None:
    """rewrite, access, before_proxy: the phases before the upstream is contacted."""
    if chain.rewrite:
        reply = await run_phase(chain.rewrite, ctx)
        if reply is not None:
            return reply
    if chain.access:
        reply = await run_phase(chain.access, ctx)
        if reply is not None:
            return reply
    if chain.before_proxy:
        return await run_phase(chain.before_proxy, ctx)
    return None


def run_header_filters(
    chain: Chain, ctx: RequestContext, status: int, headers: list[Header]
) -> None:
    """Let plugins edit the response head before it goes to the client."""
    for fn in chain.header_filters:
        fn(ctx, status, headers)


def run_log(chain: Chain, ctx: RequestContext) -> None:
    for fn in chain.logs:
        fn(ctx)
