"""forward-auth: an external service decides each request, as APISIX's plugin asks it.

The service gets the request's method and URI as `X-Forwarded-Method`, `-Uri`, `-Host`,
`-Proto` and `-For`, the client headers named in `request_headers`, `extra_headers`
(values with `$variables`) and, with `request_method: POST`, the request's body. A 2xx
answer lets the request on, with the service's headers named in `upstream_headers`
(**ours**: the client's own copies of those are removed first, so a client cannot pose as
what the service did not say) and, with `consumer_header`, as the consumer that header names
(its plugins then apply; no such header or consumer: 403). Any other answer is the
client's, status and body, with the service's `client_headers`. A service that cannot be
reached gives `status_on_error` (403), or lets the request on with `allow_degradation`.

Priority 2002, rewrite: after the other authentication plugins, before the consumer's
plugins merge. Connections to the service are kept for the next checks (`keepalive`,
at most `keepalive_pool` idle ones, each for `keepalive_timeout` ms).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import msgspec

from gateway.config.fields import HeaderName
from gateway.context import RequestContext
from gateway.fetch import MAX_BODY, FetchError, KeepAlive, wait_response
from gateway.http.replies import Header, Reply, status_reply
from gateway.pipeline import Plugin, PluginConf, PluginEnv
from gateway.template import Template, config_template

log = logging.getLogger("gateway")


class ForwardAuthConf(PluginConf, frozen=True, kw_only=True):
    uri: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+[^\s]*\Z")]
    ssl_verify: bool = True
    request_method: Literal["GET", "POST"] = "GET"
    request_headers: list[HeaderName] = []
    upstream_headers: list[HeaderName] = []
    client_headers: list[HeaderName] = []
    consumer_header: HeaderName | None = None
    extra_headers: dict[HeaderName, str] | None = None
    timeout: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 3000
    keepalive: bool = True
    keepalive_timeout: Annotated[int, msgspec.Meta(ge=1000)] = 60000
    keepalive_pool: Annotated[int, msgspec.Meta(ge=1)] = 5
    allow_degradation: bool = False
    status_on_error: Annotated[int, msgspec.Meta(ge=200, le=599)] = 403


def _names(names: list[str]) -> tuple[bytes, ...]:
    return tuple(name.lower().encode() for name in names)


class ForwardAuth(Plugin):
    name = "forward-auth"
    priority = 2002
    Conf = ForwardAuthConf

    def __init__(self, conf: ForwardAuthConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.uri = conf.uri
        self.method = conf.request_method
        self.keepalive = (
            KeepAlive(conf.keepalive_pool, conf.keepalive_timeout / 1000)
            if conf.keepalive
            else None
        )
        self.verify = conf.ssl_verify
        self.timeout = conf.timeout / 1000
        self.request_headers = _names(conf.request_headers)
        self.upstream_headers = _names(conf.upstream_headers)
        self.client_headers = _names(conf.client_headers)
        self.consumer_header = (
            conf.consumer_header.lower().encode() if conf.consumer_header else None
        )
        self.extra: list[tuple[str, Template]] = [
            (name, config_template(value)) for name, value in (conf.extra_headers or {}).items()
        ]
        self.degrade = conf.allow_degradation
        self.on_error = status_reply(conf.status_on_error)
        self.no_consumer = status_reply(403)
        self.too_large = status_reply(413)
        self.consumers = env.consumers

    def _ask_headers(self, ctx: RequestContext) -> list[tuple[str, str]]:
        headers = [
            ("x-forwarded-proto", ctx.scheme),
            ("x-forwarded-method", ctx.method.decode("latin-1")),
            ("x-forwarded-host", ctx.host.decode("latin-1")),
            ("x-forwarded-uri", ctx.request_target.decode("latin-1")),
            ("x-forwarded-for", ctx.remote_addr),
        ]
        for name in self.request_headers:
            value = ctx.header(name)
            if value is not None:
                headers.append((name.decode(), value.decode("latin-1")))
        headers += [(name, value.render(ctx)) for name, value in self.extra]
        return headers

    async def rewrite(self, ctx: RequestContext) -> Reply | None:
        body = b""
        if self.method == "POST":
            if ctx.body is None:
                ctx.body = await ctx.request_body.read_whole(MAX_BODY)
                if ctx.body is None:
                    return self.too_large
            body = ctx.body
        try:
            answer = await wait_response(
                self.method,
                self.uri,
                self._ask_headers(ctx),
                body,
                verify_tls=self.verify,
                within_s=self.timeout,
                keepalive=self.keepalive,
            )
        except FetchError as exc:
            log.warning("forward-auth: the service failed: %s", exc)
            return None if self.degrade else self.on_error
        if answer.status >= 300:
            headers: list[Header] = [(n, v) for n, v in answer.headers if n in self.client_headers]
            return Reply(answer.status, headers, answer.body)
        if self.upstream_headers:
            kept = [h for h in ctx.headers if h[0] not in self.upstream_headers]
            kept += [(n, v) for n, v in answer.headers if n in self.upstream_headers]
            ctx.headers[:] = kept
        if self.consumer_header is not None:
            username = next((v for n, v in answer.headers if n == self.consumer_header), None)
            consumer = (
                self.consumers.by_name.get(username.decode("latin-1"))
                if username is not None
                else None
            )
            if consumer is None:
                return self.no_consumer
            ctx.consumer = consumer
            ctx.credential = None
        return None
