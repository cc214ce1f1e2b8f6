"""Values with NGINX-style variables (`$remote_addr`, `$arg_name`, `$1`), compiled once.

APISIX lets proxy-rewrite's `uri` and header values name request variables; a `Template`
splits the text at load time so a request only joins precomputed parts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.context import RequestContext

_VAR = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z_][A-Za-z0-9_]*|[0-9])")


def _request_var(ctx: RequestContext, name: str) -> str:
    if name == "uri":
        return ctx.path.decode("latin-1")
    if name == "request_uri":  # nginx's: the target as the client sent it
        return ctx.request_target.decode("latin-1")
    if name == "args" or name == "query_string":
        return ctx.query.decode("latin-1")
    if name == "remote_addr":
        return ctx.remote_addr
    if name == "remote_port":
        return str(ctx.remote_port)
    if name == "server_port":
        return str(ctx.server_port)
    if name == "host":
        return ctx.host.decode("latin-1")
    if name == "request_method":
        return ctx.method.decode("latin-1")
    if name == "scheme":
        return "http"
    if name == "route_id":
        return ctx.route.id if ctx.route is not None else ""
    if name.startswith("arg_"):  # as sent, escapes kept (nginx's $arg_name)
        raw = ctx.raw_arg(name[4:])
        return raw.decode("latin-1") if raw is not None else ""
    if name.startswith("http_"):
        value = ctx.header(name[5:].replace("_", "-").encode("latin-1"))
        return value.decode("latin-1") if value is not None else ""
    return ""


class Template:
    """Text with `$var` references; `render` fills them from a request (and regex groups)."""

    __slots__ = ("constant", "parts")

    def __init__(self, text: str) -> None:
        parts: list[tuple[bool, str]] = []
        pos = 0
        for m in _VAR.finditer(text):
            if m.start() > pos:
                parts.append((False, text[pos : m.start()]))
            parts.append((True, m.group(1).strip("{}")))
            pos = m.end()
        if pos < len(text):
            parts.append((False, text[pos:]))
        self.parts = tuple(parts)
        self.constant = text if not any(is_var for is_var, _ in parts) else None

    def render(self, ctx: RequestContext, groups: Sequence[str | None] = ()) -> str:
        if self.constant is not None:
            return self.constant
        out = []
        for is_var, value in self.parts:
            if not is_var:
                out.append(value)
            elif value.isdigit():
                index = int(value)
                out.append((groups[index] or "") if index < len(groups) else "")
            else:
                out.append(_request_var(ctx, value))
        return "".join(out)
