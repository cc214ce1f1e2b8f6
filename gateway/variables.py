"""Request variables by their nginx / APISIX names (`uri`, `arg_name`, `http_x_name`, ...).

proxy-rewrite's templates and route `vars` read them. A variable the request does not
carry is None (nginx's "not found"), which templates render as empty text.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.context import RequestContext

Getter = Callable[[RequestContext], str | None]


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _route_id(ctx: RequestContext) -> str | None:
    return ctx.route.id if ctx.route is not None else None


def _service_id(ctx: RequestContext) -> str | None:
    return ctx.route.service_id if ctx.route is not None else None


def _consumer_name(ctx: RequestContext) -> str | None:
    return ctx.consumer.username if ctx.consumer is not None else None


def _client(ctx: RequestContext, field: str) -> str | None:
    client = ctx.tls.client if ctx.tls is not None else None
    return getattr(client, field) if client is not None else None


_FIXED: dict[str, Getter] = {
    "uri": lambda ctx: ctx.path.decode("latin-1"),
    # nginx's: the target as the client sent it
    "request_uri": lambda ctx: ctx.request_target.decode("latin-1"),
    "args": lambda ctx: ctx.query.decode("latin-1"),
    "query_string": lambda ctx: ctx.query.decode("latin-1"),
    "remote_addr": lambda ctx: ctx.remote_addr,
    "remote_port": lambda ctx: str(ctx.remote_port),
    "server_port": lambda ctx: str(ctx.server_port),
    "host": lambda ctx: ctx.host.decode("latin-1"),
    "request_method": lambda ctx: ctx.method.decode("latin-1"),
    "scheme": lambda ctx: ctx.scheme,
    # nginx's `$https` ("on" over TLS, else empty) and `$ssl_server_name` (the SNI asked for).
    "https": lambda ctx: "on" if ctx.tls is not None else "",
    "ssl_server_name": lambda ctx: ctx.tls.server_name if ctx.tls is not None else None,
    # The client's certificate on an entry with `client` (mutual TLS), as nginx names them.
    "ssl_client_verify": lambda ctx: ctx.tls.verify if ctx.tls is not None else None,
    "ssl_client_s_dn": lambda ctx: _client(ctx, "subject"),
    "ssl_client_i_dn": lambda ctx: _client(ctx, "issuer"),
    "ssl_client_serial": lambda ctx: _client(ctx, "serial"),
    "ssl_client_fingerprint": lambda ctx: _client(ctx, "fingerprint"),
    "route_id": _route_id,
    "service_id": _service_id,
    "consumer_name": _consumer_name,
    # The answer's status once there is one (response-rewrite's `vars`), nginx's `$status`.
    "status": lambda ctx: str(ctx.status) if ctx.status else None,
}


def getter(name: str) -> Getter:
    """The function that reads variable `name` from a request (None when absent); unknown
    names read as absent, as in nginx."""
    fixed = _FIXED.get(name)
    if fixed is not None:
        return fixed
    if name.startswith("arg_"):  # as sent, escapes kept (nginx's $arg_name)
        arg = name[4:]
        return lambda ctx: _text(ctx.raw_arg(arg))
    if name.startswith("http_"):
        header = name[5:].replace("_", "-").lower().encode("latin-1")
        return lambda ctx: _text(ctx.header(header))
    if name.startswith("cookie_"):
        cookie = name[7:]
        return lambda ctx: ctx.cookies.get(cookie)
    return lambda ctx: None


def known(name: str) -> bool:
    """Whether `name` is a variable `getter` reads (rather than one always absent)."""
    return name in _FIXED or name.startswith(("arg_", "http_", "cookie_"))
