"""cors over real sockets, as APISIX's plugin answers: preflight before authentication,
the CORS headers on proxied answers and on the gateway's own, the upstream's copies
replaced."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import Received, Response, Upstream, config_for, request, start_gateway

CORS_HEADERS = (
    b"access-control-allow-origin",
    b"access-control-allow-methods",
    b"access-control-allow-headers",
    b"access-control-expose-headers",
    b"access-control-max-age",
    b"access-control-allow-credentials",
    b"timing-allow-origin",
)


async def cors_aware_upstream(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An upstream that sets CORS headers of its own, which the plugin must replace."""
    return (
        200,
        [
            (b"Access-Control-Allow-Origin", b"https://upstream.example"),
            (b"Access-Control-Max-Age", b"999"),
            (b"X-Upstream", b"yes"),
        ],
        b"from upstream",
    )


def cors(resp: Response) -> dict[bytes, list[bytes]]:
    """The response's CORS headers, every value of each."""
    return {
        name: [v for n, v in resp.headers if n == name]
        for name in CORS_HEADERS
        if any(n == name for n, _ in resp.headers)
    }


async def gateway_with(nursery: trio.Nursery, upstream: Upstream, **routes: Any) -> str:
    node = {"nodes": {upstream.address: 1}}
    config = config_for(
        [
            {"id": rid, "uri": f"/{rid}", "upstream": node, "plugins": plugins}
            for rid, plugins in routes.items()
        ],
        consumers=[
            {
                "username": "app",
                "credentials": [{"id": "app-1", "plugins": {"key-auth": {"key": "app-key"}}}],
            }
        ],
    )
    _, gw = await start_gateway(nursery, config)
    return gw


async def test_defaults_answer_every_origin_and_replace_the_upstreams_headers(
    nursery: trio.Nursery,
) -> None:
    upstream = Upstream(responder=cors_aware_upstream)
    await nursery.start(upstream.serve)
    gw = await gateway_with(nursery, upstream, open={"cors": {}})
    resp = await request(gw, target="/open", headers=[("Origin", "https://app.example")])
    assert resp.status == 200
    assert resp.body == b"from upstream"
    assert resp.header(b"x-upstream") == b"yes"
    assert cors(resp) == {
        b"access-control-allow-origin": [b"*"],
        b"access-control-allow-methods": [b"*"],
        b"access-control-allow-headers": [b"*"],
        b"access-control-max-age": [b"5"],
    }
    assert resp.header(b"vary") is None  # `*` does not depend on the Origin
    # Without an Origin the headers are the same (`*` matches an absent one too).
    resp = await request(gw, target="/open")
    assert cors(resp)[b"access-control-allow-origin"] == [b"*"]


