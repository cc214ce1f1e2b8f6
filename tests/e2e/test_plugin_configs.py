"""APISIX's `plugin_configs`: a set of plugins routes take by `plugin_config_id`, under the
route's own plugins and over its service's."""

from __future__ import annotations

import trio

from tests.helpers import Upstream, config_for, request, start_gateway


async def test_routes_take_plugins_from_a_plugin_config(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    node = {"nodes": {upstream.address: 1}}

    def tag(value: str) -> dict[str, object]:
        return {"proxy-rewrite": {"headers": {"set": {"X-From": value}}}}

    config = config_for(
        [
            {"id": "shared", "uri": "/shared", "upstream": node, "plugin_config_id": "pc"},
            {
                "id": "own",
                "uri": "/own",
                "upstream": node,
                "plugin_config_id": "pc",
                "plugins": tag("route"),
            },
            {"id": "svc", "uri": "/svc", "service_id": "s", "plugin_config_id": "pc"},
        ],
        plugin_configs=[{"id": "pc", "desc": "auth", "plugins": {"key-auth": {}, **tag("pc")}}],
        services=[{"id": "s", "upstream": node, "plugins": tag("service")}],
        consumers=[
            {
                "username": "app",
                "credentials": [{"id": "app-1", "plugins": {"key-auth": {"key": "app-key"}}}],
            }
        ],
    )
    _, gw = await start_gateway(nursery, config)
    key = [("apikey", "app-key")]
    for target, expected in (("/shared", b"pc"), ("/own", b"route"), ("/svc", b"pc")):
        assert (await request(gw, target=target)).status == 401, target
        assert (await request(gw, target=target, headers=key)).status == 200, target
        got = upstream.received[-1]
        assert got.header(b"x-from") == expected, target
        assert got.header(b"x-consumer-username") == b"app"
    assert len(upstream.received) == 3


async def test_a_disabled_conf_turns_off_the_plugin_it_overrides(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX merges the confs first and leaves out the disabled ones after: a route's
    `_meta.disable` turns off its service's or plugin config's copy of the plugin, and a
    consumer's (or its group's) turns off the route's."""
    node = {"nodes": {upstream.address: 1}}
    off = {"_meta": {"disable": True}}
    tag = {"proxy-rewrite": {"headers": {"set": {"X-From": "lower"}}}}
    limit = {"count": 1, "time_window": 60, "key": "consumer_name"}
    key_auth = {"key-auth": {}, "limit-count": limit}
    config = config_for(
        [
            {
                "id": "over-service",
                "uri": "/over-service",
                "service_id": "s",
                "plugins": {"proxy-rewrite": {"uri": "/x", **off}},
            },
            {
                "id": "over-config",
                "uri": "/over-config",
                "upstream": node,
                "plugin_config_id": "pc",
                "plugins": {"proxy-rewrite": {"uri": "/x", **off}},
            },
            {"id": "limited", "uri": "/limited", "upstream": node, "plugins": key_auth},
        ],
        plugin_configs=[{"id": "pc", "plugins": tag}],
        services=[{"id": "s", "upstream": node, "plugins": tag}],
        consumer_groups=[{"id": "g", "plugins": {"limit-count": {**limit, **off}}}],
        consumers=[
            {
                "username": name,
                "credentials": [{"id": f"{name}-1", "plugins": {"key-auth": {"key": name}}}],
                **extra,
            }
            for name, extra in (
                ("metered", {}),
                ("unmetered", {"plugins": {"limit-count": {**limit, **off}}}),
                ("grouped", {"group_id": "g"}),
            )
        ],
    )
    _, gw = await start_gateway(nursery, config)
    for target in ("/over-service", "/over-config"):
        assert (await request(gw, target=target)).status == 200
        got = upstream.received[-1]
        assert got.header(b"x-from") is None, target
        assert got.target == target.encode(), target
    for name, expected in (
        ("metered", [200, 503, 503]),
        ("unmetered", [200, 200, 200]),
        ("grouped", [200, 200, 200]),
    ):
        got = [
            (await request(gw, target="/limited", headers=[("apikey", name)])).status
            for _ in range(3)
        ]
        assert got == expected, name
