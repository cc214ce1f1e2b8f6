"""multi-auth: several authentication plugins, the first that succeeds names the consumer.

`auth_plugins` is a list (at least two) of one-key objects `{plugin-name: conf}`, each
validated with that plugin's own schema. All failing answers 401
`{"message":"Authorization Failed"}` with every tried plugin's challenge.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import msgspec

from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.pipeline import AuthPlugin, PluginConf, PluginEnv, build, disabled


def _auth_plugins() -> dict[str, type[AuthPlugin]]:
    # Imported here: the registry imports this module.
    from gateway.plugins import PLUGINS

    return {
        p.name: p
        for p in PLUGINS
        if issubclass(p, AuthPlugin) and p.names_consumer and p.name != "multi-auth"
    }


class MultiAuthConf(PluginConf, frozen=True, kw_only=True):
    auth_plugins: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=2)]

    def confs(self) -> list[tuple[type[AuthPlugin], Any]]:
        """Each entry as (plugin class, its validated conf); raises ValueError."""
        known = _auth_plugins()
        out = []
        for i, entry in enumerate(self.auth_plugins):
            if len(entry) != 1:
                raise ValueError(f"auth_plugins[{i}] must hold exactly one plugin")
            ((name, conf),) = entry.items()
            plugin = known.get(name)
            if plugin is None:
                raise ValueError(f"auth_plugins[{i}]: {name!r} is not an authentication plugin")
            try:
                out.append((plugin, msgspec.convert(conf, plugin.Conf)))
            except msgspec.ValidationError as exc:
                raise ValueError(f"auth_plugins[{i}].{name}: {exc}") from None
        return out

    def __post_init__(self) -> None:
        self.confs()


class MultiAuth(AuthPlugin):
    name = "multi-auth"
    priority = 2600
    Conf = MultiAuthConf

    def __init__(self, conf: MultiAuthConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.plugins = [build(plugin, c, env) for plugin, c in conf.confs() if not disabled(c)]
        self.hooks = [
            (p.rewrite, inspect.iscoroutinefunction(p.rewrite))  # type: ignore[attr-defined]
            for p in self.plugins
        ]
        self.challenge = [h for p in self.plugins for h in p.challenge]
        self.failed = message(401, "Authorization Failed", self.challenge)
        if any(is_async for _, is_async in self.hooks):
            self.rewrite = self._rewrite_async  # type: ignore[method-assign,assignment]

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        for hook, _ in self.hooks:
            if hook(ctx) is None:
                return None
        return self.failed

    async def _rewrite_async(self, ctx: RequestContext) -> Reply | None:
        for hook, is_async in self.hooks:
            result = hook(ctx)
            if is_async:
                result = await result
            if result is None:
                return None
        return self.failed
