"""Authentication contract tests (SPEC sections 3 and 4): each plugin's success path and
every failure row, hide_credentials, identity headers, groups, several plugins per route."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.helpers import Response, Upstream, config_for, exchange_raw, request, start_gateway

HS_SECRET = "a-very-long-hs256-secret-for-the-tests-0123456789"


def route(
    upstream: Upstream, plugins: dict[str, Any], uri: str = "/*", **extra: Any
) -> dict[str, Any]:
    return {
        "id": "r",
        "uri": uri,
        "plugins": plugins,
        "upstream": {"nodes": {upstream.address: 1}},
        **extra,
    }


async def gateway(nursery: trio.Nursery, routes: list[dict[str, Any]], **top: Any) -> str:
    _, address = await start_gateway(nursery, config_for(routes, **top))
    return address


def assert_401(resp: Response, message: str, challenge: bytes) -> None:
    assert resp.status == 401
    assert resp.body == json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n"
    assert resp.header(b"www-authenticate") == challenge


def consumer(
    name: str, *credentials: tuple[str, str, dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "username": name,
        "credentials": [
            {"id": cid, "plugins": {plugin: conf}} for cid, plugin, conf in credentials
        ],
        **extra,
    }


# --- key-auth ---------------------------------------------------------------------------


@pytest.fixture
async def key_gw(nursery: trio.Nursery, upstream: Upstream) -> str:
    consumers = [
        consumer(
            "FetchBot", ("bot-key-1", "key-auth", {"key": "bot-key"}), labels={"team": "bots"}
        ),
        consumer(
            "JohnDoe", ("john-1", "key-auth", {"key": "john-key"}), labels={"custom_id": "j-1"}
        ),
        {"username": "Legacy", "plugins": {"key-auth": {"key": "legacy-key"}}},
        consumer("Unicode", ("u-1", "key-auth", {"key": "clé-ключ"})),
        consumer(
            "Hashed",
            (
                "h-1",
                "key-auth",
                {"key_hash": "sha256:" + hashlib.sha256(b"hashed-key").hexdigest()},
            ),
        ),
    ]
    routes = [
        route(upstream, {"key-auth": {}}, uri="/petstore/*"),
        {
            **route(
                upstream,
                {
                    "key-auth": {
                        "header": "X-Key",
                        "query": "k",
                        "hide_credentials": True,
                        "realm": "pets",
                    }
                },
                uri="/hidden/*",
            ),
            "id": "hidden",
        },
        {"id": "open", "uri": "/open", "upstream": {"nodes": {upstream.address: 1}}},
    ]
    return await gateway(nursery, routes, consumers=consumers)


async def test_key_auth_missing_and_invalid(key_gw: str, upstream: Upstream) -> None:
    assert_401(
        await request(key_gw, target="/petstore/pets"),
        "Missing API key in request",
        b'apikey realm="key"',
    )
    assert_401(
        await request(key_gw, target="/petstore/pets", headers=[("apikey", "bot-ke")]),
        "Invalid API key in request",
        b'apikey realm="key"',
    )
    assert_401(
        await request(key_gw, target="/hidden/x"),
        "Missing API key in request",
        b'apikey realm="pets"',
    )
    assert upstream.received == []


async def test_key_auth_each_key_reaches_upstream_as_its_consumer(
    key_gw: str, upstream: Upstream
) -> None:
    cases = [
        ("bot-key", b"FetchBot", b"bot-key-1", None),
        ("john-key", b"JohnDoe", b"john-1", b"j-1"),
        ("legacy-key", b"Legacy", None, None),
        ("hashed-key", b"Hashed", b"h-1", None),
    ]
    for key, name, cred, custom in cases:
        resp = await request(key_gw, target="/petstore/pets", headers=[("apikey", key)])
        assert resp.status == 200
        got = upstream.received[-1]
        assert got.header(b"x-consumer-username") == name
        assert got.header(b"x-credential-identifier") == cred
        assert got.header(b"x-consumer-custom-id") == custom
        assert got.header(b"apikey") == key.encode()  # not hidden by default


async def test_key_auth_header_before_query_and_query_works(
    key_gw: str, upstream: Upstream
) -> None:
    resp = await request(key_gw, target="/petstore/pets?apikey=john-key&x=1")
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"JohnDoe"
    assert upstream.received[-1].target == b"/petstore/pets?apikey=john-key&x=1"
    resp = await request(
        key_gw, target="/petstore/pets?apikey=john-key", headers=[("apikey", "bot-key")]
    )
    assert upstream.received[-1].header(b"x-consumer-username") == b"FetchBot"
    # A wrong header is not rescued by a right query argument.
    resp = await request(
        key_gw, target="/petstore/pets?apikey=john-key", headers=[("apikey", "nope")]
    )
    assert resp.status == 401


async def test_key_auth_query_key_is_the_bytes_it_encodes(key_gw: str, upstream: Upstream) -> None:
    """A query key is percent-decoded to bytes and compared as such, like a header key: a
    key outside ASCII, sent as UTF-8 escapes (what curl's --data-urlencode or a browser
    sends), matches. Escapes that decode to no configured key are invalid keys, never an
    unanswered connection."""
    resp = await request(key_gw, target="/petstore/a?apikey=" + quote("clé-ключ"))
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"Unicode"
    for arg in ("%E6%97%A5", "%FF", "%C3", "%00"):
        assert_401(
            await request(key_gw, target=f"/petstore/a?apikey={arg}"),
            "Invalid API key in request",
            b'apikey realm="key"',
        )
    assert len(upstream.received) == 1


async def test_key_auth_hide_credentials_strips_only_the_source_used(
    key_gw: str, upstream: Upstream
) -> None:
    assert (
        await request(
            key_gw, target="/hidden/a?x=1", headers=[("X-Key", "bot-key"), ("apikey", "z")]
        )
    ).status == 200
    got = upstream.received[-1]
    assert got.header(b"x-key") is None
    assert got.header(b"apikey") == b"z"
    assert got.target == b"/hidden/a?x=1"
    assert (
        await request(key_gw, target="/hidden/a?x=1&k=bot-key&k2=v", headers=[("X-Key-Other", "1")])
    ).status == 200
    got = upstream.received[-1]
    assert got.target == b"/hidden/a?x=1&k2=v"
    assert got.header(b"x-key-other") == b"1"


async def test_identity_headers_spoofed_copies_removed_on_every_route(
    key_gw: str, upstream: Upstream
) -> None:
    spoof = [
        ("X-Consumer-Username", "admin"),
        ("x-CONSUMER-username", "admin"),
        ("X-Credential-Identifier", "c"),
        ("X-Consumer-Custom-ID", "root"),
    ]
    assert (await request(key_gw, target="/open", headers=spoof)).status == 200
    got = upstream.received[-1]
    names = {n for n, _ in got.headers}
    assert not names & {b"x-consumer-username", b"x-credential-identifier", b"x-consumer-custom-id"}
    assert (
        await request(key_gw, target="/petstore/a", headers=[*spoof, ("apikey", "bot-key")])
    ).status == 200
    got = upstream.received[-1]
    assert [v for n, v in got.headers if n == b"x-consumer-username"] == [b"FetchBot"]
    assert got.header(b"x-consumer-custom-id") is None


@pytest.mark.parametrize(
    "name", ["x_consumer_username", "x-consumer_custom-id", "X_Credential_Identifier"]
)
async def test_identity_headers_spelled_with_underscores_are_refused(
    key_gw: str, upstream: Upstream, name: str
) -> None:
    # SPEC section 7: a `_` spelling that aliases an identity header is a 400, on every route.
    for target, extra in (("/open", []), ("/petstore/a", [("apikey", "bot-key")])):
        resp = await request(key_gw, target=target, headers=[(name, "admin"), *extra])
        assert resp.status == 400
    assert upstream.received == []


# --- basic-auth -------------------------------------------------------------------------


def basic(user: str, password: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())


@pytest.fixture
async def basic_gw(nursery: trio.Nursery, upstream: Upstream) -> str:
    consumers = [
        consumer(
            "alice", ("alice-basic", "basic-auth", {"username": "alice", "password": "p:ss word "})
        )
    ]
    routes = [
        route(upstream, {"basic-auth": {}}, uri="/b/*"),
        {
            **route(
                upstream,
                {"basic-auth": {"hide_credentials": True, "realm": "staff"}},
                uri="/hide/*",
            ),
            "id": "h",
        },
    ]
    return await gateway(nursery, routes, consumers=consumers)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], "Missing authorization in request"),
        ([("Authorization", "Bearer abc")], "Invalid authorization in request"),
        ([("Authorization", "Basic !!!notbase64")], "Invalid authorization in request"),
        (
            [("Authorization", "Basic " + base64.b64encode(b"no-colon").decode())],
            "Invalid authorization in request",
        ),
        ([basic("alice", "wrong")], "Invalid user authorization"),
        ([basic("bob", "p:ss word ")], "Invalid user authorization"),
        ([basic("alice", "p:ss word")], "Invalid user authorization"),  # no whitespace stripping
    ],
)
async def test_basic_auth_failures(
    basic_gw: str, upstream: Upstream, headers: list[tuple[str, str]], expected: str
) -> None:
    assert_401(
        await request(basic_gw, target="/b/x", headers=headers), expected, b'Basic realm="basic"'
    )
    assert upstream.received == []


async def test_basic_auth_success_split_at_first_colon_and_hide(
    basic_gw: str, upstream: Upstream
) -> None:
    user, value = basic("alice", "p:ss word ")
    resp = await request(basic_gw, target="/b/x", headers=[(user, value.replace("Basic", "bAsIc"))])
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"alice"
    assert upstream.received[-1].header(b"authorization") is not None
    assert (
        await request(basic_gw, target="/hide/x", headers=[basic("alice", "p:ss word ")])
    ).status == 200
    assert upstream.received[-1].header(b"authorization") is None
    assert_401(
        await request(basic_gw, target="/hide/x"),
        "Missing authorization in request",
        b'Basic realm="staff"',
    )


# --- jwt-auth ---------------------------------------------------------------------------


def pem_public(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
async def jwt_gw(nursery: trio.Nursery, upstream: Upstream) -> str:
    consumers = [
        consumer("hs", ("hs-1", "jwt-auth", {"key": "hs-key", "secret": HS_SECRET})),
        consumer(
            "hs-grace",
            (
                "g-1",
                "jwt-auth",
                {"key": "grace-key", "secret": HS_SECRET, "lifetime_grace_period": 60},
            ),
        ),
        consumer(
            "b64",
            (
                "b-1",
                "jwt-auth",
                {
                    "key": "b64-key",
                    "algorithm": "HS512",
                    "base64_secret": True,
                    "secret": base64.b64encode(b"\x00\x01" * 40).decode(),
                },
            ),
        ),
        consumer(
            "rsa",
            (
                "rsa-1",
                "jwt-auth",
                {"key": "rsa-key", "algorithm": "RS256", "public_key": pem_public(RSA_KEY)},
            ),
        ),
        consumer(
            "ec",
            (
                "ec-1",
                "jwt-auth",
                {"key": "ec-key", "algorithm": "ES256", "public_key": pem_public(EC_KEY)},
            ),
        ),
        consumer(
            "ed",
            (
                "ed-1",
                "jwt-auth",
                {"key": "ed-key", "algorithm": "EdDSA", "public_key": pem_public(ED_KEY)},
            ),
        ),
    ]
    routes = [
        route(upstream, {"jwt-auth": {}}, uri="/j/*"),
        {
            **route(
                upstream,
                {"jwt-auth": {"claims_to_verify": ["exp", "nbf"], "key_claim_name": "iss"}},
                uri="/strict/*",
            ),
            "id": "s",
        },
        {
            **route(
                upstream,
                {"jwt-auth": {"hide_credentials": True, "query": "tok", "cookie": "sess"}},
                uri="/hide/*",
            ),
            "id": "h",
        },
    ]
    return await gateway(nursery, routes, consumers=consumers)


def hs(claims: dict[str, Any], secret: str = HS_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


async def test_jwt_success_for_every_algorithm_family(jwt_gw: str, upstream: Upstream) -> None:
    now = int(time.time())
    tokens = {
        b"hs": hs({"key": "hs-key", "exp": now + 60}),
        b"b64": jwt.encode({"key": "b64-key"}, b"\x00\x01" * 40, algorithm="HS512"),
        b"rsa": jwt.encode({"key": "rsa-key"}, RSA_KEY, algorithm="RS256"),
        b"ec": jwt.encode({"key": "ec-key"}, EC_KEY, algorithm="ES256"),
        b"ed": jwt.encode({"key": "ed-key"}, ED_KEY, algorithm="EdDSA"),
    }
    for name, token in tokens.items():
        resp = await request(jwt_gw, target="/j/x", headers=bearer(token))
        assert resp.status == 200, (name, resp.body)
        assert upstream.received[-1].header(b"x-consumer-username") == name
    # Without the Bearer prefix, in the query, in a cookie.
    token = tokens[b"hs"]
    assert (await request(jwt_gw, target="/j/x", headers=[("Authorization", token)])).status == 200
    assert (await request(jwt_gw, target=f"/j/x?jwt={token}")).status == 200
    assert (
        await request(jwt_gw, target="/j/x", headers=[("Cookie", f"a=b; jwt={token}")])
    ).status == 200


async def test_jwt_failures(jwt_gw: str, upstream: Upstream) -> None:
    now = int(time.time())
    none_token = jwt.encode({"key": "hs-key"}, None, algorithm="none")
    pub = pem_public(RSA_KEY)
    # An HS256 token "signed" with the RSA public key as the secret: the classic confusion.
    confused = hmac_confusion(pub)
    cases = [
        ([], "Missing JWT token in request"),
        (bearer("not-a-jwt"), "JWT token invalid"),
        (bearer("a.b.c"), "JWT token invalid"),
        (bearer(hs({"sub": "x"})), "missing user key in JWT token"),
        (bearer(hs({"key": "nobody"})), "Invalid user key in JWT token"),
        (bearer(none_token), "failed to verify jwt"),
        (bearer(confused), "failed to verify jwt"),
        (bearer(hs({"key": "hs-key"}, alg="HS384")), "failed to verify jwt"),
        (
            bearer(hs({"key": "hs-key"}, secret="another-secret-that-is-long-enough-000")),
            "failed to verify jwt",
        ),
        (bearer(hs({"key": "hs-key", "exp": now - 5})), "failed to verify jwt"),
        (bearer(hs({"key": "hs-key", "nbf": now + 30})), "failed to verify jwt"),
        (bearer(hs({"key": "hs-key", "exp": "tomorrow"})), "failed to verify jwt"),
        (bearer(hs({"key": "grace-key", "exp": now - 120})), "failed to verify jwt"),
        (bearer(jwt.encode({"key": "rsa-key"}, EC_KEY, algorithm="ES256")), "failed to verify jwt"),
    ]
    for headers, expected in cases:
        assert_401(
            await request(jwt_gw, target="/j/x", headers=headers), expected, b'Bearer realm="jwt"'
        )
    assert upstream.received == []


def hmac_confusion(public_pem: str) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(b'{"key":"rsa-key"}').rstrip(b"=")
    signing = header + b"." + payload
    sig = base64.urlsafe_b64encode(
        hmac.new(public_pem.encode(), signing, hashlib.sha256).digest()
    ).rstrip(b"=")
    return (signing + b"." + sig).decode()


async def test_jwt_grace_period_and_claims_to_verify(jwt_gw: str) -> None:
    now = int(time.time())
    ok = await request(
        jwt_gw,
        target="/j/x",
        headers=bearer(hs({"key": "grace-key", "exp": now - 20, "nbf": now + 20})),
    )
    assert ok.status == 200
    # claims_to_verify makes exp and nbf required; key_claim_name picks another claim.
    missing = await request(
        jwt_gw, target="/strict/x", headers=bearer(hs({"iss": "hs-key", "exp": now + 60}))
    )
    assert missing.status == 401
    full = await request(
        jwt_gw,
        target="/strict/x",
        headers=bearer(hs({"iss": "hs-key", "exp": now + 60, "nbf": now - 1})),
    )
    assert full.status == 200


async def test_jwt_hide_credentials_each_source(jwt_gw: str, upstream: Upstream) -> None:
    token = hs({"key": "hs-key"})
    assert (await request(jwt_gw, target="/hide/x", headers=bearer(token))).status == 200
    assert upstream.received[-1].header(b"authorization") is None
    assert (await request(jwt_gw, target=f"/hide/x?a=1&tok={token}")).status == 200
    assert upstream.received[-1].target == b"/hide/x?a=1"
    assert (
        await request(jwt_gw, target="/hide/x", headers=[("Cookie", f"a=1; sess={token}; b=2")])
    ).status == 200
    assert upstream.received[-1].header(b"cookie") == b"a=1; b=2"


# --- hmac-auth --------------------------------------------------------------------------

HMAC_SECRET = "hmac-secret-key"


def sign(
    method: str,
    target: str,
    headers: dict[str, str],
    names: list[str],
    key_id: str = "hk",
    secret: str = HMAC_SECRET,
    algorithm: str = "hmac-sha256",
) -> str:
    """An independent signer written from the spec: keyId line, then each listed name as
    `@request-target` -> `METHOD target` or `name: value` when present, "\\n"-joined + "\\n"."""
    lower = {k.lower(): v for k, v in headers.items()}
    lines = [key_id]
    for name in names:
        if name == "@request-target":
            lines.append(f"{method} {target}")
        elif name in lower:
            lines.append(f"{name}: {lower[name]}")
    digest = {
        "hmac-sha1": hashlib.sha1,
        "hmac-sha256": hashlib.sha256,
        "hmac-sha512": hashlib.sha512,
    }[algorithm]
    mac = hmac.new(secret.encode(), ("\n".join(lines) + "\n").encode(), digest).digest()
    return (
        f'Signature keyId="{key_id}",algorithm="{algorithm}",headers="{" ".join(names)}",'
        f'signature="{base64.b64encode(mac).decode()}"'
    )


@pytest.fixture
async def hmac_gw(nursery: trio.Nursery, upstream: Upstream) -> str:
    consumers = [
        consumer("signer", ("s-1", "hmac-auth", {"key_id": "hk", "secret_key": HMAC_SECRET}))
    ]
    routes = [
        route(
            upstream,
            {"hmac-auth": {"signed_headers": ["date", "x-custom"], "clock_skew": 30}},
            uri="/h/*",
        ),
        {
            **route(
                upstream,
                {
                    "hmac-auth": {
                        "validate_request_body": True,
                        "max_req_body_size": 64,
                        "hide_credentials": True,
                        "allowed_algorithms": ["hmac-sha512"],
                    }
                },
                uri="/body/*",
            ),
            "id": "body",
        },
    ]
    return await gateway(nursery, routes, consumers=consumers)


def signed(
    method: str,
    target: str,
    names: list[str],
    extra: dict[str, str] | None = None,
    date: float | None = None,
    **kw: Any,
) -> list[tuple[str, str]]:
    headers = {
        "Date": formatdate(date if date is not None else time.time(), usegmt=True),
        "X-Custom": "v1",
        **(extra or {}),
    }
    return [*headers.items(), ("Authorization", sign(method, target, headers, names, **kw))]


async def test_hmac_success_and_failures(hmac_gw: str, upstream: Upstream) -> None:
    names = ["@request-target", "date", "x-custom"]
    ok = await request(hmac_gw, target="/h/a?b=1", headers=signed("GET", "/h/a?b=1", names))
    assert ok.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"signer"
    assert upstream.received[-1].header(b"authorization") is not None
    base = "client request can't be validated"
    challenge = b'hmac realm="hmac"'
    assert_401(
        await request(hmac_gw, target="/h/a"), f"{base}: missing Authorization header", challenge
    )
    assert_401(
        await request(hmac_gw, target="/h/a", headers=[("Authorization", "Basic x")]),
        f"{base}: Authorization header does not start with 'Signature'",
        challenge,
    )
    tampered = signed("GET", "/h/a", names)
    tampered = [(n, "v2" if n == "X-Custom" else v) for n, v in tampered]
    no_date = [h for h in signed("GET", "/h/a", ["@request-target", "x-custom"]) if h[0] != "Date"]
    failures = [
        signed("GET", "/h/a", names, date=time.time() - 120),  # clock skew
        signed("GET", "/h/a", ["@request-target", "x-custom"]),  # Date not signed
        no_date,  # Date missing
        tampered,  # header changed
        signed("GET", "/h/other", names),  # target changed
        signed("GET", "/h/a", names, secret="wrong"),  # wrong secret
        signed("GET", "/h/a", names, key_id="unknown"),  # unknown keyId
        signed("GET", "/h/a", ["@request-target", "date"]),  # x-custom not signed
        [
            ("Date", formatdate(usegmt=True)),
            ("Authorization", 'Signature keyId="hk",algorithm="hmac-sha256"'),
        ],
    ]
    for headers in failures:
        assert_401(await request(hmac_gw, target="/h/a", headers=headers), base, challenge)
    assert len(upstream.received) == 1


async def test_hmac_request_target_is_the_target_as_sent(hmac_gw: str, upstream: Upstream) -> None:
    """`@request-target` signs the path and query the client sent (APISIX's `request_uri`),
    not the normalised path the gateway routes by."""
    names = ["@request-target", "date", "x-custom"]
    sent = "/h/./x/%7Ea?b=1"
    ok = await request(hmac_gw, target=sent, headers=signed("GET", sent, names))
    assert ok.status == 200
    assert upstream.received[-1].target == b"/h/x/~a?b=1"
    normalised = signed("GET", "/h/x/~a?b=1", names)
    assert (await request(hmac_gw, target=sent, headers=normalised)).status == 401


async def test_hmac_body_digest_limit_algorithms_and_hide(hmac_gw: str, upstream: Upstream) -> None:
    body = b"payload"
    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    names = ["@request-target", "date", "digest"]
    headers = signed("POST", "/body/x", names, extra={"Digest": digest}, algorithm="hmac-sha512")
    ok = await request(hmac_gw, "POST", "/body/x", headers=headers, body=body)
    assert ok.status == 200
    got = upstream.received[-1]
    assert got.body == body
    assert got.header(b"authorization") is None
    wrong = await request(hmac_gw, "POST", "/body/x", headers=headers, body=b"payloaX")
    assert wrong.status == 401
    big = b"x" * 100
    big_digest = "SHA-256=" + base64.b64encode(hashlib.sha256(big).digest()).decode()
    too_big = signed(
        "POST", "/body/x", names, extra={"Digest": big_digest}, algorithm="hmac-sha512"
    )
    assert (await request(hmac_gw, "POST", "/body/x", headers=too_big, body=big)).status == 413
    sha256_signed = signed("POST", "/body/x", names, extra={"Digest": digest})
    assert (
        await request(hmac_gw, "POST", "/body/x", headers=sha256_signed, body=body)
    ).status == 401
    assert len(upstream.received) == 1


async def test_hmac_body_that_breaks_off_is_answered(hmac_gw: str, upstream: Upstream) -> None:
    """A body hmac-auth reads for its digest that turns out malformed (a bad chunk) is a
    400 with Connection: close, as on any route, not a connection closed unanswered."""
    body = b"payload"
    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    names = ["@request-target", "date", "digest"]
    headers = signed("POST", "/body/x", names, extra={"Digest": digest}, algorithm="hmac-sha512")
    head = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in headers)
    raw = await exchange_raw(
        hmac_gw,
        b"POST /body/x HTTP/1.1\r\nHost: x\r\n" + head
        + b"Transfer-Encoding: chunked\r\n\r\n3\r\npay\r\nzz\r\n",
    )  # fmt: skip
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:60]
    assert b"\r\nconnection: close\r\n" in raw.lower()
    assert upstream.received == []


# --- several plugins, multi-auth, groups --------------------------------------------------


@pytest.fixture
async def combo_gw(nursery: trio.Nursery, upstream: Upstream) -> str:
    consumers = [
        {
            "username": "multi",
            "group_id": "partners",
            "labels": {"custom_id": "m-7"},
            "credentials": [
                {"id": "m-key", "plugins": {"key-auth": {"key": "multi-key"}}},
                {
                    "id": "m-basic",
                    "plugins": {"basic-auth": {"username": "multi", "password": "pw"}},
                },
                {"id": "m-jwt", "plugins": {"jwt-auth": {"key": "multi-jwt", "secret": HS_SECRET}}},
            ],
            "plugins": {"proxy-rewrite": {"headers": {"set": {"x-from": "consumer"}}}},
        },
        consumer("other", ("o-basic", "basic-auth", {"username": "other", "password": "pw2"})),
        consumer("member", ("mem-key", "key-auth", {"key": "member-key"}), group_id="partners"),
    ]
    groups = [
        {
            "id": "partners",
            "plugins": {"proxy-rewrite": {"headers": {"set": {"x-from": "group", "x-group": "1"}}}},
        }
    ]
    routes = [
        {**route(upstream, {"key-auth": {}, "basic-auth": {}}, uri="/both/*"), "id": "both"},
        {
            **route(
                upstream,
                {
                    "multi-auth": {
                        "auth_plugins": [{"basic-auth": {}}, {"key-auth": {}}, {"jwt-auth": {}}]
                    }
                },
                uri="/multi/*",
            ),
            "id": "multi",
        },
    ]
    return await gateway(nursery, routes, consumers=consumers, consumer_groups=groups)


async def test_several_auth_plugins_on_a_route_all_must_pass(
    combo_gw: str, upstream: Upstream
) -> None:
    only_key = await request(combo_gw, target="/both/x", headers=[("apikey", "multi-key")])
    assert_401(only_key, "Missing authorization in request", b'Basic realm="basic"')
    only_basic = await request(combo_gw, target="/both/x", headers=[basic("multi", "pw")])
    assert_401(only_basic, "Missing API key in request", b'apikey realm="key"')
    # basic-auth (2520) runs before key-auth (2500): the last success, key-auth, decides.
    resp = await request(
        combo_gw, target="/both/x", headers=[basic("other", "pw2"), ("apikey", "multi-key")]
    )
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"multi"
    assert upstream.received[-1].header(b"x-credential-identifier") == b"m-key"
    assert len(upstream.received) == 1


async def test_multi_auth_first_success_and_all_fail(combo_gw: str, upstream: Upstream) -> None:
    for headers, cred in [
        ([basic("multi", "pw")], b"m-basic"),
        ([("apikey", "multi-key")], b"m-key"),
        (bearer(hs({"key": "multi-jwt"})), b"m-jwt"),
    ]:
        resp = await request(combo_gw, target="/multi/x", headers=headers)
        assert resp.status == 200
        got = upstream.received[-1]
        assert got.header(b"x-credential-identifier") == cred
        assert got.header(b"x-consumer-custom-id") == b"m-7"
    fail = await request(combo_gw, target="/multi/x", headers=[("apikey", "wrong")])
    assert fail.status == 401
    assert fail.body == b'{"message":"Authorization Failed"}\n'
    challenges = [v for n, v in fail.headers if n == b"www-authenticate"]
    assert challenges == [b'Basic realm="basic"', b'apikey realm="key"', b'Bearer realm="jwt"']


async def test_consumer_plugins_override_group_plugins_and_run_after_auth(
    combo_gw: str, upstream: Upstream
) -> None:
    assert (
        await request(combo_gw, target="/multi/x", headers=[("apikey", "multi-key")])
    ).status == 200
    got = upstream.received[-1]
    assert got.header(b"x-from") == b"consumer"
    assert (
        got.header(b"x-group") is None
    )  # consumer's proxy-rewrite replaces the group's whole conf
    assert (
        await request(combo_gw, target="/multi/x", headers=[basic("other", "pw2")])
    ).status == 200
    assert upstream.received[-1].header(b"x-from") is None
    assert (
        await request(combo_gw, target="/multi/x", headers=[("apikey", "member-key")])
    ).status == 200
    assert upstream.received[-1].header(b"x-from") == b"group"
    assert upstream.received[-1].header(b"x-group") == b"1"


async def test_anonymous_consumer_takes_requests_that_fail_authentication(
    nursery: trio.Nursery, upstream: Upstream
) -> None:
    """APISIX's `anonymous_consumer`: a request the plugin would turn away with 401 (no
    key, a wrong key, a bad password) goes on as that consumer, whose own plugins then
    apply (here a quota of two); a valid credential still names its own consumer."""
    consumers = [
        consumer("alice", ("alice-key", "key-auth", {"key": "alice-key"})),
        consumer(
            "anon",
            plugins={"limit-count": {"count": 2, "time_window": 60, "rejected_code": 429}},
        ),
        consumer("bob", ("bob-basic", "basic-auth", {"username": "bob", "password": "pw"})),
    ]
    routes = [
        route(upstream, {"key-auth": {"anonymous_consumer": "anon"}}, uri="/key"),
        {
            **route(upstream, {"basic-auth": {"anonymous_consumer": "anon"}}, uri="/basic"),
            "id": "b",
        },
    ]
    gw = await gateway(nursery, routes, consumers=consumers)
    first = await request(gw, target="/key")
    assert first.status == 200
    sent = upstream.received[-1]
    assert sent.header(b"x-consumer-username") == b"anon"
    assert sent.header(b"x-credential-identifier") is None
    assert first.header(b"x-ratelimit-remaining") == b"1"
    wrong = await request(gw, target="/basic", headers=[("authorization", "Basic Ym9iOm5v")])
    assert wrong.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"anon"
    assert (await request(gw, target="/key", headers=[("apikey", "nope")])).status == 429
    alice = await request(gw, target="/key", headers=[("apikey", "alice-key")])
    assert alice.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"alice"
    assert alice.header(b"x-ratelimit-limit") is None
    good = base64.b64encode(b"bob:pw").decode()
    bob = await request(gw, target="/basic", headers=[("authorization", f"Basic {good}")])
    assert bob.status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"bob"
    assert len(upstream.received) == 4
