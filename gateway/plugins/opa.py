"""opa: an Open Policy Agent decides each request, as APISIX's plugin asks it.

`POST <host>/v1/data/<policy>` with `{"input": {"type": "http", "request": {scheme, method,
host, port, path, headers, query}, "var": {server_port, remote_addr, remote_port,
timestamp}}}`, plus with `with_route` the route (`id`, `name`, `service_id`), with
`with_service` the service (`id`, `name`) and with `with_consumer` the consumer
(**ours**: `username`, `labels` and `group_id` only, never its credentials). The decision's
`result.allow` lets the request on, with the `result.headers` named in
`send_headers_upstream`; otherwise the answer is `result.status_code` (403) with
`result.reason` as its body and `result.headers`. No decision (OPA unreachable within
`timeout` ms): 403; one without `result`: 503. Priority 2001, access.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import msgspec

from gateway.config.fields import HeaderName
from gateway.context import RequestContext
from gateway.fetch import FetchError, KeepAlive, wait_response
from gateway.http.replies import JSON_CONTENT_TYPE, Header, Reply, status_reply
from gateway.pipeline import Plugin, PluginConf, PluginEnv

log = logging.getLogger("gateway")


class OpaConf(PluginConf, frozen=True, kw_only=True):
    host: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+\Z")]
    policy: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_./-]+\Z")]
    ssl_verify: bool = True
    timeout: Annotated[int, msgspec.Meta(ge=1, le=60000)] = 3000
    keepalive: bool = True
    keepalive_timeout: Annotated[int, msgspec.Meta(ge=1000)] = 60000
    keepalive_pool: Annotated[int, msgspec.Meta(ge=1)] = 5
    send_headers_upstream: Annotated[list[HeaderName], msgspec.Meta(min_length=1)] | None = None
    with_route: bool = False
    with_service: bool = False
    with_consumer: bool = False


def _headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


class Opa(Plugin):
    name = "opa"
    priority = 2001
    Conf = OpaConf

    def __init__(self, conf: OpaConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.url = f"{conf.host}/v1/data/{conf.policy}"
        self.keepalive = (
            KeepAlive(conf.keepalive_pool, conf.keepalive_timeout / 1000)
            if conf.keepalive
            else None
        )
        self.verify = conf.ssl_verify
        self.timeout = conf.timeout / 1000
        self.upstream_headers = {
            name.lower(): name.lower().encode() for name in conf.send_headers_upstream or ()
        }
        self.conf = conf
        self.now = env.now
        self.no_decision = status_reply(403)
        self.bad_decision = status_reply(503)

    def _input(self, ctx: RequestContext) -> dict[str, Any]:
        conf = self.conf
        data: dict[str, Any] = {
            "type": "http",
            "request": {
                "scheme": ctx.scheme,
                "method": ctx.method.decode("latin-1"),
                "host": ctx.host.decode("latin-1"),
                "port": ctx.server_port,
                "path": ctx.path.decode("latin-1"),
                "headers": _headers(ctx.headers),
                "query": ctx.args,
            },
            "var": {
                "server_port": ctx.server_port,
                "remote_addr": ctx.remote_addr,
                "remote_port": ctx.remote_port,
                "timestamp": int(self.now()),
            },
        }
        route = ctx.route
        if conf.with_route and route is not None:
            data["route"] = {"id": route.id, "name": route.name, "service_id": route.service_id}
        if conf.with_service and route is not None and route.service_id is not None:
            data["service"] = {"id": route.service_id, "name": route.service_name}
        consumer = ctx.consumer
        if conf.with_consumer and consumer is not None:
            data["consumer"] = {
                "username": consumer.username,
                "labels": {k: v.decode() for k, v in consumer.label_bytes.items()},
                "group_id": consumer.group_id,
            }
        return {"input": data}

    async def access(self, ctx: RequestContext) -> Reply | None:
        try:
            answer = await wait_response(
                "POST",
                self.url,
                [("content-type", "application/json")],
                json.dumps(self._input(ctx)).encode(),
                verify_tls=self.verify,
                within_s=self.timeout,
                keepalive=self.keepalive,
            )
        except FetchError as exc:
            log.error("opa: no decision: %s", exc)
            return self.no_decision
        try:
            result = json.loads(answer.body)["result"]
            allow = bool(result.get("allow")) if isinstance(result, dict) else bool(result)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.error("opa: a decision without `result` (status %d)", answer.status)
            return self.bad_decision
        decided = result.get("headers") if isinstance(result, dict) else None
        headers = decided if isinstance(decided, dict) else {}
        if allow:
            for name, value in headers.items():
                wanted = self.upstream_headers.get(str(name).lower())
                if wanted is not None:
                    ctx.remove_header(wanted)
                    ctx.headers.append((wanted, str(value).encode("latin-1", "replace")))
            return None
        status = result.get("status_code", 403) if isinstance(result, dict) else 403
        reason = result.get("reason") if isinstance(result, dict) else None
        pairs: list[Header] = [
            (str(n).lower().encode("latin-1", "replace"), str(v).encode("latin-1", "replace"))
            for n, v in headers.items()
        ]
        body = b""
        if isinstance(reason, str):
            body = reason.encode()
            pairs.insert(0, (b"content-type", b"text/plain"))
        elif reason is not None:
            body = json.dumps(reason).encode()
            pairs.insert(0, JSON_CONTENT_TYPE)
        if not isinstance(status, int) or not 200 <= status <= 599:
            status = 403
        return Reply(status, pairs, body)
