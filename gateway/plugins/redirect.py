"""redirect: answer with a `Location` instead of proxying, as APISIX's plugin does.

Exactly one of `uri` (a template with `$variables`), `regex_uri` (a pattern and a
template: the path's first match is replaced, as `ngx.re.sub`; a path it does not match
goes on to the upstream) and `http_to_https` (`https://$host$request_uri`, 301 for GET and
HEAD, 308 for the others, unless `X-Forwarded-Proto` says the request came over https).
It runs in the rewrite phase at priority 900: after authentication.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, reason
from gateway.patterns import Pattern, any_of
from gateway.pipeline import Plugin, PluginConf, PluginEnv
from gateway.plugins.proxy_rewrite import safe_target
from gateway.template import config_template, substitute

_SAFE_METHODS = frozenset({b"GET", b"HEAD"})
_HTML = (b"content-type", b"text/html")


class RedirectConf(PluginConf, frozen=True, kw_only=True):
    uri: Annotated[str, msgspec.Meta(min_length=2)] | None = None
    regex_uri: Annotated[list[str], msgspec.Meta(min_length=2, max_length=2)] | None = None
    http_to_https: bool | None = None
    # APISIX takes any code from 200 up; (ours) the status line holds three digits.
    ret_code: Annotated[int, msgspec.Meta(ge=200, le=599)] = 302
    encode_uri: bool = False
    append_query_string: bool = False

    def __post_init__(self) -> None:
        given = [self.uri is not None, self.regex_uri is not None, self.http_to_https is not None]
        if given.count(True) != 1:
            raise ValueError("takes exactly one of `uri`, `regex_uri` and `http_to_https`")
        if self.http_to_https and self.append_query_string:
            raise ValueError(
                "only one of `http_to_https` and `append_query_string` can be configured"
            )
        if self.regex_uri is not None:
            any_of(self.regex_uri[:1], "regex_uri pattern")


def _page(status: int) -> bytes:
    """nginx's page for a status it answers itself (none for 2xx)."""
    if status < 300:
        return b""
    title = f"{status} {reason(status).decode()}".rstrip().encode()
    return (
        b"<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n"
        b"<center><h1>%s</h1></center>\r\n</body>\r\n</html>\r\n" % (title, title)
    )


class Redirect(Plugin):
    name = "redirect"
    priority = 900
    Conf = RedirectConf

    def __init__(self, conf: RedirectConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.uri = config_template(conf.uri) if conf.uri is not None else None
        if conf.regex_uri is not None:
            self.pattern: Pattern | None = Pattern(conf.regex_uri[0])
            self.regex_template = config_template(conf.regex_uri[1])
        else:
            self.pattern = None
        self.to_https = bool(conf.http_to_https)
        # As APISIX: no port in the Location for 443 (or none known).
        port = env.https_port
        self.https_port = f":{port}".encode() if port and port != 443 else b""
        self.status = conf.ret_code
        self.encode = conf.encode_uri
        self.append_query = conf.append_query_string
        self.pages = {status: _page(status) for status in (conf.ret_code, 301, 308)}

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        status = self.status
        if self.to_https:
            if ctx.tls is not None:
                return None
            proto = ctx.header(b"x-forwarded-proto")
            if proto is not None and proto.lower() != b"http":
                return None
            location = b"https://" + ctx.host + self.https_port + ctx.request_target
            status = 301 if ctx.method in _SAFE_METHODS else 308
        else:
            if self.uri is not None:
                text = self.uri.render(ctx)
            else:
                assert self.pattern is not None
                replaced = substitute(
                    self.pattern, self.regex_template, ctx.path.decode("latin-1"), ctx
                )
                if replaced is None:
                    return None
                text = replaced[0]
            location = safe_target(text) if self.encode else text.encode("latin-1")
            if self.append_query and ctx.query:
                location += (b"&" if b"?" in location else b"?") + ctx.query
        return Reply(status, [_HTML, (b"location", location)], self.pages[status])
