"""public-api: the gateway's own APIs on a route of the config, as APISIX's plugin.

The one API here is the prometheus plugin's export (`plugin_attr.prometheus.export_uri`,
`/apisix/prometheus/metrics`), which APISIX users serve this way with
`enable_export_server: false`. The API is the route's path, or `uri` when the route's path
differs. Priority 501, access phase: after the authentication plugins, so a route can
ask for a key before it shows the metrics. Any other path gets 404; a route with this
plugin needs no upstream.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, status_reply
from gateway.metrics import CONTENT_TYPE, DEFAULT_EXPORT_URI
from gateway.pipeline import Plugin, PluginConf, PluginEnv

NOT_FOUND = status_reply(404)
READS = frozenset({b"GET", b"HEAD"})


class PublicApiConf(PluginConf, frozen=True, kw_only=True):
    uri: Annotated[str, msgspec.Meta(pattern=r"^/[!-~]*\Z")] | None = None


class PublicApi(Plugin):
    name = "public-api"
    priority = 501
    Conf = PublicApiConf

    def __init__(self, conf: PublicApiConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        prometheus = getattr(env.attrs, "prometheus", None)
        self.export_uri = (prometheus.export_uri if prometheus else DEFAULT_EXPORT_URI).encode()
        self.uri = conf.uri.encode() if conf.uri is not None else None
        self.metrics = env.metrics

    def access(self, ctx: RequestContext) -> Reply | None:
        path = self.uri or ctx.path
        exported = self.metrics.exported if self.metrics is not None else None
        if path != self.export_uri or exported is None or ctx.method not in READS:
            return NOT_FOUND
        return Reply(200, [(b"content-type", CONTENT_TYPE)], exported())
