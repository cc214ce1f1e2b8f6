"""referer-restriction: allow or deny by the Referer's host, as APISIX's plugin does.

Exactly one of `whitelist` and `blacklist`, hosts or `*.`-wildcards (`*.cdn.example` is
any host under it, not `cdn.example` itself), compared without case. A request without a
Referer is refused unless `bypass_missing`. A refusal is 403 `{"message": message}`.
Priority 2990, access.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.pipeline import Plugin, PluginConf, PluginEnv

HostPattern = Annotated[str, msgspec.Meta(pattern=r"^\*?[0-9a-zA-Z\-._\[\]:]+\Z")]
Hosts = Annotated[list[HostPattern], msgspec.Meta(min_length=1)]


class RefererRestrictionConf(PluginConf, frozen=True, kw_only=True):
    whitelist: Hosts | None = None
    blacklist: Hosts | None = None
    bypass_missing: bool = False
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] = (
        "Your referer host is not allowed"
    )

    def __post_init__(self) -> None:
        if (self.whitelist is None) == (self.blacklist is None):
            raise ValueError("takes exactly one of `whitelist` and `blacklist`")


def _host(referer: bytes) -> str:
    """The Referer's host (lower-case, no port), or the whole value when it has none."""
    text = referer.decode("latin-1")
    try:
        host = urlsplit(text).hostname
    except ValueError:
        host = None
    return host if host else text.lower()


class RefererRestriction(Plugin):
    name = "referer-restriction"
    priority = 2990
    Conf = RefererRestrictionConf

    def __init__(self, conf: RefererRestrictionConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        hosts = conf.whitelist or conf.blacklist or ()
        self.allow = conf.whitelist is not None
        self.exact = frozenset(h.lower() for h in hosts if not h.startswith("*"))
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*"))
        self.bypass_missing = conf.bypass_missing
        self.refused = message(403, conf.message)

    def _listed(self, host: str) -> bool:
        if host in self.exact:
            return True
        return any(host.endswith(s) and len(host) > len(s) for s in self.suffixes)

    def access(self, ctx: RequestContext) -> Reply | None:
        referer = ctx.header(b"referer")
        if referer is None:
            return None if self.bypass_missing else self.refused
        return None if self._listed(_host(referer)) is self.allow else self.refused
