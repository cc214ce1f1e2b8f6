"""ua-restriction: allow or deny by User-Agent, as APISIX's plugin does.

Exactly one of `allowlist` and `denylist`, regular expressions searched in each
User-Agent header. A request without one is refused unless `bypass_missing`. A refusal is
403 `{"message": message}`. Priority 2999, access.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.patterns import any_of
from gateway.pipeline import Plugin, PluginConf, PluginEnv

Patterns = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]


class UaRestrictionConf(PluginConf, frozen=True, kw_only=True):
    allowlist: Patterns | None = None
    denylist: Patterns | None = None
    bypass_missing: bool = False
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] = "Not allowed"

    def __post_init__(self) -> None:
        if (self.allowlist is None) == (self.denylist is None):
            raise ValueError("takes exactly one of `allowlist` and `denylist`")
        any_of(self.allowlist or self.denylist or (), "pattern")


class UaRestriction(Plugin):
    name = "ua-restriction"
    priority = 2999
    Conf = UaRestrictionConf

    def __init__(self, conf: UaRestrictionConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.allow = conf.allowlist is not None
        self.rules = any_of(conf.allowlist or conf.denylist or (), "pattern")
        self.bypass_missing = conf.bypass_missing
        self.refused = message(403, conf.message)

    def access(self, ctx: RequestContext) -> Reply | None:
        agents = [value for name, value in ctx.headers if name == b"user-agent"]
        if not agents:
            return None if self.bypass_missing else self.refused
        matched = any(self.rules.search(ua.decode("latin-1")) for ua in agents)
        return None if matched is self.allow else self.refused
