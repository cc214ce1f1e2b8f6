"""workflow: the first rule whose `case` holds runs its action, as APISIX's plugin does.

`case` is a list of rules as a route's `vars` (lua-resty-expr; a rule without one always
holds). An action is `["return", {"code": 403}]` (`{"error_msg":"rejected by workflow"}`
with that status), `["limit-count", conf]` or `["limit-conn", conf]` (those plugins' confs,
each rule's counts its own). APISIX runs only a rule's first action: a rule with more is
refused rather than half run. Priority 1006, access phase.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec

from gateway.context import RequestContext
from gateway.expr import compile_vars
from gateway.http.replies import Reply, error_msg
from gateway.pipeline import Conf, Plugin, PluginConf, PluginEnv
from gateway.plugins.limit_conn import LimitConn, LimitConnConf
from gateway.plugins.limit_count import LimitCount, LimitCountConf

Action = Callable[[RequestContext], "Reply | Awaitable[Reply | None] | None"]


class ReturnConf(Conf, frozen=True, kw_only=True):
    code: Annotated[int, msgspec.Meta(ge=100, le=599)]


ACTIONS: dict[str, type[Conf]] = {
    "return": ReturnConf,
    "limit-count": LimitCountConf,
    "limit-conn": LimitConnConf,
}


class WorkflowRule(Conf, frozen=True, kw_only=True):
    case: Annotated[list[Any], msgspec.Meta(min_length=1)] | None = None
    actions: Annotated[list[list[Any]], msgspec.Meta(min_length=1, max_length=1)]

    def __post_init__(self) -> None:
        if self.case is not None:
            compile_vars(self.case)
        self.action()

    def action(self) -> tuple[str, Any]:
        """The action's name and its conf, checked (ValueError naming what is wrong)."""
        action = self.actions[0]
        if len(action) != 2 or not isinstance(action[0], str):
            raise ValueError("an action is [name, conf]")
        name, conf = action
        kind = ACTIONS.get(name)
        if kind is None:
            raise ValueError(f"unsupported action {name!r} (return, limit-count, limit-conn)")
        try:
            return name, msgspec.convert(conf, kind)
        except msgspec.ValidationError as exc:
            raise ValueError(f"the {name!r} action: {exc}") from None


class WorkflowConf(PluginConf, frozen=True, kw_only=True):
    rules: Annotated[list[WorkflowRule], msgspec.Meta(min_length=1)]


class Workflow(Plugin):
    name = "workflow"
    priority = 1006
    Conf = WorkflowConf

    def __init__(self, conf: WorkflowConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.rules: list[tuple[Callable[[RequestContext], bool] | None, Action]] = []
        conns: list[LimitConn] = []
        waits = False
        for index, rule in enumerate(conf.rules):
            matches = compile_vars(rule.case) if rule.case is not None else None
            name, action_conf = rule.action()
            # Each rule's counters are its own (APISIX marks each action's conf with it).
            scoped = env.for_scope(f"{env.scope}:workflow:{index}")
            action: Action
            if name == "return":
                action = _returning(error_msg(action_conf.code, "rejected by workflow"))
            elif name == "limit-count":
                action = LimitCount(action_conf, scoped).access
            else:
                conn = LimitConn(action_conf, scoped)
                conns.append(conn)
                action = conn.access
            waits = waits or inspect.iscoroutinefunction(action)
            self.rules.append((matches, action))
        self.conns = conns
        if waits:
            self.access = self._access_waiting  # type: ignore[method-assign,assignment]
        if conns:
            self.log = self._give_back

    def _pick(self, ctx: RequestContext) -> Action | None:
        for matches, action in self.rules:
            if matches is None or matches(ctx):
                return action
        return None

    def access(self, ctx: RequestContext) -> Reply | None:
        action = self._pick(ctx)
        return action(ctx) if action is not None else None  # type: ignore[return-value]

    async def _access_waiting(self, ctx: RequestContext) -> Reply | None:
        action = self._pick(ctx)
        if action is None:
            return None
        result = action(ctx)
        return await result if inspect.isawaitable(result) else result

    def _give_back(self, ctx: RequestContext) -> None:
        """limit-conn's places taken by this request (each conn gives back only its own)."""
        for conn in self.conns:
            conn.log(ctx)


def _returning(reply: Reply) -> Action:
    return lambda ctx: reply
