"""uri-blocker: refuse requests whose URI matches a rule, as APISIX's plugin does.

`block_rules` are regular expressions searched in the URI as the client sent it, query
included (`$request_uri`), all of them as one alternation; `case_insensitive` ignores case.
A match is answered `rejected_code` (403) with `{"error_msg": rejected_msg}` when given.
Priority 2900, rewrite: before authentication.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, error_msg, status_reply
from gateway.patterns import IGNORECASE, any_of
from gateway.pipeline import Plugin, PluginConf, PluginEnv


class UriBlockerConf(PluginConf, frozen=True, kw_only=True):
    block_rules: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)
    ]
    rejected_code: Annotated[int, msgspec.Meta(ge=200, le=599)] = 403
    rejected_msg: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    case_insensitive: bool = False

    def __post_init__(self) -> None:
        any_of(self.block_rules, "block_rules entry")


class UriBlocker(Plugin):
    name = "uri-blocker"
    priority = 2900
    Conf = UriBlockerConf

    def __init__(self, conf: UriBlockerConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        flags = IGNORECASE if conf.case_insensitive else 0
        self.rules = any_of(conf.block_rules, "block_rules entry", flags)
        self.refused = (
            error_msg(conf.rejected_code, conf.rejected_msg)
            if conf.rejected_msg is not None
            else status_reply(conf.rejected_code)
        )

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        if self.rules.search(ctx.request_target.decode("latin-1")) is None:
            return None
        return self.refused
