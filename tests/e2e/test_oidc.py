"""openid-connect against a real provider (oidc-provider-mock in its own process): tokens
come from its authorization-code flow; its ID tokens are RS256 JWTs signed with the key its
JWKS publishes, its access tokens are opaque."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
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
