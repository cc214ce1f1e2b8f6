"""limit-count's `rules` and amounts read from variables (APISIX 3.16).

`count` and `time_window` may name a variable (`"$http_x_quota"`) read per request: a
value that is not a positive integer answers 500, or lets the request pass with
`allow_degradation`. Requests are counted per key under the amounts they carried (one
counter set per amount, made on first use).

`rules` (instead of `count` and `time_window`): each rule has its own `count`,
`time_window` and `key`, a combination of variables (`"$http_x_user $arg_app"`). In order,
every rule whose key resolves (at least one of its variables present) and whose amounts
are valid counts the request under its own counter, until one refuses; a rule that does
not resolve is not run, and a request that no rule applies to answers 500 (or passes with
`allow_degradation`), as APISIX's. Each rule has its headers, `X-<header_prefix>-RateLimit-
Limit`, `-Remaining` and `-Reset` (`header_prefix` defaults to the rule's index from 1).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, status_reply
from gateway.plugins.rate_limits import check_key, key_reader
from gateway.ratelimit import Decision, RedisUnavailable
from gateway.variables import getter

if TYPE_CHECKING:
    from gateway.pipeline import PluginEnv
    from gateway.plugins.limit_count import LimitCountConf

log = logging.getLogger("gateway")

_VARIABLE: Final = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
NO_RULE: Final = status_reply(500)  # APISIX: no rule to apply, or an amount unreadable

Amounts = Callable[[RequestContext], int | None]
RuleKey = Callable[[RequestContext], str | None]


def is_variable(amount: int | str | None) -> bool:
    return isinstance(amount, str) and amount.startswith("$")


def amount_reader(amount: int | str) -> Amounts:
    """A count or window: fixed, or read from a variable per request (None when it is not
    a positive integer)."""
    if not is_variable(amount):
        fixed = int(amount)
        return lambda ctx: fixed
    read = getter(str(amount)[1:])

    def variable(ctx: RequestContext) -> int | None:
        text = read(ctx)
        if text is None or not text.isdigit():
            return None
        value = int(text)
        return value if 0 < value <= 9007199254740991 else None

    return variable


def check_rule_key(key: str) -> None:
    """Raises ValueError for a rule key that names no variable (it would never run) or one
    the limits cannot read."""
    if not _VARIABLE.search(key):
        raise ValueError(f"rule key {key!r} names no variable: the rule would never run")
    check_key("var_combination", key)


def rule_key(key: str) -> RuleKey:
    """The rule's key for a request, or None when none of its variables is present."""
    names = [getter(name) for name in _VARIABLE.findall(key)]
    render = key_reader("var_combination", key)

    def read(ctx: RequestContext) -> str | None:
        return render(ctx) if any(name(ctx) for name in names) else None

    return read


class _Limit:
    """One rule (or the conf itself): its key, amounts, header names and counters."""

    __slots__ = ("count", "key", "names", "scope", "stores", "window")

    def __init__(
        self,
        key: RuleKey,
        count: int | str,
        window: int | str,
        names: tuple[bytes, bytes, bytes],
        scope: str,
    ) -> None:
        self.key = key
        self.count = amount_reader(count)
        self.window = amount_reader(window)
        self.names = names
        self.scope = scope
        self.stores: dict[tuple[int, int], Any] = {}


class VariedLimits:
    """limit-count's access hook for `rules` or amounts read from variables."""

    def __init__(
        self,
        conf: LimitCountConf,
        env: PluginEnv,
        scope: str,
        names: tuple[bytes, bytes, bytes],
        rejected: Reply,
        failed: Reply,
    ) -> None:
        self.conf = conf
        self.registry = env.limits
        self.now = env.monotonic
        self.local = conf.policy == "local"
        self.show = conf.show_limit_quota_header
        self.degrade = conf.allow_degradation
        self.rejected = rejected
        self.failed = failed
        self.registry.connect(conf)
        if conf.rules is None:
            assert conf.count is not None
            assert conf.time_window is not None
            plain = key_reader(conf.key_type, conf.key)
            specs: list[tuple[RuleKey, int | str, int | str, tuple[bytes, bytes, bytes], str]]
            specs = [(plain, conf.count, conf.time_window, names, scope)]
        else:
            specs = [
                (
                    rule_key(rule.key),
                    rule.count,
                    rule.time_window,
                    _prefixed(rule.header_prefix or str(i)),
                    f"{scope}:rule:{i}",
                )
                for i, rule in enumerate(conf.rules, start=1)
            ]
        self.limits = [_Limit(*spec) for spec in specs]
        for limit, (_, count, window, _, _) in zip(self.limits, specs, strict=True):
            if not is_variable(count) and not is_variable(window):
                self._store(limit, int(count), int(window))  # made now: kept across reloads

    async def access(self, ctx: RequestContext) -> Reply | None:
        headers: list[tuple[bytes, bytes]] = []
        applied = False
        for limit in self.limits:
            key = limit.key(ctx)
            count, window = limit.count(ctx), limit.window(ctx)
            if key is None or count is None or window is None:
                continue  # APISIX does not run such a rule
            applied = True
            try:
                decision = await self._decide(limit, key, count, window)
            except RedisUnavailable as exc:
                log.error("limit-count: redis failed: %s", exc)
                return None if self.degrade else self.failed
            if self.show:
                headers += [
                    (limit.names[0], str(count).encode()),
                    (limit.names[1], str(decision.remaining).encode()),
                    (limit.names[2], str(decision.reset).encode()),
                ]
            if not decision.allowed:
                ctx.add_response_headers(headers)
                return self.rejected
        if not applied:
            log.info("limit-count: no rule applies (unresolved keys or amounts)")
            return None if self.degrade else NO_RULE
        if headers:
            ctx.add_response_headers(headers)
        return None

    def _store(self, limit: _Limit, count: int, window: int) -> Any:
        fixed = msgspec.structs.replace(self.conf, count=count, time_window=window, rules=None)
        limit.stores[(count, window)] = store = self.registry.store(limit.scope, fixed)
        return store

    async def _decide(self, limit: _Limit, key: str, count: int, window: int) -> Decision:
        store = limit.stores.get((count, window))
        if store is None:  # (a store with no counter left is falsy: not `or`)
            store = self._store(limit, count, window)
        if self.local:
            decision: Decision = store.incoming(key, 1, self.now())
            return decision
        return await store.incoming(key, 1)  # type: ignore[no-any-return]


def _prefixed(prefix: str) -> tuple[bytes, bytes, bytes]:
    base = f"x-{prefix.lower()}-ratelimit-"
    return ((base + "limit").encode(), (base + "remaining").encode(), (base + "reset").encode())
