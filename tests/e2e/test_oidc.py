"""openid-connect against a real provider (oidc-provider-mock in its own process): tokens
come from its authorization-code flow; its ID tokens are RS256 JWTs signed with the key its
JWKS publishes, its access tokens are opaque."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
import httpx
import pytest
import trio

from tests.helpers import Upstream, config_for, raw_serve, request, start_gateway
from tests.oidc_provider import OidcProvider


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("idp"))
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def idp2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(tmp_path_factory.mktemp("idp2"))
    provider.start()
    yield provider
    provider.stop()


async def tokens(provider: OidcProvider, sub: str, **kw: Any) -> dict[str, Any]:
    return await trio.to_thread.run_sync(lambda: provider.tokens(sub, **kw))


def oidc(provider: OidcProvider, **extra: Any) -> dict[str, Any]:
    return {
        "discovery": provider.discovery,
        "client_id": "gateway",
        "client_secret": "client-secret",
        "bearer_only": True,
        "realm": "pets",
        **extra,
    }


def route(
    upstream: Upstream, plugins: dict[str, Any], uri: str = "/*", route_id: str = "r"
) -> dict[str, Any]:
    return {
        "id": route_id,
        "uri": uri,
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": plugins,
    }


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


INVALID = b'Bearer realm="pets", error="invalid_token"'


async def test_valid_id_token_and_what_the_upstream_gets(
    nursery: trio.Nursery, upstream: Upstream, idp: OidcProvider
) -> None:
    _, gw = await start_gateway(
        nursery, config_for([route(upstream, {"openid-connect": oidc(idp)})])
    )
    token = (await tokens(idp, "alice"))["id_token"]
    resp = await request(gw, headers=bearer(token))
    assert resp.status == 200
    got = upstream.received[-1]
    assert got.header(b"x-access-token") == token.encode()
    userinfo = json.loads(base64.b64decode(got.header(b"x-userinfo") or b""))
    assert userinfo["sub"] == "alice"
    assert got.header(b"x-consumer-username") is None  # no consumer_claim: APISIX behaviour

    missing = await request(gw)
    assert (missing.status, missing.header(b"www-authenticate")) == (401, b'Bearer realm="pets"')
    assert missing.body == b'{"message":"Missing bearer token in request"}\n'
    header, payload, signature = token.split(".")
    tampered_payload = (
        base64.urlsafe_b64encode(
            json.dumps(
                {**json.loads(base64.urlsafe_b64decode(payload + "==")), "sub": "admin"}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    for bad in (f"{header}.{tampered_payload}.{signature}", token[:-4] + "AAAA", "not-a-token.x.y"):
        resp = await request(gw, headers=bearer(bad))
        assert (resp.status, resp.header(b"www-authenticate")) == (401, INVALID)
        assert resp.body == b'{"message":"Invalid bearer token"}\n'
    assert len(upstream.received) == 1


async def test_other_provider_audience_and_scopes(
    nursery: trio.Nursery, upstream: Upstream, idp: OidcProvider, idp2: OidcProvider
) -> None:
    strict = oidc(
        idp, claim_validator={"audience": {"required": True, "match_with_client_id": True}}
    )
    routes = [
        route(upstream, {"openid-connect": strict}, "/strict", "strict"),
        route(
            upstream, {"openid-connect": oidc(idp, required_scopes=["admin"])}, "/admin", "admin"
        ),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    good = (await tokens(idp, "alice"))["id_token"]
    assert (await request(gw, target="/strict", headers=bearer(good))).status == 200
    other_provider = (await tokens(idp2, "alice"))["id_token"]
    assert (await request(gw, target="/strict", headers=bearer(other_provider))).status == 401
    other_client = (await tokens(idp, "alice", client_id="someone-else"))["id_token"]
    assert (await request(gw, target="/strict", headers=bearer(other_client))).status == 401
    assert (
        await request(gw, target="/admin", headers=bearer(good))
    ).status == 401  # no admin scope


async def test_expired_token(nursery: trio.Nursery, upstream: Upstream, tmp_path: Path) -> None:
    short = OidcProvider(tmp_path / "short", token_max_age=1)
    short.start()
    try:
        _, gw = await start_gateway(
            nursery, config_for([route(upstream, {"openid-connect": oidc(short)})])
        )
        token = (await tokens(short, "alice"))["id_token"]
        await trio.sleep(2.2)  # the token's own lifetime, 1 s, must pass
        resp = await request(gw, headers=bearer(token))
        assert (resp.status, resp.header(b"www-authenticate")) == (401, INVALID)
    finally:
        short.stop()


async def test_key_rotation_and_provider_down(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    rotating = OidcProvider(tmp_path / "rotating")
    rotating.start()
    try:
        _, gw = await start_gateway(
            nursery, config_for([route(upstream, {"openid-connect": oidc(rotating)})])
        )
        old = (await tokens(rotating, "alice"))["id_token"]
        assert (await request(gw, headers=bearer(old))).status == 200
        rotating.stop()
        # Provider down: a token verifiable with the cached key still passes...
        assert (await request(gw, headers=bearer(old))).status == 200
        rotating.start()  # new process, new signing key, same URL
        new = (await tokens(rotating, "alice"))["id_token"]
        # ...and the new key is picked up without a restart; the old key is gone.
        assert (await request(gw, headers=bearer(new))).status == 200
        assert (await request(gw, headers=bearer(old))).status == 401
    finally:
        rotating.stop()


async def test_provider_unreachable_is_503_not_a_hang(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    down = OidcProvider(tmp_path / "down")  # never started
    _, gw = await start_gateway(
        nursery, config_for([route(upstream, {"openid-connect": oidc(down, timeout=1)})])
    )
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
    with trio.fail_after(10):
        resp = await request(gw, headers=bearer(token))
    assert resp.status == 503
    assert upstream.received == []


async def test_idp_users_as_consumers(
    nursery: trio.Nursery, upstream: Upstream, idp: OidcProvider
) -> None:
    consumers = [
        {
            "username": "alice",
            "labels": {"team": "pets", "custom_id": "a-1"},
            "plugins": {"limit-count": {"count": 2, "time_window": 60, "rejected_code": 429}},
        }
    ]
    plugins = {
        "openid-connect": oidc(idp, consumer_claim="sub"),
        "attach-consumer-label": {"headers": {"X-Team": "$team"}},
    }
    optional = {"openid-connect": oidc(idp, consumer_claim="sub", consumer_optional=True)}
    routes = [
        route(upstream, plugins, "/pets/*", "pets"),
        route(upstream, optional, "/open/*", "open"),
    ]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    alice = (await tokens(idp, "alice"))["id_token"]
    bob = (await tokens(idp, "bob"))["id_token"]
    statuses = [
        (await request(gw, target="/pets/1", headers=bearer(alice))).status for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    got = upstream.received[-1]
    assert got.header(b"x-consumer-username") == b"alice"
    assert got.header(b"x-consumer-custom-id") == b"a-1"
    assert got.header(b"x-team") == b"pets"
    unmapped = await request(gw, target="/pets/1", headers=bearer(bob))
    assert unmapped.status == 401
    assert unmapped.body == b'{"message":"The consumer is not recognized"}\n'
    assert (await request(gw, target="/open/1", headers=bearer(bob))).status == 200
    assert upstream.received[-1].header(b"x-consumer-username") is None


async def test_several_providers_all_and_any(
    nursery: trio.Nursery, upstream: Upstream, idp: OidcProvider, idp2: OidcProvider
) -> None:
    both = {
        "providers": [oidc(idp, consumer_claim="sub"), oidc(idp2, token_header="X-Partner-Token")],
        "mode": "all",
    }
    either = {"providers": [oidc(idp), oidc(idp2, token_header="X-Partner-Token")], "mode": "any"}
    routes = [
        route(upstream, {"openid-connect": both}, "/all", "all"),
        route(upstream, {"openid-connect": either}, "/any", "any"),
    ]
    consumers = [{"username": "alice"}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))
    first = (await tokens(idp, "alice"))["id_token"]
    second = (await tokens(idp2, "partner"))["id_token"]
    both_headers = [*bearer(first), ("X-Partner-Token", second)]
    assert (await request(gw, target="/all", headers=both_headers)).status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"alice"
    assert (await request(gw, target="/all", headers=bearer(first))).status == 401
    assert (await request(gw, target="/all", headers=[("X-Partner-Token", second)])).status == 401
    swapped = [*bearer(second), ("X-Partner-Token", first)]
    assert (await request(gw, target="/all", headers=swapped)).status == 401
    assert (await request(gw, target="/any", headers=[("X-Partner-Token", second)])).status == 200
    assert (await request(gw, target="/any", headers=bearer(first))).status == 200
    assert (await request(gw, target="/any")).status == 401


async def test_openid_connect_inside_multi_auth(
    nursery: trio.Nursery, upstream: Upstream, idp: OidcProvider
) -> None:
    consumers = [
        {
            "username": "robot",
            "credentials": [{"id": "k", "plugins": {"key-auth": {"key": "robot-key"}}}],
        },
        {"username": "alice"},
    ]
    plugins = {
        "multi-auth": {
            "auth_plugins": [{"key-auth": {}}, {"openid-connect": oidc(idp, consumer_claim="sub")}]
        }
    }
    _, gw = await start_gateway(
        nursery, config_for([route(upstream, plugins)], consumers=consumers)
    )
    assert (await request(gw, headers=[("apikey", "robot-key")])).status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"robot"
    token = (await tokens(idp, "alice"))["id_token"]
    assert (await request(gw, headers=bearer(token))).status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"alice"
    assert (await request(gw)).status == 401


async def test_opaque_tokens_through_introspection(
    nursery: trio.Nursery, upstream: Upstream, idp: OidcProvider
) -> None:
    """oidc-provider-mock has no RFC 7662 endpoint. This endpoint answers RFC 7662 with the
    provider's own verdict on the token (its userinfo endpoint accepts it or not)."""
    calls: list[bytes] = []

    async def introspection(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = bytearray()
        auth = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                auth = dict(event.headers).get(b"authorization", b"")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        calls.append(auth)
        token = dict(pair.split("=", 1) for pair in body.decode().split("&"))["token"]
        active = await trio.to_thread.run_sync(idp.userinfo_ok, token)
        doc = (
            {"active": active, "scope": "openid email pets:read", "sub": "alice"}
            if active
            else {"active": False}
        )
        payload = json.dumps(doc).encode()
        await stream.send_all(
            conn.send(
                h11.Response(
                    status_code=200,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(payload))),
                    ],
                )
            )
            + conn.send(h11.Data(data=payload))
            + conn.send(h11.EndOfMessage())
        )
        await stream.aclose()

    port = await nursery.start(raw_serve, introspection)
    conf = oidc(
        idp,
        use_jwks=False,
        introspection_endpoint=f"http://127.0.0.1:{port}/introspect",
        required_scopes=["pets:read"],
    )
    _, gw = await start_gateway(nursery, config_for([route(upstream, {"openid-connect": conf})]))
    access = (await tokens(idp, "alice"))["access_token"]
    assert access.count(".") != 2  # opaque
    assert (await request(gw, headers=bearer(access))).status == 200
    assert (await request(gw, headers=bearer(access))).status == 200
    assert len(calls) == 1  # the second answer came from the cache
    assert calls[0].startswith(b"Basic ")
    assert (await request(gw, headers=bearer("opaque-but-unknown"))).status == 401


