"""csrf: unsafe methods need the token the gateway set as a cookie, sent back in a header
(double submit), as APISIX's plugin checks it."""

from __future__ import annotations

import base64
import json

import trio

from tests.helpers import Upstream, config_for, request, start_gateway

NAME = "apisix-csrf-token"


def token_of(set_cookie: bytes) -> str:
    name, _, rest = set_cookie.decode().partition("=")
    assert name == NAME
    return rest.partition(";")[0]


async def test_double_submit(nursery: trio.Nursery, upstream: Upstream) -> None:
    routes = [
        {"id": "r", "uri": "/r", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"csrf": {"key": "server-side-secret", "expires": 3600}}},
        {"id": "short", "uri": "/short", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"csrf": {"key": "server-side-secret", "expires": 1}}},
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    # A safe method passes and gets a token cookie.
    resp = await request(gw, target="/r")
    assert resp.status == 200
    cookie = resp.header(b"set-cookie")
    assert cookie is not None
    assert b"path=/" in cookie.lower()
    assert b"samesite=lax" in cookie.lower()
    assert b"server-side-secret" not in cookie
    token = token_of(cookie)
    other = token_of((await request(gw, target="/r")).header(b"set-cookie") or b"")
    assert other != token
    before = len(upstream.received)

    async def post(*headers: tuple[str, str]) -> tuple[int, object]:
        resp = await request(gw, "POST", "/r", headers=list(headers), body=b"x")
        return resp.status, resp.json() if resp.status != 200 else None

    cookie_header = ("Cookie", f"{NAME}={token}")
    assert await post(cookie_header) == (401, {"error_msg": "no csrf token in headers"})
    assert await post((NAME, token)) == (401, {"error_msg": "no csrf cookie"})
    assert await post(cookie_header, (NAME, other)) == (401, {"error_msg": "csrf token mismatch"})
    # A token made up without the key: refused.
    forged = base64.b64encode(
        json.dumps({"random": 0.5, "expires": 9999999999, "sign": "00"}).encode()
    ).decode()
    assert await post(("Cookie", f"{NAME}={forged}"), (NAME, forged)) == (
        401,
        {"error_msg": "Failed to verify the CSRF token signature"},
    )
    assert len(upstream.received) == before
    assert await post(cookie_header, (NAME, token)) == (200, None)
    assert len(upstream.received) == before + 1

    # An expired token: refused.
    old = token_of((await request(gw, target="/short")).header(b"set-cookie") or b"")
    with trio.fail_after(10):
        while True:
            resp = await request(
                gw, "POST", "/short", headers=[("Cookie", f"{NAME}={old}"), (NAME, old)], body=b"x"
            )
            if resp.status == 401:
                break
            await trio.sleep(0.2)
    assert resp.json() == {"error_msg": "Failed to verify the CSRF token expiration"}
