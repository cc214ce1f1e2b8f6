"""api-breaker: stop sending a URI to an upstream that keeps failing, as APISIX's plugin.

Per host and URI, the upstream's answers are counted in the log phase: `unhealthy.failures`
answers with an `unhealthy.http_statuses` status open the breaker, which then answers
`break_response_code` (with `break_response_body` and `break_response_headers`) for
2 ** (failures so far / `failures`, rounded up) seconds, at most `max_breaker_sec`,
counted from when it last opened. A request let through after that is a trial: another
`failures` failures open it anew, for longer; `healthy.successes` answers with a
`healthy.http_statuses` status close it and clear the counts. Priority 1005: access, log.

The counts are per process and per conf (a reload starts them over), for at most
`MAX_KEYS` host and URI pairs (the oldest are forgotten first), so that a client cannot
grow them without bound.
"""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

from gateway.config.fields import HEADER_TEXT, TOKEN
from gateway.context import RequestContext
from gateway.http.replies import Reply, status_reply
from gateway.pipeline import Conf, Plugin, PluginConf, PluginEnv
from gateway.template import header_templates, render_headers

MAX_KEYS = 100_000

_Status5xx = Annotated[int, msgspec.Meta(ge=500, le=599)]
_StatusOk = Annotated[int, msgspec.Meta(ge=200, le=499)]


class Unhealthy(Conf, frozen=True, kw_only=True):
    http_statuses: Annotated[list[_Status5xx], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [500]
    )
    failures: Annotated[int, msgspec.Meta(ge=1)] = 3


class Healthy(Conf, frozen=True, kw_only=True):
    http_statuses: Annotated[list[_StatusOk], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: [200]
    )
    successes: Annotated[int, msgspec.Meta(ge=1)] = 3


class BreakHeader(Conf, frozen=True, kw_only=True):
    key: Annotated[str, msgspec.Meta(pattern=TOKEN)]
    value: Annotated[str, msgspec.Meta(min_length=1, pattern=HEADER_TEXT.pattern)]


class ApiBreakerConf(PluginConf, frozen=True, kw_only=True):
    break_response_code: Annotated[int, msgspec.Meta(ge=200, le=599)]
    break_response_body: str | None = None
    break_response_headers: list[BreakHeader] | None = None
    max_breaker_sec: Annotated[int, msgspec.Meta(ge=3)] = 300
    unhealthy: Unhealthy = msgspec.field(default_factory=Unhealthy)
    healthy: Healthy = msgspec.field(default_factory=Healthy)


class _State:
    __slots__ = ("healthy", "opened", "unhealthy")

    def __init__(self) -> None:
        self.unhealthy = 0
        self.healthy = 0
        self.opened: float | None = None  # when the breaker last opened


class ApiBreaker(Plugin):
    name = "api-breaker"
    priority = 1005
    Conf = ApiBreakerConf

    def __init__(self, conf: ApiBreakerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.now = env.monotonic
        self.failures = conf.unhealthy.failures
        self.unhealthy_statuses = frozenset(conf.unhealthy.http_statuses)
        self.successes = conf.healthy.successes
        self.healthy_statuses = frozenset(conf.healthy.http_statuses)
        self.max_seconds = conf.max_breaker_sec
        self.code = conf.break_response_code
        self.body = conf.break_response_body
        self.headers = header_templates((h.key, h.value) for h in conf.break_response_headers or ())
        self.states: dict[bytes, _State] = {}

    def access(self, ctx: RequestContext) -> Reply | None:
        state = self.states.get(ctx.host + b"\0" + ctx.path)
        if state is None or state.opened is None:
            return None
        seconds = min(2 ** max(1, math.ceil(state.unhealthy / self.failures)), self.max_seconds)
        if self.now() > state.opened + seconds:
            return None
        if self.body is None:
            return status_reply(self.code)
        return Reply(self.code, render_headers(self.headers, ctx), self.body.encode())

    def log(self, ctx: RequestContext) -> None:
        if not ctx.upstream_addr:  # no upstream answered (the breaker, another plugin)
            return
        status = ctx.status
        key = ctx.host + b"\0" + ctx.path
        if status in self.unhealthy_statuses:
            state = self.states.get(key)
            if state is None:
                if len(self.states) >= MAX_KEYS:
                    del self.states[next(iter(self.states))]
                state = self.states[key] = _State()
            state.unhealthy += 1
            if state.unhealthy % self.failures == 0:
                state.opened = self.now()
            return
        if status in self.healthy_statuses:
            state = self.states.get(key)
            if state is None:
                return
            state.healthy += 1
            if state.healthy >= self.successes:
                del self.states[key]