async def test_bogus_kids_cannot_hammer_the_provider(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    provider = OidcProvider(tmp_path / "flood")
    provider.start()
    try:
        conf = oidc(provider, hide_credentials=True, access_token_in_authorization_header=True)
        _, gw = await start_gateway(
            nursery, config_for([route(upstream, {"openid-connect": conf})])
        )
        token = (await tokens(provider, "alice"))["id_token"]
        assert (await request(gw, headers=bearer(token))).status == 200
        # hide_credentials removed the client's header; the token went on as Authorization.
        assert upstream.received[-1].header(b"authorization") == f"Bearer {token}".encode()
        log = provider.workdir / "provider.log"
        before = log.read_text().count("GET /jwks")
        _, payload, signature = token.split(".")
        for i in range(30):
            header = base64.urlsafe_b64encode(
                json.dumps({"alg": "RS256", "kid": f"bogus-{i}"}).encode()
            ).rstrip(b"=")
            forged = f"{header.decode()}.{payload}.{signature}"
            assert (await request(gw, headers=bearer(forged))).status == 401
        fetched = log.read_text().count("GET /jwks") - before
        assert fetched <= 1, fetched  # one kid-triggered refresh per 10 s, not one per token
    finally:
        provider.stop()


# --- the browser flow (bearer_only: false) ----------------------------------------------


class Browser:
    """A browser's cookie jar for the gateway's host, and its requests."""

    def __init__(self, gw: str) -> None:
        self.gw = gw
        self.jar: dict[str, str] = {}

    async def get(self, target: str) -> Any:
        cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        resp = await request(self.gw, target=target, headers=[("cookie", cookie)] if cookie else [])
        for name, value in resp.headers:
            if name == b"set-cookie":
                pair, _, attributes = value.decode().partition(";")
                key, _, val = pair.partition("=")
                if "Max-Age=0" in attributes:
                    self.jar.pop(key, None)
                else:
                    self.jar[key] = val
        return resp


def idp_login(location: str, sub: str) -> str:
    """The provider's login form, submitted as `sub`: where it sends the browser back."""
    answer = httpx.post(location, data={"sub": sub}, timeout=10)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def browser_login(provider: OidcProvider, **extra: Any) -> dict[str, Any]:
    return oidc(
        provider,
        bearer_only=False,
        session={"secret": "a-session-secret-of-32-characters"},
        **extra,
    )


async def test_browser_login_from_redirect_to_session_to_logout(
    nursery: trio.Nursery, upstream: Upstream, idp: OidcProvider
) -> None:
    """APISIX's `bearer_only: false`: no session sends the browser to the provider's login;
    the callback's code is exchanged, the ID token verified, and the session cookie then
    lets the browser through with its tokens passed upstream; logout ends it."""
    conf = browser_login(idp, redirect_uri="/callback", use_pkce=True, use_nonce=True)
    _, gw = await start_gateway(nursery, config_for([route(upstream, {"openid-connect": conf})]))
    browser = Browser(gw)

    first = await browser.get("/app/page?x=1")
    assert first.status == 302
    location = first.header(b"location").decode()
    assert location.startswith(f"{idp.base}/oauth2/authorize?")
    params = parse_qs(urlsplit(location).query)
    assert params["redirect_uri"] == ["http://gateway.test/callback"]
    assert params["client_id"] == ["gateway"]
    assert params["scope"] == ["openid"]
    assert params["code_challenge_method"] == ["S256"]
    assert {"state", "nonce", "code_challenge"} <= set(params)
    set_cookie = first.header(b"set-cookie").decode()
    assert set_cookie.startswith("session=")
    assert "HttpOnly" in set_cookie
    assert upstream.received == []

    back = await trio.to_thread.run_sync(idp_login, location, "alice")
    callback = urlsplit(back)
    assert callback.path == "/callback"
    # The callback without the browser's cookie, or with another state, completes nothing.
    stranger = Browser(gw)
    assert (await stranger.get(f"/callback?{callback.query}")).status == 401
    forged = Browser(gw)
    forged.jar = dict(browser.jar)
    other_state = callback.query.replace(params["state"][0], "forged-state")
    assert (await forged.get(f"/callback?{other_state}")).status == 401

    done = await browser.get(f"/callback?{callback.query}")
    assert done.status == 302
    assert done.header(b"location") == b"/app/page?x=1"
    assert upstream.received == []

    page = await browser.get("/app/page?x=1")
    assert page.status == 200
    seen = upstream.received[-1]
    assert seen.target == b"/app/page?x=1"
    access_token = seen.header(b"x-access-token").decode()
    assert await trio.to_thread.run_sync(idp.userinfo_ok, access_token)
    id_claims = json.loads(base64.b64decode(seen.header(b"x-id-token")))
    assert id_claims["sub"] == "alice"
    assert id_claims["aud"] == "gateway" or "gateway" in id_claims["aud"]
    assert json.loads(base64.b64decode(seen.header(b"x-userinfo")))["sub"] == "alice"

    # A tampered session is no session: back to the login.
    tampered = Browser(gw)
    tampered.jar = {k: v[:-4] + "AAAA" for k, v in browser.jar.items()}
    assert (await tampered.get("/app/page")).status == 302

    out = await browser.get("/logout")
    assert out.status == 302
    logout = urlsplit(out.header(b"location").decode())
    assert f"{idp.base}{logout.path}".endswith("/oauth2/end_session")
    assert "id_token_hint" in parse_qs(logout.query)
    assert browser.jar == {}
    assert (await browser.get("/app/page")).status == 302
    assert len(upstream.received) == 1


async def test_browser_session_renews_its_access_token_and_unauth_actions(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    """An access token past its `expires_in` is renewed with the refresh token (the new
    session cookie comes with the response); `unauth_action` deny is 401, pass lets the
    request through without identity headers."""
    # Tokens live 4 s: the login (the ID token checked at the callback) has that long on a
    # loaded machine, then the test waits the access token out.
    provider = OidcProvider(tmp_path / "short", token_max_age=4)
    await trio.to_thread.run_sync(provider.start)
    try:
        routes = [
            route(upstream, {"openid-connect": browser_login(provider)}, uri="/app/*"),
            route(
                upstream,
                {"openid-connect": browser_login(provider, unauth_action="deny")},
                uri="/deny/*",
                route_id="deny",
            ),
            route(
                upstream,
                {"openid-connect": browser_login(provider, unauth_action="pass")},
                uri="/pass/*",
                route_id="pass",
            ),
        ]
        _, gw = await start_gateway(nursery, config_for(routes))
        browser = Browser(gw)
        first = await browser.get("/app/x")
        location = first.header(b"location").decode()
        # APISIX's default callback: the request's path with /.apisix/redirect appended.
        redirect_uri = parse_qs(urlsplit(location).query)["redirect_uri"][0]
        assert redirect_uri == "http://gateway.test/app/x/.apisix/redirect"
        back = urlsplit(await trio.to_thread.run_sync(idp_login, location, "bob"))
        assert (await browser.get(f"{back.path}?{back.query}")).status == 302
        assert (await browser.get("/app/x")).status == 200
        first_token = upstream.received[-1].header(b"x-access-token")
        before = dict(browser.jar)
        await trio.sleep(4.5)  # past the access token's expires_in (4 s)
        renewed = await browser.get("/app/x")
        assert renewed.status == 200
        assert renewed.header(b"set-cookie") is not None
        assert browser.jar != before
        second_token = upstream.received[-1].header(b"x-access-token")
        assert second_token != first_token
        assert await trio.to_thread.run_sync(provider.userinfo_ok, second_token.decode())

        assert (await request(gw, target="/deny/x")).status == 401
        passed = await request(gw, target="/pass/x")
        assert passed.status == 200
        assert upstream.received[-1].header(b"x-access-token") is None
    finally:
        await trio.to_thread.run_sync(provider.stop)
