"""redirect: the gateway answers with a `Location` instead of proxying, as APISIX's plugin
does (`uri` with variables, `regex_uri`, `http_to_https`, `append_query_string`,
`encode_uri`)."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import Upstream, config_for, free_port, request, start_gateway
from tests.tls_certs import Authority


async def test_redirects_answer_without_the_upstream(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    node = {"nodes": {upstream.address: 1}}

    def route(rid: str, redirect: dict[str, Any], **plugins: Any) -> dict[str, Any]:
        return {
            "id": rid,
            "uri": f"/{rid}/*",
            "upstream": node,
            "plugins": {"redirect": redirect, **plugins},
        }

    routes = [
        route("fixed", {"uri": "/new/place"}),
        route("vars", {"uri": "https://example.com${uri}/x?from=$arg_who", "ret_code": 301}),
        route("regex", {"regex_uri": ["^/regex/old/(.*)", "/regex/new/$1"], "ret_code": 307}),
        route("https", {"http_to_https": True}),
        route("query", {"uri": "/q/target", "append_query_string": True}),
        route("query2", {"uri": "/q/target?x=1", "append_query_string": True}),
        route("encoded", {"uri": "/a b/$arg_v", "encode_uri": True}),
        route("keyed", {"uri": "/after-auth"}, **{"key-auth": {}}),
    ]
    consumers = [{"username": "a", "plugins": {"key-auth": {"key": "a-key"}}}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))

    async def location(
        target: str, method: str = "GET", headers: list[tuple[str, str]] | None = None
    ) -> tuple[int, bytes | None]:
        resp = await request(gw, method=method, target=target, headers=headers)
        return resp.status, resp.header(b"location")

    assert await location("/fixed/a?b=1") == (302, b"/new/place")
    resp = await request(gw, target="/fixed/a")
    assert b"302 Found" in resp.body
    assert resp.header(b"content-type") == b"text/html"
    # Variables: `${uri}` is the normalised path, `$arg_who` the argument as sent.
    assert await location("/vars/p/../q?who=me%21") == (
        301,
        b"https://example.com/vars/q/x?from=me%21",
    )
    # regex_uri: the match replaced; no match goes to the upstream.
    assert await location("/regex/old/a/b") == (307, b"/regex/new/a/b")
    before = len(upstream.received)
    assert await location("/regex/other") == (200, None)
    assert len(upstream.received) == before + 1
    # http_to_https: 301 for GET and HEAD, 308 for others, with the target as sent.
    https = b"https://gateway.test/https/a?x=%20"
    assert await location("/https/a?x=%20") == (301, https)
    assert await location("/https/a?x=%20", "HEAD") == (301, https)
    assert await location("/https/a?x=%20", "POST") == (308, https)
    assert await location("/https/a", headers=[("Host", "Shop.Example:8080")]) == (
        301,
        b"https://shop.example/https/a",
    )
    # A TLS-terminating proxy in front says the request already came over https.
    before = len(upstream.received)
    assert await location("/https/a", headers=[("X-Forwarded-Proto", "HTTPS")]) == (200, None)
    assert len(upstream.received) == before + 1
    # append_query_string: `?` or `&` as the new URI needs.
    assert await location("/query/a?k=v&k2") == (302, b"/q/target?k=v&k2")
    assert await location("/query/a") == (302, b"/q/target")
    assert await location("/query2/a?k=v") == (302, b"/q/target?x=1&k=v")
    # encode_uri: what a URI cannot carry is percent-encoded, reserved characters stay.
    assert await location("/encoded/z?v=%C3%A9/x") == (302, b"/a%20b/%C3%A9/x")
    # Authentication (2500) runs before redirect (900).
    assert await location("/keyed/x") == (401, None)
    assert await location("/keyed/x", headers=[("apikey", "a-key")]) == (302, b"/after-auth")
    # Nothing above but the two pass-throughs reached the upstream.
    assert all(r.target.startswith((b"/regex/other", b"/https/a")) for r in upstream.received)


async def test_http_to_https_names_the_https_port(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """As APISIX: `plugin_attr.redirect.https_port`, else the first `server.ssl_listen`
    port, goes into the Location unless it is 443."""
    node = {"nodes": {upstream.address: 1}}
    route = {
        "id": "r",
        "uri": "/*",
        "upstream": node,
        "plugins": {"redirect": {"http_to_https": True}},
    }
    tls_port = free_port()
    ca = Authority()
    cert, key = ca.issue("gateway.test")
    ssls = [{"cert": cert, "key": key, "sni": "gateway.test"}]
    server = {"ssl_listen": [f"127.0.0.1:{tls_port}", f"127.0.0.1:{free_port()}"]}
    _, gw = await start_gateway(nursery, config_for([route], server=server, ssls=ssls))
    resp = await request(gw, target="/a?b=1")
    assert resp.header(b"location") == f"https://gateway.test:{tls_port}/a?b=1".encode()
    attr = {"redirect": {"https_port": 8443}}
    server = {"ssl_listen": f"127.0.0.1:{free_port()}"}
    _, gw = await start_gateway(
        nursery, config_for([route], server=server, ssls=ssls, plugin_attr=attr)
    )
    assert (await request(gw, target="/a")).header(b"location") == b"https://gateway.test:8443/a"
    attr = {"redirect": {"https_port": 443}}
    server = {"ssl_listen": f"127.0.0.1:{free_port()}"}
    _, gw = await start_gateway(
        nursery, config_for([route], server=server, ssls=ssls, plugin_attr=attr)
    )
    assert (await request(gw, target="/a")).header(b"location") == b"https://gateway.test/a"
