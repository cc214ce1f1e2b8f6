"""public-api: the gateway's own APIs on a route of the config, as APISIX's plugin.

- The prometheus plugin's export (`plugin_attr.prometheus.export_uri`,
  `/apisix/prometheus/metrics`), which APISIX users serve this way with
  `enable_export_server: false`;
- `/apisix/status`, APISIX's node-status API: the connection and request counts of
  nginx's stub_status, as strings, and the node's id;
- `/apisix/plugin/jwe/encrypt?key=<kid>&payload=<text>`, jwe-decrypt's: a token of the
  payload under that consumer's key (400 without `key`, 404 for a key no consumer has);
- `POST /apisix/batch-requests`, batch-requests' (see `plugins.batch_requests`).

The API is the route's path, or `uri` when the route's path differs. Both add up every
worker's counts (as they last shared them). Priority 501, access phase: after the
authentication plugins, so a route can ask for a key first. Any other path, or a method
other than GET and HEAD (POST for batches), gets 404; a route with this plugin needs no
upstream.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, json_reply, status_reply
from gateway.metrics import CONTENT_TYPE, DEFAULT_EXPORT_URI, ServerStats
from gateway.pipeline import Plugin, PluginConf, PluginEnv
from gateway.plugins import batch_requests
from gateway.plugins.jwe_decrypt import jwe_keys

NOT_FOUND = status_reply(404)
READS = frozenset({b"GET", b"HEAD"})
STATUS_URI = b"/apisix/status"
JWE_ENCRYPT_URI = b"/apisix/plugin/jwe/encrypt"
BAD_REQUEST = status_reply(400)
TEXT = [(b"content-type", b"text/plain")]


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
        self.prefix = prometheus.metric_prefix if prometheus else "apisix_"
        self.uri = conf.uri.encode() if conf.uri is not None else None
        self.metrics = env.metrics
        # APISIX keeps a node id in a file of its installation; here it is derived from the
        # host name, so every worker (and every restart) of a host says the same.
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, env.hostname))
        self.jwe_keys = jwe_keys(env)
        batch = env.metadata.get("batch-requests")
        self.batch_max_body = (batch and batch.max_body_size) or batch_requests.DEFAULT_MAX_BODY
        self.batch_max_items = (
            batch and batch.max_pipeline_items
        ) or batch_requests.DEFAULT_MAX_ITEMS

    async def access(self, ctx: RequestContext) -> Reply | None:
        path = self.uri or ctx.path
        if path == batch_requests.URI and ctx.method == b"POST":
            return await batch_requests.run(ctx, self.batch_max_body, self.batch_max_items)
        if ctx.method not in READS:
            return NOT_FOUND
        if path == JWE_ENCRYPT_URI:
            return self._encrypt(ctx)
        totals = self.metrics.totals if self.metrics is not None else None
        if totals is None:
            return NOT_FOUND
        if path == self.export_uri:
            metrics, stats = totals()
            return Reply(200, [(b"content-type", CONTENT_TYPE)], metrics.render(self.prefix, stats))
        if path == STATUS_URI:
            return json_reply(200, {"status": node_status(totals()[1]), "id": self.node_id})
        return NOT_FOUND

    def _encrypt(self, ctx: RequestContext) -> Reply:
        args = ctx.args
        kid = args.get("key")
        if not kid:
            return BAD_REQUEST
        key = self.jwe_keys.get(kid)
        if key is None:
            return NOT_FOUND
        return Reply(200, TEXT, key.seal(args.get("payload", "").encode()).encode())


def node_status(stats: ServerStats) -> dict[str, str]:
    """nginx's stub_status figures as APISIX's node-status gives them (strings)."""
    return {
        "active": str(stats.active),
        "accepted": str(stats.accepted),
        "handled": str(stats.accepted),
        "total": str(stats.requests),
        "reading": "0",
        "writing": str(stats.active - stats.waiting),
        "waiting": str(stats.waiting),
    }
