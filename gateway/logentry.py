"""One request's log entry as APISIX's loggers (http-logger, file-logger) write it.

The default entry is APISIX's full log: `request` (url, uri, method, headers, querystring,
size), `response` (status, headers, size), `server`, `upstream`, `route_id`, `service_id`,
`consumer`, `client_ip`, `start_time` (ms), `latency`, `upstream_latency`,
`apisix_latency` (ms). A `log_format` replaces it with its own keys: a value that starts
with `$` is that variable (`$host`, `$status`, `$request_time`, `$time_iso8601`, ...),
any other value is kept as it is.

**(ours)** Credentials never reach a log: the values of `Authorization`,
`Proxy-Authorization`, `Cookie` and `Set-Cookie`, and of every header, query argument and
cookie an authentication plugin of the config reads a key or token from (`SecretNames`),
are written as `[redacted]`, in the URL and the variables too.

Pure: no IO, no clock (the caller passes the wall-clock time).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, NamedTuple

from gateway.context import RequestContext, add_repeated, arg_name
from gateway.variables import getter

REDACTED = "[redacted]"
_REDACTED = REDACTED.encode()
ALWAYS_SECRET = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})


class SecretNames(NamedTuple):
    """Where the config's authentication plugins read credentials from."""

    headers: frozenset[bytes] = ALWAYS_SECRET
    args: frozenset[str] = frozenset()
    cookies: frozenset[str] = frozenset()


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def redacted_query(query: bytes, secrets: SecretNames) -> str:
    """The query string with the values of secret arguments replaced."""
    if not secrets.args or not query:
        return _text(query)
    parts = []
    for part in query.split(b"&"):
        name, sep, _ = part.partition(b"=")
        if sep and arg_name(name) in secrets.args:
            part = name + b"=" + _REDACTED
        parts.append(part)
    return _text(b"&".join(parts))


def _headers(pairs: list[tuple[bytes, bytes]], secrets: SecretNames) -> dict[str, Any]:
    """Headers as APISIX logs them: names lower-cased, a repeated one as a list."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        text = REDACTED if name in secrets.headers else _text(value)
        add_repeated(out, _text(name).lower(), text)
    return out


def _response_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    head = ctx.response_head  # the upstream's ResponseHead or the gateway's Reply
    pairs = list(head.headers) if head is not None else []
    if ctx.response_headers:
        pairs.extend(ctx.response_headers)
    return pairs


def _latencies(ctx: RequestContext) -> tuple[float, float | None, float]:
    latency = (ctx.end - ctx.start) * 1000
    if ctx.upstream_time < 0:
        return latency, None, latency
    upstream = ctx.upstream_time * 1000
    return latency, upstream, max(0.0, latency - upstream)


def started_at(ctx: RequestContext, wall_now: float) -> float:
    """When the request began, on the wall clock read at its end (`wall_now`)."""
    return wall_now - (ctx.end - ctx.start)


def full_entry(
    ctx: RequestContext, wall_now: float, hostname: str, secrets: SecretNames
) -> dict[str, Any]:
    """APISIX's default log entry for a finished request."""
    query = redacted_query(ctx.query, secrets)
    uri = _text(ctx.request_target.partition(b"?")[0]) + (f"?{query}" if ctx.query else "")
    host = _text(ctx.header(b"host") or ctx.host)
    latency, upstream_latency, gateway_latency = _latencies(ctx)
    route = ctx.route
    entry: dict[str, Any] = {
        "request": {
            "url": f"{ctx.scheme}://{host}{uri}",
            "uri": uri,
            "method": _text(ctx.method),
            "headers": _headers(ctx.headers, secrets),
            "querystring": {k: (REDACTED if k in secrets.args else v) for k, v in ctx.args.items()},
            "size": ctx.request_length,
        },
        "response": {
            "status": ctx.status,
            "headers": _headers(_response_headers(ctx), secrets),
            "size": ctx.bytes_sent,
        },
        "server": {"hostname": hostname, "version": "trio-gateway"},
        "upstream": ctx.upstream_addr,
        "route_id": route.id if route is not None else "",
        "service_id": (route.service_id or "") if route is not None else "",
        "client_ip": ctx.remote_addr,
        "start_time": round(started_at(ctx, wall_now) * 1000),
        "latency": latency,
        "apisix_latency": gateway_latency,
    }
    if upstream_latency is not None:
        entry["upstream_latency"] = upstream_latency
    if ctx.consumer is not None:
        entry["consumer"] = {"username": ctx.consumer.username}
    return entry


Reader = Callable[[RequestContext, float], Any]


def _log_variable(name: str, secrets: SecretNames) -> Reader:
    """What `$name` reads in a `log_format`, given the request and the wall-clock time."""
    if name == "time_iso8601":
        return lambda ctx, now: (
            datetime.datetime.fromtimestamp(now, datetime.UTC)
            .astimezone()
            .isoformat(timespec="seconds")
        )
    if name == "msec":
        return lambda ctx, now: f"{now:.3f}"
    if name == "request_time":
        return lambda ctx, now: f"{ctx.end - ctx.start:.3f}"
    if name == "upstream_response_time":
        return lambda ctx, now: f"{ctx.upstream_time:.3f}" if ctx.upstream_time >= 0 else None
    if name == "upstream_addr":
        return lambda ctx, now: ctx.upstream_addr or None
    if name == "bytes_sent":
        return lambda ctx, now: str(ctx.bytes_sent)
    if name == "request_length":
        return lambda ctx, now: str(ctx.request_length)
    if name in ("request_uri", "args", "query_string"):
        path_part = name == "request_uri"

        def query_reader(ctx: RequestContext, now: float) -> str:
            query = redacted_query(ctx.query, secrets)
            if not path_part:
                return query
            path = _text(ctx.request_target.partition(b"?")[0])
            return path + (f"?{query}" if ctx.query else "")

        return query_reader
    read = getter(name)
    if (
        (name.startswith("http_") and name[5:].replace("_", "-").encode() in secrets.headers)
        or (name.startswith("arg_") and name[4:] in secrets.args)
        or (name.startswith("cookie_") and name[7:] in secrets.cookies)
    ):
        return lambda ctx, now: REDACTED if read(ctx) is not None else None
    return lambda ctx, now: read(ctx)


def custom_format(
    log_format: dict[str, Any], secrets: SecretNames
) -> Callable[[RequestContext, float], dict[str, Any]]:
    """The entry builder for a `log_format` (compiled once)."""
    fields: list[tuple[str, Reader | None, Any]] = []
    for key, value in log_format.items():
        if isinstance(value, str) and value.startswith("$") and len(value) > 1:
            fields.append((key, _log_variable(value[1:], secrets), None))
        else:
            fields.append((key, None, value))

    def build(ctx: RequestContext, now: float) -> dict[str, Any]:
        return {
            key: (reader(ctx, now) if reader is not None else constant)
            for key, reader, constant in fields
        }

    return build
