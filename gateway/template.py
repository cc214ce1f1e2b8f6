"""Values with NGINX-style variables (`$remote_addr`, `$arg_name`, `$1`), compiled once.

APISIX lets proxy-rewrite's `uri` and header values name request variables; a `Template`
splits the text at load time so a request only joins precomputed parts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from gateway.context import Header, RequestContext
from gateway.patterns import Pattern
from gateway.variables import Getter, getter

_VAR = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z_][A-Za-z0-9_]*|[0-9])")


class Template:
    """Text with `$var` references; `render` fills them from a request (and regex groups)."""

    __slots__ = ("constant", "parts", "variable_names")

    def __init__(self, text: str) -> None:
        # Each part is literal text, a regex group's index, or a request variable's getter.
        parts: list[str | int | Getter] = []
        names: list[str] = []
        pos = 0
        for m in _VAR.finditer(text):
            if m.start() > pos:
                parts.append(text[pos : m.start()])
            name = m.group(1).strip("{}")
            if name.isdigit():
                parts.append(int(name))
            else:
                parts.append(getter(name))
                names.append(name)
            pos = m.end()
        if pos < len(text):
            parts.append(text[pos:])
        self.parts = tuple(parts)
        self.variable_names = tuple(names)
        self.constant = text if all(isinstance(p, str) for p in parts) else None

    def render(self, ctx: RequestContext, groups: Sequence[str | None] = ()) -> str:
        if self.constant is not None:
            return self.constant
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, int):
                out.append((groups[part] or "") if part < len(groups) else "")
            else:
                out.append(part(ctx) or "")
        return "".join(out)


def config_template(text: str) -> Template:
    """A template for text from the config, held as its UTF-8 bytes one character per byte
    (Latin-1), as request variables are: a rendered value encodes back with "latin-1"."""
    return Template(text.encode().decode("latin-1"))


def substitute(
    pattern: Pattern, template: Template, text: str, ctx: RequestContext
) -> tuple[str, tuple[str | None, ...]] | None:
    """`ngx.re.sub`: `text` with the first match of `pattern` replaced by `template`
    (`$0`..`$9` its groups), and those groups; None when nothing matches."""
    m = pattern.search(text)
    if m is None:
        return None
    groups = (m.group(0), *m.groups())
    return text[: m.start()] + template.render(ctx, groups) + text[m.end() :], groups


def header_templates(pairs: Iterable[tuple[str, object]]) -> list[tuple[bytes, Template]]:
    """Header names (lower-cased) and config values that may hold `$variables`."""
    return [(name.lower().encode(), config_template(str(value))) for name, value in pairs]


def render_headers(
    templates: Sequence[tuple[bytes, Template]], ctx: RequestContext
) -> list[Header]:
    return [(name, value.render(ctx).encode("latin-1")) for name, value in templates]
