"""Read a config file into a validated `Config`, or raise `ConfigErrors` naming every problem.

Steps: parse JSON, replace `$env://NAME` references (an unset variable is an error, never a
literal), convert with msgspec (which names the JSON path of a bad field), then run the
cross-resource checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway.config.checks import check
from gateway.config.model import Config
from gateway.errors import ConfigError, ConfigErrors

ENV_PREFIX = "$env://"


def _format_path(segments: tuple[str | int, ...]) -> str:
    out = "$"
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif seg.replace("_", "a").replace("-", "a").isalnum():
            out += f".{seg}"
        else:
            out += f"[{seg!r}]"
    return out


def resolve_env(
    value: Any,
    environ: Mapping[str, str],
    errors: list[ConfigError],
    path: tuple[str | int, ...] = (),
) -> Any:
    """`value` with every `$env://NAME` string replaced from `environ`.

    The JSON path is kept as segments and only formatted for an error: a config with a
    hundred thousand consumers should not build a path string per value.
    """
    if isinstance(value, str):
        if value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX) :]
            if name not in environ:
                errors.append(
                    ConfigError(f"environment variable {name!r} is not set", _format_path(path))
                )
                return value
            return environ[name]
        return value
    if isinstance(value, dict):
        return {k: resolve_env(v, environ, errors, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, environ, errors, (*path, i)) for i, v in enumerate(value)]
    return value


def _split_msgspec_error(text: str) -> ConfigError:
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        return ConfigError(text, "$")  # msgspec names no path for the top-level object
    # A bad object key: msgspec says "- at `key` in `$.path`".
    if path.startswith("key` in `"):
        return ConfigError(f"a key: {message}", path.removeprefix("key` in `").rstrip("`"))
    return ConfigError(message, path.rstrip("`"))


def parse(data: bytes, environ: Mapping[str, str] | None = None) -> Config:
    """Decode and validate config bytes; raises `ConfigErrors`."""
    try:
        return _parse(data, environ)
    except RecursionError:
        # msgspec's decoder, or a check that walks nested rules, ran out of stack.
        raise ConfigErrors([ConfigError("the config is nested too deeply", "$")]) from None


def _parse(data: bytes, environ: Mapping[str, str] | None) -> Config:
    config = _decode_typed(data) if ENV_PREFIX.encode() not in data else None
    if config is not None:
        problems = check(config)
        if problems:
            raise ConfigErrors(problems)
        return config
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigErrors([ConfigError(f"invalid JSON: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ConfigErrors([ConfigError("the config must be a JSON object", "$")])
    errors: list[ConfigError] = []
    if ENV_PREFIX.encode() in data:
        raw = resolve_env(raw, os.environ if environ is None else environ, errors)
    if errors:
        raise ConfigErrors(errors)
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigErrors([_split_msgspec_error(str(exc))]) from None
    errors = check(config)
    if errors:
        raise ConfigErrors(errors)
    return config


def _decode_typed(data: bytes) -> Config | None:
    """The config decoded straight into its Structs (half the time of decoding then
    converting, and the interpreter is let go between the Structs' checks), or None when
    it is not valid: the two-step path then says why, as always."""
    try:
        return msgspec.json.decode(data, type=Config)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None


def load(path: str) -> Config:
    """Read and validate the config file at `path`; raises `ConfigErrors`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigErrors([ConfigError(f"cannot read config: {exc.strerror}: {path}")]) from None
    return parse(data)
