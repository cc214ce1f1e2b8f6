"""Checks across resources that a per-field schema cannot express.

Each problem is reported in msgspec's form (``message - at `$.path` ``) so `gateway check`
prints every line the same way. All problems are collected, not just the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.config.model import (
    ANSWERING,
    Config,
    plugin_items,
    policy_plugins,
    route_level_plugins,
)
from gateway.config.ssl import normal_sni, sni_keys
from gateway.errors import ConfigError
from gateway.pipeline import AuthPlugin
from gateway.plugins import BY_NAME


def _duplicates(items: Iterable[tuple[str, str]], what: str) -> list[ConfigError]:
    seen: dict[str, str] = {}
    errors = []
    for value, path in items:
        if value in seen:
            errors.append(ConfigError(f"duplicate {what} {value!r} (first at {seen[value]})", path))
        else:
            seen[value] = path
    return errors


def check(config: Config) -> list[ConfigError]:
    """Every cross-resource problem in `config`; an empty list means it is consistent."""
    errors: list[ConfigError] = []
    upstream_ids = set()
    for i, upstream in enumerate(config.upstreams):
        if upstream.id is None:
            errors.append(
                ConfigError("an upstream in `upstreams` needs an `id`", f"$.upstreams[{i}]")
            )
        else:
            upstream_ids.add(upstream.id)
    errors += _duplicates(
        ((u.id, f"$.upstreams[{i}].id") for i, u in enumerate(config.upstreams) if u.id),
        "upstream id",
    )
    errors += _duplicates(
        ((r.id, f"$.routes[{i}].id") for i, r in enumerate(config.routes)), "route id"
    )
    errors += _duplicates(
        ((s.id, f"$.services[{i}].id") for i, s in enumerate(config.services)), "service id"
    )
    errors += _duplicates(
        ((p.id, f"$.plugin_configs[{i}].id") for i, p in enumerate(config.plugin_configs)),
        "plugin config id",
    )
    errors += _duplicates(
        ((g.id, f"$.global_rules[{i}].id") for i, g in enumerate(config.global_rules)),
        "global rule id",
    )
    errors += _duplicates(
        ((g.id, f"$.consumer_groups[{i}].id") for i, g in enumerate(config.consumer_groups)),
        "consumer group id",
    )
    errors += _duplicates(
        ((c.username, f"$.consumers[{i}].username") for i, c in enumerate(config.consumers)),
        "consumer username",
    )

    services = {s.id: s for s in config.services}
    plugin_configs = {p.id: p for p in config.plugin_configs}
    for i, svc in enumerate(config.services):
        if svc.upstream_id is not None and svc.upstream_id not in upstream_ids:
            errors.append(
                ConfigError(
                    f"upstream_id {svc.upstream_id!r} names no upstream",
                    f"$.services[{i}].upstream_id",
                )
            )
    for i, route in enumerate(config.routes):
        if route.upstream_id is not None and route.upstream_id not in upstream_ids:
            errors.append(
                ConfigError(
                    f"upstream_id {route.upstream_id!r} names no upstream",
                    f"$.routes[{i}].upstream_id",
                )
            )
        if route.plugin_config_id is not None and route.plugin_config_id not in plugin_configs:
            errors.append(
                ConfigError(
                    f"plugin_config_id {route.plugin_config_id!r} names no plugin config",
                    f"$.routes[{i}].plugin_config_id",
                )
            )
        service = services.get(route.service_id) if route.service_id is not None else None
        if route.service_id is not None and service is None:
            errors.append(
                ConfigError(
                    f"service_id {route.service_id!r} names no service",
                    f"$.routes[{i}].service_id",
                )
            )
        if (
            route.upstream is None
            and route.upstream_id is None
            and (route.service_id is None or service is not None)  # else: named above
            and (service is None or (service.upstream is None and service.upstream_id is None))
            and not _answers_itself(
                route, service, plugin_configs.get(route.plugin_config_id or "")
            )
        ):
            errors.append(
                ConfigError("neither the route nor its service names an upstream", f"$.routes[{i}]")
            )

    group_ids = {g.id for g in config.consumer_groups}
    for i, consumer in enumerate(config.consumers):
        if consumer.group_id is not None and consumer.group_id not in group_ids:
            errors.append(
                ConfigError(
                    f"group_id {consumer.group_id!r} names no consumer group",
                    f"$.consumers[{i}].group_id",
                )
            )
    errors += _duplicates(
        (
            (cred.id, f"$.consumers[{i}].credentials[{j}].id")
            for i, c in enumerate(config.consumers)
            for j, cred in enumerate(c.credentials)
        ),
        "credential id",
    )
    for i, consumer in enumerate(config.consumers):
        for j, cred in enumerate(consumer.credentials):
            if len(plugin_items(cred.plugins)) != 1:
                errors.append(
                    ConfigError(
                        "a credential holds exactly one authentication plugin",
                        f"$.consumers[{i}].credentials[{j}].plugins",
                    )
                )
    errors += _split_upstream_ids(config, upstream_ids)
    errors += _duplicate_secrets(config)
    errors += _anonymous_consumers(config)
    errors += _credential_filters(config)
    if config.server.workers > 1:
        errors += _local_limits(config)
    errors += _ssls(config)
    errors += _duplicates(
        ((m.id, f"$.plugin_metadata[{i}].id") for i, m in enumerate(config.plugin_metadata)),
        "plugin metadata id",
    )
    return errors


def _answers_itself(route: Any, service: Any, shared: Any) -> bool:
    """Whether a plugin of the route, its plugin config (`shared`) or its service answers
    every request (then the route needs no upstream)."""
    names = {
        name
        for holder in (route, shared, service)
        if holder is not None
        for name, _ in plugin_items(holder.plugins)
    }
    return bool(ANSWERING & names)


def _ssls(config: Config) -> list[ConfigError]:
    """An SNI is answered by one certificate entry only, and an HTTPS address needs one."""
    errors = _duplicates(
        (
            (normal_sni(name), f"$.ssls[{i}]." + ("sni" if ssl.sni is not None else f"snis[{j}]"))
            for i, ssl in enumerate(config.ssls)
            if ssl.status == 1
            for j, name in enumerate(ssl.names)
        ),
        "sni",
    )
    fallback = config.server.ssl_fallback_sni
    if fallback is not None:
        names = {normal_sni(n) for ssl in config.ssls if ssl.status == 1 for n in ssl.names}
        if not names.intersection(sni_keys(fallback)):
            errors.append(
                ConfigError(
                    f"no enabled entry of `ssls` answers {fallback!r}",
                    "$.server.ssl_fallback_sni",
                )
            )
    if config.server.ssl_addresses and not any(ssl.status == 1 for ssl in config.ssls):
        errors.append(
            ConfigError(
                "an HTTPS address needs a certificate: add one to `ssls`", "$.server.ssl_listen"
            )
        )
    return errors


def _anonymous_consumers(config: Config) -> list[ConfigError]:
    """An auth plugin's `anonymous_consumer` (also inside multi-auth) names a consumer."""
    usernames = {c.username for c in config.consumers}
    errors = []
    for base, plugins in route_level_plugins(config):
        for name, conf in plugin_items(plugins):
            entries = [(f"{base}.{name}", conf)]
            if name == "multi-auth":
                entries = [
                    (f"{base}.{name}.auth_plugins[{k}].{plugin.name}", entry)
                    for k, (plugin, entry) in enumerate(conf.confs())
                ]
            for path, entry in entries:
                anonymous = getattr(entry, "anonymous_consumer", None)
                if anonymous is not None and anonymous not in usernames:
                    errors.append(
                        ConfigError(
                            f"anonymous_consumer {anonymous!r} names no consumer",
                            f"{path}.anonymous_consumer",
                        )
                    )
    return errors


