"""fault-injection: abort or delay some requests, as APISIX's plugin does, to see how
clients bear an upstream's faults.

`delay` waits `duration` seconds, then the request goes on; `abort` answers `http_status`
with `body` and `headers` (both may hold `$variables`), or the gateway's plain error for
that status without a body. Each applies to the requests its `vars` hold for (any of a list
of expressions, each as a route's `vars`) and to `percentage` of them (all, without one).
A delay runs before an abort. Priority 11000, rewrite: before authentication.
"""

from __future__ import annotations

import random
from typing import Annotated, Any

import msgspec

from gateway.config.fields import TOKEN
from gateway.context import RequestContext
from gateway.expr import Check, compile_any
from gateway.http.replies import Reply, status_reply
from gateway.pipeline import Conf, Plugin, PluginConf, PluginEnv
from gateway.template import Template, config_template, header_templates, render_headers

Percentage = Annotated[int, msgspec.Meta(ge=0, le=100)]
Vars = Annotated[list[list[Any]], msgspec.Meta(max_length=20)]
HeaderName = Annotated[str, msgspec.Meta(pattern=TOKEN)]


def _check_vars(vars: list[list[Any]] | None) -> None:
    if vars is not None:
        compile_any(vars)


class Abort(Conf, frozen=True, kw_only=True):
    http_status: Annotated[int, msgspec.Meta(ge=200, le=599)]
    body: str | None = None
    headers: Annotated[dict[HeaderName, str | int | float], msgspec.Meta(min_length=1)] | None = (
        None
    )
    percentage: Percentage | None = None
    vars: Vars | None = None

    def __post_init__(self) -> None:
        _check_vars(self.vars)


class Delay(Conf, frozen=True, kw_only=True):
    duration: Annotated[float, msgspec.Meta(ge=0)]
    percentage: Percentage | None = None
    vars: Vars | None = None

    def __post_init__(self) -> None:
        _check_vars(self.vars)


class FaultInjectionConf(PluginConf, frozen=True, kw_only=True):
    abort: Abort | None = None
    delay: Delay | None = None

    def __post_init__(self) -> None:
        if self.abort is None and self.delay is None:
            raise ValueError("takes `abort`, `delay` or both")


def _when(vars: list[list[Any]] | None) -> Check | None:
    """Any of the expressions (none of an empty list, as APISIX's loop); None: every
    request."""
    return compile_any(vars) if vars is not None else None


def _hit(percentage: int | None) -> bool:
    return percentage is None or random.randint(1, 100) <= percentage


class FaultInjection(Plugin):
    name = "fault-injection"
    priority = 11000
    Conf = FaultInjectionConf

    def __init__(self, conf: FaultInjectionConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.sleep = env.limits.sleep
        self.delay = conf.delay
        self.delay_when = _when(conf.delay.vars) if conf.delay is not None else None
        self.abort = conf.abort
        self.abort_when = _when(conf.abort.vars) if conf.abort is not None else None
        abort = conf.abort
        self.body: Template | None = None
        self.headers: list[tuple[bytes, Template]] = []
        if abort is not None:
            if abort.body is not None:
                self.body = config_template(abort.body)
            self.headers = header_templates((abort.headers or {}).items())

    async def rewrite(self, ctx: RequestContext) -> Reply | None:
        # Both conditions are read before the delay, as APISIX reads them.
        abort, delay = self.abort, self.delay
        aborts = abort is not None and (self.abort_when is None or self.abort_when(ctx))
        delays = delay is not None and (self.delay_when is None or self.delay_when(ctx))
        if delay is not None and delays and _hit(delay.percentage):
            await self.sleep(delay.duration)
        if abort is None or not aborts or not _hit(abort.percentage):
            return None
        return self._answer(ctx, abort.http_status)

    def _answer(self, ctx: RequestContext, status: int) -> Reply:
        headers = render_headers(self.headers, ctx)
        if self.body is None:
            plain = status_reply(status)
            return Reply(status, [*plain.headers, *headers], plain.body)
        body = self.body.render(ctx).encode("latin-1")
        return Reply(status, [(b"content-type", b"text/plain"), *headers], body)
