"""Environment references in a config, resolved before it is validated, as APISIX does:

- `$env://NAME` (the prefix in any case): the whole string is the variable's value;
  `$env://NAME/key` is the value at `key` of the JSON object the variable holds;
- `${{NAME}}` and `${{NAME:=default}}` anywhere in a string or an object key (APISIX's
  standalone apisix.yaml); a string that was substituted and is then all a number, `true`
  or `false` becomes that number or boolean (`"count": "${{LIMIT:=100}}"`).

A reference that cannot be resolved is an error naming its JSON path and the variable,
never a literal: a key-auth key `$env://KEY` left as it is would let anyone who read the
config in. So is `$secret://` (APISIX's Vault and cloud secret managers are not here). No
message quotes a variable's value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from gateway.errors import ConfigError

# Any reference at all, searched in the raw file first: most configs hold none.
MARKERS: Final = re.compile(rb"\$(?:env|secret)://|\$\{\{", re.IGNORECASE)

_ENV: Final = "$env://"
_SECRET: Final = "$secret://"
_PLACEHOLDER: Final = re.compile(r"\$\{\{\s*(\w+)(?:\s*:=(.*?))?\s*\}\}", re.DOTALL)
_NUMBER: Final = re.compile(
    r"\s*[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
)


def format_path(segments: tuple[str | int, ...]) -> str:
    """`$.routes[0].plugins.key-auth.key` from its segments."""
    out = "$"
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif seg.replace("_", "a").replace("-", "a").isalnum():
            out += f".{seg}"
        else:
            out += f"[{seg!r}]"
    return out


class _Unresolved(Exception):
    """Why a reference cannot be resolved (the message names no value)."""


def resolve(
    value: Any,
    environ: Mapping[str, str],
    errors: list[ConfigError],
    path: tuple[str | int, ...] = (),
) -> Any:
    """`value` with every reference replaced from `environ`; each failure is appended to
    `errors` (the value is then kept, and the config refused by the caller).

    The JSON path is kept as segments and only formatted for an error: a config with a
    hundred thousand consumers should not build a path string per value."""
    if isinstance(value, str):
        try:
            return _resolve_string(value, environ)
        except _Unresolved as exc:
            errors.append(ConfigError(str(exc), format_path(path)))
            return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if "${{" in key:
                try:
                    key = _substitute(key, environ)
                except _Unresolved as exc:
                    errors.append(ConfigError(f"in a key: {exc}", format_path(path)))
            out[key] = resolve(item, environ, errors, (*path, key))
        return out
    if isinstance(value, list):
        return [resolve(v, environ, errors, (*path, i)) for i, v in enumerate(value)]
    return value


def _resolve_string(value: str, environ: Mapping[str, str]) -> Any:
    if "${{" in value:
        substituted = _substitute(value, environ)
        if _NUMBER.fullmatch(substituted):
            return _number(substituted.strip())
        if substituted in ("true", "false"):
            return substituted == "true"
        value = substituted
    if value[:1] != "$":
        return value
    prefix = value[: len(_SECRET)].lower()
    if prefix.startswith(_ENV):
        return _env_value(value[len(_ENV) :], environ)
    if prefix == _SECRET:
        raise _Unresolved(
            "a `$secret://` reference: secret managers are not supported here; give the "
            "value through `$env://NAME`"
        )
    return value


def _substitute(text: str, environ: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        if name in environ:
            return environ[name]
        if default is None:
            raise _Unresolved(f"environment variable {name!r} is not set")
        return default.strip()

    return _PLACEHOLDER.sub(one, text)


def _number(text: str) -> int | float:
    """Lua's `tonumber`, an integral value as an int (`1e3` fills an integer field)."""
    if text.lstrip("+-")[:2].lower() == "0x":
        return int(text, 16)
    try:
        return int(text)
    except ValueError:
        value = float(text)
        return int(value) if value.is_integer() else value


def _env_value(reference: str, environ: Mapping[str, str]) -> Any:
    name, slash, key = reference.partition("/")
    if name not in environ:
        raise _Unresolved(f"environment variable {name!r} is not set")
    value = environ[name]
    if not slash:
        return value
    try:
        held = msgspec.json.decode(value)
    except msgspec.DecodeError:
        held = None
    if not isinstance(held, dict):
        raise _Unresolved(f"environment variable {name!r} is not a JSON object (for key {key!r})")
    if key not in held:
        raise _Unresolved(f"environment variable {name!r} has no key {key!r}")
    return held[key]
