"""uri-blocker, ua-restriction and referer-restriction: requests refused by their URI,
User-Agent or Referer, as APISIX's plugins refuse them, before the upstream sees them."""

from __future__ import annotations

from typing import Any

import trio

from tests.helpers import Upstream, config_for, request, start_gateway


async def start(nursery: trio.Nursery, upstream: Upstream, **routes: dict[str, Any]) -> str:
    node = {"nodes": {upstream.address: 1}}
    config = config_for(
        [
            {"id": rid, "uri": f"/{rid}/*", "upstream": node, "plugins": plugins}
            for rid, plugins in routes.items()
        ]
    )
    return (await start_gateway(nursery, config))[1]


async def answer(
    gw: str, upstream: Upstream, target: str, *headers: tuple[str, str]
) -> tuple[int, Any]:
    """The status and JSON body (None when the upstream answered, which is checked)."""
    before = len(upstream.received)
    resp = await request(gw, target=target, headers=list(headers))
    if resp.status == 200:
        assert len(upstream.received) == before + 1
        return 200, None
    assert len(upstream.received) == before
    return resp.status, resp.json()


async def test_uri_blocker(nursery: trio.Nursery, upstream: Upstream) -> None:
    gw = await start(
        nursery,
        upstream,
        plain={"uri-blocker": {"block_rules": [r"\.php$", "^/plain/admin"]}},
        msg={"uri-blocker": {"block_rules": ["secret"], "rejected_code": 410,
                             "rejected_msg": "gone", "case_insensitive": True}},
    )  # fmt: skip
    assert await answer(gw, upstream, "/plain/index.php") == (
        403,
        {"error_msg": "403 Forbidden"},
    )
    assert await answer(gw, upstream, "/plain/admin/x") == (403, {"error_msg": "403 Forbidden"})
    assert (await answer(gw, upstream, "/plain/index.phpx"))[0] == 200
    # The URI as sent, query included: `$request_uri`.
    assert (await answer(gw, upstream, "/msg/a?token=SeCrEt"))[0] == 410
    assert await answer(gw, upstream, "/msg/SECRET") == (410, {"error_msg": "gone"})
    assert (await answer(gw, upstream, "/msg/public"))[0] == 200


async def test_ua_restriction(nursery: trio.Nursery, upstream: Upstream) -> None:
    gw = await start(
        nursery,
        upstream,
        deny={"ua-restriction": {"denylist": ["(Baiduspider)", "curl/7\\..*"]}},
        allow={"ua-restriction": {"allowlist": ["^Mozilla/"], "message": "browsers only",
                                  "bypass_missing": True}},
    )  # fmt: skip
    assert await answer(gw, upstream, "/deny/x", ("User-Agent", "curl/7.88.1")) == (
        403,
        {"message": "Not allowed"},
    )
    assert (await answer(gw, upstream, "/deny/x", ("User-Agent", "Baiduspider+")))[0] == 403
    assert (await answer(gw, upstream, "/deny/x", ("User-Agent", "curl/8.0")))[0] == 200
    # No User-Agent: refused unless bypass_missing.
    assert (await answer(gw, upstream, "/deny/x"))[0] == 403
    assert (await answer(gw, upstream, "/allow/x"))[0] == 200
    assert (await answer(gw, upstream, "/allow/x", ("User-Agent", "Mozilla/5.0")))[0] == 200
    assert await answer(gw, upstream, "/allow/x", ("User-Agent", "python-requests")) == (
        403,
        {"message": "browsers only"},
    )


async def test_referer_restriction(nursery: trio.Nursery, upstream: Upstream) -> None:
    gw = await start(
        nursery,
        upstream,
        white={"referer-restriction": {"whitelist": ["shop.example", "*.cdn.example"]}},
        black={"referer-restriction": {"blacklist": ["evil.example"], "bypass_missing": True,
                                       "message": "no hotlinking"}},
    )  # fmt: skip
    ok = ("Referer", "https://shop.example/cart?x=1")
    assert (await answer(gw, upstream, "/white/a", ok))[0] == 200
    assert (await answer(gw, upstream, "/white/a", ("Referer", "http://img.cdn.example:8080/")))[
        0
    ] == 200
    assert await answer(gw, upstream, "/white/a", ("Referer", "https://cdn.example/")) == (
        403,
        {"message": "Your referer host is not allowed"},
    )
    assert (await answer(gw, upstream, "/white/a"))[0] == 403  # missing, no bypass
    assert await answer(gw, upstream, "/black/a", ("Referer", "http://evil.example/x")) == (
        403,
        {"message": "no hotlinking"},
    )
    assert (await answer(gw, upstream, "/black/a", ("Referer", "http://good.example/")))[0] == 200
    assert (await answer(gw, upstream, "/black/a"))[0] == 200
