"""Read a config file into a validated `Config`, or raise `ConfigErrors` naming every problem.

Steps: parse JSON, replace environment references (`config.references`: an unset
variable is an error, never a literal), convert with msgspec (which names the JSON path of
a bad field), then run the cross-resource checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from gateway.config.checks import check
from gateway.config.model import Config
from gateway.config.references import MARKERS, resolve
from gateway.errors import ConfigError, ConfigErrors


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
    referencing = MARKERS.search(data) is not None
    config = None if referencing else _decode_typed(data)
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
    if referencing:
        raw = resolve(raw, os.environ if environ is None else environ, errors)
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
