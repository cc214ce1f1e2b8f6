"""traffic-split: send some requests to other upstreams, as APISIX's plugin does.

`rules` are tried in order; the first whose `match` holds (any of its entries' `vars`; a
rule without `match` always holds) picks one of its `weighted_upstreams` by smooth
weighted round robin: an inline `upstream`, a configured one by `upstream_id`, or, for an
entry with neither, the route's own. A weight of 0 is never picked. A request no rule
matches goes to the route's upstream. It runs in the access phase at priority 966, so a
consumer's own traffic-split (merged over the route's) decides for that consumer alone.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from gateway.config.fields import Id
from gateway.config.upstream import Upstream
from gateway.context import RequestContext
from gateway.expr import Check, compile_any, compile_vars
from gateway.pipeline import Conf, Plugin, PluginConf, PluginEnv


class SplitMatch(Conf, frozen=True, kw_only=True):
    vars: list[Any] | None = None

    def __post_init__(self) -> None:
        if self.vars is not None:
            compile_vars(self.vars)


class WeightedUpstream(Conf, frozen=True, kw_only=True):
    upstream_id: Id | None = None
    upstream: Upstream | None = None
    weight: Annotated[int, msgspec.Meta(ge=0)] = 1

    def __post_init__(self) -> None:
        if self.upstream_id is not None and self.upstream is not None:
            raise ValueError("takes `upstream` or `upstream_id`, not both")


def _route_default() -> list[WeightedUpstream]:
    return [WeightedUpstream()]


class SplitRule(Conf, frozen=True, kw_only=True):
    match: list[SplitMatch] | None = None
    weighted_upstreams: Annotated[
        list[WeightedUpstream], msgspec.Meta(min_length=1, max_length=20)
    ] = msgspec.field(default_factory=_route_default)


class TrafficSplitConf(PluginConf, frozen=True, kw_only=True):
    rules: list[SplitRule] = []


class WeightedChoice:
    """nginx's smooth weighted round robin over a few targets: each pick raises every
    target's current weight by its weight and takes the highest, which then gives back the
    total. Over any run of `total` picks each target is taken exactly `weight` times."""

    __slots__ = ("current", "targets", "total", "weights")

    def __init__(self, targets: list[Any], weights: list[int]) -> None:
        self.targets = targets
        self.weights = weights
        self.current = [0] * len(targets)
        self.total = sum(weights)

    def pick(self) -> Any:
        current = self.current
        best = 0
        for i, weight in enumerate(self.weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        return self.targets[best]


def _always(ctx: RequestContext) -> bool:
    return True


def _any_of(matches: list[SplitMatch] | None) -> Check:
    """Any of the entries (one without `vars` always holds); no entries: always."""
    if not matches or any(m.vars is None for m in matches):
        return _always
    return compile_any([m.vars for m in matches])


class TrafficSplit(Plugin):
    name = "traffic-split"
    priority = 966
    Conf = TrafficSplitConf

    def __init__(self, conf: TrafficSplitConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        catalog = env.upstreams
        rules: list[tuple[Check, WeightedChoice | None]] = []
        for r, rule in enumerate(conf.rules):
            targets: list[Any] = []  # a compiled upstream, or None for the route's
            weights: list[int] = []
            for k, entry in enumerate(rule.weighted_upstreams):
                if entry.weight == 0:
                    continue
                if entry.upstream is not None:
                    label = f"{env.scope}:traffic-split:{r}:{k}"
                    targets.append(catalog.inline(entry.upstream, label))
                elif entry.upstream_id is not None:
                    targets.append(catalog.named(entry.upstream_id))
                else:
                    targets.append(None)
                weights.append(entry.weight)
            choice = WeightedChoice(targets, weights) if targets else None
            check = _any_of(rule.match)
            rules.append((check, choice))
        self.rules = tuple(rules)

    def access(self, ctx: RequestContext) -> None:
        for check, choice in self.rules:
            if check(ctx):
                ctx.upstream = choice.pick() if choice is not None else None
                return
