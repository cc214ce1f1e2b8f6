"""ip-restriction: allow or deny by the client's address, as APISIX's plugin does.

Exactly one of `whitelist` and `blacklist`, each a list of addresses and CIDR networks
(IPv4 and IPv6). It runs in the access phase at priority 3000: after authentication,
before consumer-restriction and limit-count, so a refused request spends no quota. The
address is APISIX's `remote_addr`: the peer's, or the one real-ip took from a trusted proxy.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from gateway.addresses import NetworkSet
from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.pipeline import Plugin, PluginConf, PluginEnv

Addresses = Annotated[list[str], msgspec.Meta(min_length=1)]


class IpRestrictionConf(PluginConf, frozen=True, kw_only=True):
    whitelist: Addresses | None = None
    blacklist: Addresses | None = None
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] = (
        "Your IP address is not allowed"
    )
    response_code: Literal[403, 404] = 403

    def __post_init__(self) -> None:
        if (self.whitelist is None) == (self.blacklist is None):
            raise ValueError("takes exactly one of `whitelist` and `blacklist`")
        for entry in self.whitelist or self.blacklist or ():
            try:
                NetworkSet([entry])
            except ValueError:
                raise ValueError(f"invalid ip address: {entry}") from None


class IpRestriction(Plugin):
    name = "ip-restriction"
    priority = 3000
    Conf = IpRestrictionConf

    def __init__(self, conf: IpRestrictionConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.allow = conf.whitelist is not None
        self.networks = NetworkSet(conf.whitelist or conf.blacklist or ())
        self.refused = message(conf.response_code, conf.message)

    def access(self, ctx: RequestContext) -> Reply | None:
        if (ctx.remote_addr in self.networks) is self.allow:
            return None
        return self.refused
