"""client-control: a route's own bound on request bodies, as APISIX's plugin sets nginx's
`client_max_body_size` per request.

A body declared larger (Content-Length) is answered 413 before it is read; a chunked one is
refused once its chunks pass the bound (the connection is then closed, the upstream's too).
`max_body_size: 0` means no bound, as in nginx. Priority 22000, rewrite: before
authentication, so a too-large body is refused before anything reads it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, status_reply
from gateway.pipeline import Plugin, PluginConf, PluginEnv


class ClientControlConf(PluginConf, frozen=True, kw_only=True):
    max_body_size: Annotated[int, msgspec.Meta(ge=0)] | None = None


class ClientControl(Plugin):
    name = "client-control"
    priority = 22000
    Conf = ClientControlConf

    def __init__(self, conf: ClientControlConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.limit = conf.max_body_size or None  # 0: no bound
        self.refused = status_reply(413)

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        body = ctx.request_body
        if self.limit is None or body is None:
            return None
        if body.length is not None and body.length > self.limit:
            return self.refused
        body.limit = self.limit
        return None
