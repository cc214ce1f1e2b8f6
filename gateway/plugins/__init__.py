"""The plugin registry: every plugin the config may name, in one explicit tuple."""

from __future__ import annotations

from gateway.pipeline import Plugin
from gateway.plugins.proxy_rewrite import ProxyRewrite

PLUGINS: tuple[type[Plugin], ...] = (ProxyRewrite,)

BY_NAME: dict[str, type[Plugin]] = {p.name: p for p in PLUGINS}
