"""consumer-restriction: allow or deny by consumer name, consumer group, route or service.

Matches APISIX: no value for `type` (no consumer, no group, no service) -> 401; blacklisted,
or a whitelist that does not hold the value -> reject; otherwise, for a value not
whitelisted, an `allowed_by_methods` entry whose methods exclude the request's -> reject.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import msgspec

from gateway.context import RequestContext
from gateway.http.methods import HttpMethod
from gateway.http.replies import Reply, message
from gateway.pipeline import Conf, Plugin, PluginConf, PluginEnv

RestrictionType = Literal["consumer_name", "consumer_group_id", "route_id", "service_id"]
Names = Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]


class AllowedByMethods(Conf, frozen=True, kw_only=True):
    user: Annotated[str, msgspec.Meta(min_length=1)]
    methods: Annotated[list[HttpMethod], msgspec.Meta(min_length=1)]


class ConsumerRestrictionConf(PluginConf, frozen=True, kw_only=True):
    type: RestrictionType = "consumer_name"
    whitelist: Names | None = None
    blacklist: Names | None = None
    allowed_by_methods: list[AllowedByMethods] | None = None
    rejected_code: Annotated[int, msgspec.Meta(ge=200, le=599)] = 403
    rejected_msg: str | None = None

    def __post_init__(self) -> None:
        if self.whitelist is None and self.blacklist is None and self.allowed_by_methods is None:
            raise ValueError("needs `whitelist`, `blacklist` or `allowed_by_methods`")


def _value_getter(kind: str) -> Callable[[RequestContext], str | None]:
    if kind == "consumer_name":
        return lambda ctx: ctx.consumer.username if ctx.consumer is not None else None
    if kind == "consumer_group_id":
        return lambda ctx: ctx.consumer.group_id if ctx.consumer is not None else None
    if kind == "route_id":
        return lambda ctx: ctx.route.id if ctx.route is not None else None
    return lambda ctx: ctx.route.service_id if ctx.route is not None else None


class ConsumerRestriction(Plugin):
    name = "consumer-restriction"
    priority = 2400
    Conf = ConsumerRestrictionConf

    def __init__(self, conf: ConsumerRestrictionConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.value = _value_getter(conf.type)
        self.whitelist = frozenset(conf.whitelist) if conf.whitelist is not None else None
        self.blacklist = frozenset(conf.blacklist or ())
        self.methods: dict[str, frozenset[bytes]] = {}
        for entry in conf.allowed_by_methods or ():
            allowed = self.methods.get(entry.user, frozenset())
            self.methods[entry.user] = allowed | {m.encode() for m in entry.methods}
        self.no_value = message(
            401, f"The request is rejected, please check the {conf.type} for this request"
        )
        self.rejected = message(
            conf.rejected_code,
            conf.rejected_msg
            if conf.rejected_msg is not None
            else f"The {conf.type} is forbidden.",
        )

    def access(self, ctx: RequestContext) -> Reply | None:
        value = self.value(ctx)
        if not value:
            return self.no_value
        if value in self.blacklist:
            return self.rejected
        if self.whitelist is not None:
            if value not in self.whitelist:
                return self.rejected
            return None
        methods = self.methods.get(value)
        if methods is not None and ctx.method not in methods:
            return self.rejected
        return None