def _credential_confs(config: Config) -> list[tuple[str, str, type[AuthPlugin], Any]]:
    """(JSON path, plugin name, plugin, conf) of every credential: each consumer's
    credentials and the auth plugins directly in its `plugins` (the legacy form)."""
    found = []
    for i, consumer in enumerate(config.consumers):
        places = [(f"$.consumers[{i}].plugins", consumer.plugins)]
        places += [
            (f"$.consumers[{i}].credentials[{j}].plugins", c.plugins)
            for j, c in enumerate(consumer.credentials)
        ]
        for base, plugins in places:
            for name, conf in plugin_items(plugins):
                plugin = BY_NAME[name]
                if issubclass(plugin, AuthPlugin):
                    found.append((f"{base}.{name}", name, plugin, conf))
    return found


def _credential_filters(config: Config) -> list[ConfigError]:
    """A credential is looked up, never run: `_meta.filter` has no phase to gate there."""
    return [
        ConfigError(
            "a credential takes `_meta.disable`, not `_meta.filter`", f"{path}._meta.filter"
        )
        for path, _, _, conf in _credential_confs(config)
        if conf.meta is not None and conf.meta.filter is not None
    ]


def _split_upstream_ids(config: Config, upstream_ids: set[str]) -> list[ConfigError]:
    """traffic-split's `upstream_id`s name configured upstreams (APISIX answers 500 at
    request time; here the config is refused)."""
    return [
        ConfigError(
            f"upstream_id {entry.upstream_id!r} names no upstream",
            f"{base}.{name}.rules[{r}].weighted_upstreams[{k}].upstream_id",
        )
        for base, plugins in policy_plugins(config)
        for name, conf in plugin_items(plugins)
        if name == "traffic-split"
        for r, rule in enumerate(conf.rules)
        for k, entry in enumerate(rule.weighted_upstreams)
        if entry.upstream_id is not None and entry.upstream_id not in upstream_ids
    ]


def _local_limits(config: Config) -> list[ConfigError]:
    """With several workers, `policy: local` would give each process its own quota (or
    bucket)."""
    return [
        ConfigError(
            f"{name} `policy: local` counts per process, and server.workers is "
            f"{config.server.workers}: use `policy: redis` to share one quota",
            f"{base}.{name}.policy",
        )
        for base, plugins in policy_plugins(config)
        for name, conf in plugin_items(plugins)
        if name in ("limit-count", "limit-req", "limit-conn") and conf.policy == "local"
    ]


def _duplicate_secrets(config: Config) -> list[ConfigError]:
    """The same key-auth key, basic-auth username, jwt-auth key or hmac-auth key_id used
    twice anywhere: a request could not tell the consumers apart. The value itself is never
    printed (it may be a secret)."""
    errors = []
    seen: dict[tuple[str, str], str] = {}
    for path, name, plugin, conf in _credential_confs(config):
        for key in plugin.unique_keys(conf):
            first = seen.setdefault((name, key), path)
            if first != path:
                what = key.partition(":")[0]
                errors.append(ConfigError(f"{name} {what} already used (first at {first})", path))
    return errors