async def test_preflight_is_answered_before_authentication(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    plugins = {
        "key-auth": {},
        "cors": {
            "allow_origins": "https://app.example,https://admin.example",
            "allow_methods": "GET,POST",
            "allow_headers": "apikey,content-type",
            "expose_headers": "X-RateLimit-Remaining",
            "max_age": 600,
            "allow_credential": True,
        },
    }
    gw = await gateway_with(nursery, upstream, api=plugins)
    preflight = [
        ("Origin", "https://admin.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "apikey"),
    ]
    resp = await request(gw, method="OPTIONS", target="/api", headers=preflight)
    assert resp.status == 200
    assert resp.body == b""
    assert not upstream.received  # the gateway answered the preflight itself
    assert cors(resp) == {
        b"access-control-allow-origin": [b"https://admin.example"],
        b"access-control-allow-methods": [b"GET,POST"],
        b"access-control-allow-headers": [b"apikey,content-type"],
        b"access-control-expose-headers": [b"X-RateLimit-Remaining"],
        b"access-control-max-age": [b"600"],
        b"access-control-allow-credentials": [b"true"],
    }
    assert resp.header(b"vary") == b"Origin"
    # The 401 of a request without a key carries them too, so the browser can read it.
    resp = await request(gw, target="/api", headers=[("Origin", "https://app.example")])
    assert resp.status == 401
    assert cors(resp)[b"access-control-allow-origin"] == [b"https://app.example"]
    resp = await request(
        gw, target="/api", headers=[("Origin", "https://app.example"), ("apikey", "app-key")]
    )
    assert resp.status == 200
    assert cors(resp)[b"access-control-allow-origin"] == [b"https://app.example"]
    assert upstream.received[-1].header(b"x-consumer-username") == b"app"
    # An origin not in the list gets no CORS header at all, but still `Vary: Origin`.
    resp = await request(
        gw, target="/api", headers=[("Origin", "https://evil.example"), ("apikey", "app-key")]
    )
    assert resp.status == 200
    assert cors(resp) == {}
    assert resp.header(b"vary") == b"Origin"


async def test_single_origin_regex_forced_wildcards_and_timing(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    gw = await gateway_with(
        nursery,
        upstream,
        one={"cors": {"allow_origins": "https://app.example"}},
        regex={
            "cors": {
                "allow_origins_by_regex": [r"^https://[a-z]+\.app\.example$"],
                "allow_origins": "https://ignored.example",
                "timing_allow_origins_by_regex": [r"^https://t[a-z]*\.app\.example$"],
                "timing_allow_origins": "https://ignored.example",
            }
        },
        forced={
            "cors": {
                "allow_origins": "**",
                "allow_methods": "**",
                "allow_headers": "**",
                "allow_credential": True,
                "expose_headers": "",
                "timing_allow_origins": "https://app.example",
            }
        },
    )
    resp = await request(gw, target="/one", headers=[("Origin", "https://app.example")])
    assert cors(resp)[b"access-control-allow-origin"] == [b"https://app.example"]
    resp = await request(gw, target="/one", headers=[("Origin", "https://other.example")])
    assert cors(resp) == {}

    resp = await request(gw, target="/regex", headers=[("Origin", "https://tools.app.example")])
    assert cors(resp)[b"access-control-allow-origin"] == [b"https://tools.app.example"]
    assert cors(resp)[b"timing-allow-origin"] == [b"https://tools.app.example"]
    resp = await request(gw, target="/regex", headers=[("Origin", "https://docs.app.example")])
    assert cors(resp)[b"access-control-allow-origin"] == [b"https://docs.app.example"]
    assert b"timing-allow-origin" not in cors(resp)
    for origin in ("https://ignored.example", "https://x.app.example.evil"):
        resp = await request(gw, target="/regex", headers=[("Origin", origin)])
        assert cors(resp) == {}

    preflight = [("Origin", "https://site.example"), ("Access-Control-Request-Headers", "x-a,x-b")]
    resp = await request(gw, method="OPTIONS", target="/forced", headers=preflight)
    assert resp.status == 200
    assert cors(resp) == {
        b"access-control-allow-origin": [b"https://site.example"],
        b"access-control-allow-methods": [b"GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE"],
        b"access-control-allow-headers": [b"x-a,x-b"],
        b"access-control-max-age": [b"5"],
        b"access-control-allow-credentials": [b"true"],
    }
    resp = await request(gw, target="/forced", headers=[("Origin", "https://app.example")])
    assert cors(resp)[b"timing-allow-origin"] == [b"https://app.example"]
    # `**` without an Origin: `*`; `**` headers without the request's list: none.
    resp = await request(gw, target="/forced")
    assert cors(resp)[b"access-control-allow-origin"] == [b"*"]
    assert b"access-control-allow-headers" not in cors(resp)


async def test_origins_from_plugin_metadata(nursery: trio.Nursery, upstream: Upstream) -> None:
    """`allow_origins_by_metadata`: named origin lists of `plugin_metadata` cors, the first
    that allows the Origin wins; when none does, the conf's own `allow_origins` is asked
    only if it is set to something other than `*` (APISIX's rule)."""
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "shared", "uri": "/shared", "upstream": node,
         "plugins": {"cors": {"allow_origins_by_metadata": ["partners", "shop"]}}},
        {"id": "fallback", "uri": "/fallback", "upstream": node,
         "plugins": {"cors": {"allow_origins_by_metadata": ["shop"],
                              "allow_origins": "https://own.example"}}},
    ]  # fmt: skip
    metadata = [
        {
            "id": "cors",
            "allow_origins": {
                "partners": "https://a.example,https://b.example",
                "shop": "https://shop.example",
            },
        }
    ]
    _, gw = await start_gateway(nursery, config_for(routes, plugin_metadata=metadata))

    async def allowed(path: str, origin: str) -> list[bytes] | None:
        resp = await request(gw, target=path, headers=[("origin", origin)])
        assert resp.status == 200
        return cors(resp).get(b"access-control-allow-origin")

    assert await allowed("/shared", "https://b.example") == [b"https://b.example"]
    assert await allowed("/shared", "https://shop.example") == [b"https://shop.example"]
    assert await allowed("/shared", "https://evil.example") is None
    assert await allowed("/fallback", "https://shop.example") == [b"https://shop.example"]
    assert await allowed("/fallback", "https://own.example") == [b"https://own.example"]
    assert await allowed("/fallback", "https://a.example") is None
