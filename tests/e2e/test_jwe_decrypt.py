"""jwe-decrypt: a JWE (compact, `dir` + A256GCM) in a request header is decrypted with the
key of the consumer its `kid` names, and the plaintext goes upstream in `forward_header`,
as APISIX's plugin does; its encrypt API through public-api."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config.load import parse
from gateway.errors import ConfigErrors
from gateway.runtime import compile_config
from tests.helpers import Upstream, config_for, request, start_gateway

SECRET = "key-length-should-be-32-chars123"
RAW_SECRET = bytes(range(32))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwe(
    plaintext: bytes,
    secret: bytes,
    kid: Any = "jack-key",
    *,
    aad: bool = True,
    header: dict[str, Any] | None = None,
) -> str:
    """A compact JWE as RFC 7516 makes it (the protected header is the AAD), or without
    the AAD, as APISIX's own encrypt API used to."""
    fields = {"alg": "dir", "enc": "A256GCM", **({"kid": kid} if kid is not None else {})}
    protected = b64url(json.dumps(header if header is not None else fields).encode())
    iv = os.urandom(12)
    sealed = AESGCM(secret).encrypt(iv, plaintext, protected.encode() if aad else None)
    return ".".join([protected, "", b64url(iv), b64url(sealed[:-16]), b64url(sealed[-16:])])


def consumers() -> list[dict[str, Any]]:
    return [
        {"username": "jack", "plugins": {"jwe-decrypt": {"key": "jack-key", "secret": SECRET}}},
        {
            "username": "rose",
            "credentials": [
                {
                    "id": "rose-jwe",
                    "plugins": {
                        "jwe-decrypt": {
                            "key": "rose-key",
                            "secret": base64.b64encode(RAW_SECRET).decode(),
                            "is_base64_encoded": True,
                        }
                    },
                }
            ],
        },
    ]


def routes(upstream: Upstream, log_path: str = "") -> list[dict[str, Any]]:
    node = {"nodes": {upstream.address: 1}}
    custom: dict[str, Any] = {
        "jwe-decrypt": {"header": "X-JWE", "forward_header": "X-Plain", "strict": False}
    }
    if log_path:
        custom["file-logger"] = {"path": log_path}
    return [
        {"id": "default", "uri": "/d", "plugins": {"jwe-decrypt": {}}, "upstream": node},
        {"id": "custom", "uri": "/c", "plugins": custom, "upstream": node},
        {"id": "api", "uri": "/apisix/plugin/jwe/encrypt", "plugins": {"public-api": {}}},
    ]


@pytest.fixture
async def gw(nursery: trio.Nursery, upstream: Upstream, tmp_path: Path) -> str:
    log = str(tmp_path / "access.log")
    config = config_for(routes(upstream, log), consumers=consumers())
    _, address = await start_gateway(nursery, config)
    return address


async def test_decrypts_into_the_forward_header(gw: str, upstream: Upstream) -> None:
    token = jwe(b"user=jack; role=admin", SECRET.encode())
    resp = await request(gw, target="/d", headers=[("Authorization", token)])
    assert resp.status == 200, resp.body
    seen = upstream.received[-1]
    assert seen.header(b"authorization") == b"user=jack; role=admin"
    # It decrypts, it does not authenticate (as in APISIX): no consumer is named.
    assert seen.header(b"x-consumer-username") is None

    # "Bearer " is taken off; a credential of the credentials entity with a base64 secret.
    token = jwe(b"rose's", RAW_SECRET, "rose-key")
    resp = await request(gw, target="/d", headers=[("Authorization", "Bearer " + token)])
    assert resp.status == 200, resp.body
    assert upstream.received[-1].header(b"authorization") == b"rose's"

    # A token sealed without the protected header as AAD (APISIX's older tokens).
    token = jwe(b"legacy", SECRET.encode(), aad=False)
    resp = await request(gw, target="/d", headers=[("Authorization", token)])
    assert resp.status == 200, resp.body
    assert upstream.received[-1].header(b"authorization") == b"legacy"


async def test_custom_headers_and_not_strict(gw: str, upstream: Upstream, tmp_path: Path) -> None:
    token = jwe(b"plain-words-for-upstream", SECRET.encode())
    resp = await request(gw, target="/c", headers=[("X-JWE", token), ("X-Plain", "forged")])
    assert resp.status == 200, resp.body
    seen = upstream.received[-1]
    assert [v for n, v in seen.headers if n == b"x-plain"] == [b"plain-words-for-upstream"]
    assert seen.header(b"x-jwe") == token.encode()

    # strict: false lets a request without a token on, but never with the client's own
    # copy of the forward header.
    resp = await request(gw, target="/c", headers=[("X-Plain", "forged")])
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-plain") is None

    # The plaintext is as secret as the token: the log line has neither.
    logged = (tmp_path / "access.log").read_text()
    assert logged.count("\n") == 2
    assert "plain-words-for-upstream" not in logged
    assert token not in logged
    assert SECRET not in logged


async def test_refusals(gw: str, upstream: Upstream) -> None:
    before = len(upstream.received)

    async def answer(token: str | None, target: str = "/d") -> tuple[int, Any]:
        headers = [("Authorization", token)] if token is not None else []
        resp = await request(gw, target=target, headers=headers)
        return resp.status, resp.json()

    secret = SECRET.encode()
    good = jwe(b"x", secret)
    protected, key, iv, text, tag = good.split(".")
    invalid = (400, {"message": "JWE token invalid"})
    failed = (400, {"message": "failed to decrypt JWE token"})
    assert await answer(None) == (403, {"message": "missing JWE token in request"})
    assert await answer("") == invalid
    assert await answer("a.b.c.d") == invalid
    assert await answer(good + ".x") == invalid
    assert await answer(".".join([b64url(b"not json"), key, iv, text, tag])) == invalid
    assert await answer(".".join(["*" + protected, key, iv, text, tag])) == invalid
    assert await answer(jwe(b"x", secret, kid=None)) == (
        400,
        {"message": "missing kid in JWE token"},
    )
    assert await answer(jwe(b"x", secret, kid="nobody")) == (
        400,
        {"message": "invalid kid in JWE token"},
    )
    assert await answer(jwe(b"x", secret, kid=7)) == (400, {"message": "invalid kid in JWE token"})
    # Another consumer's key, a changed ciphertext, a header changed after sealing, an
    # encrypted key where `dir` has none, an IV of the wrong size: not decrypted.
    assert await answer(jwe(b"x", RAW_SECRET)) == failed
    flipped = b64url(bytes([base64.urlsafe_b64decode(text + "==")[0] ^ 1]))
    assert await answer(".".join([protected, key, iv, flipped, tag])) == failed
    other = b64url(json.dumps({"alg": "dir", "enc": "A256GCM", "kid": "jack-key", "x": 1}).encode())
    assert await answer(".".join([other, key, iv, text, tag])) == failed
    assert await answer(".".join([protected, b64url(b"k" * 32), iv, text, tag])) == failed
    assert await answer(".".join([protected, key, b64url(b"short"), text, tag])) == failed
    wrong_enc = {"alg": "dir", "enc": "A128GCM", "kid": "jack-key"}
    assert await answer(jwe(b"x", secret, header=wrong_enc)) == failed
    # A plaintext that could not be a header value never reaches the upstream.
    assert await answer(jwe(b"a\r\nX-Admin: 1", secret)) == (
        400,
        {"message": "JWE payload is not a valid header value"},
    )
    assert len(upstream.received) == before


async def test_encrypt_api(gw: str, upstream: Upstream) -> None:
    payload = "hello, jwe: ü"
    resp = await request(
        gw, target=f"/apisix/plugin/jwe/encrypt?key=jack-key&payload={quote(payload)}"
    )
    assert resp.status == 200, resp.body
    token = resp.body.decode()
    assert token.count(".") == 4
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "dir", "enc": "A256GCM", "kid": "jack-key"}
    # A fresh IV every time (GCM must never reuse one under a key).
    again = await request(
        gw, target=f"/apisix/plugin/jwe/encrypt?key=jack-key&payload={quote(payload)}"
    )
    assert again.body.split(b".")[2] != resp.body.split(b".")[2]

    resp = await request(gw, target="/c", headers=[("X-JWE", token)])
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-plain") == payload.encode()

    assert (await request(gw, target="/apisix/plugin/jwe/encrypt?payload=x")).status == 400
    assert (await request(gw, target="/apisix/plugin/jwe/encrypt?key=nobody")).status == 404


@pytest.mark.parametrize(
    ("conf", "why"),
    [
        ({"key": "k", "secret": "too-short"}, "Expected `str` of length >= 32"),
        ({"key": "k", "secret": "é" * 32}, "secret must be 32 bytes"),
        (
            {"key": "k", "secret": base64.b64encode(b"x" * 31).decode(), "is_base64_encoded": True},
            "secret must be 32 bytes once base64-decoded",
        ),
        ({"key": "k", "secret": "!" * 44, "is_base64_encoded": True}, "not valid base64"),
        ({"secret": SECRET}, "missing required field `key`"),
    ],
)
def test_credential_checked_at_load(conf: dict[str, Any], why: str) -> None:
    config = config_for([], consumers=[{"username": "u", "plugins": {"jwe-decrypt": conf}}])
    with pytest.raises(ConfigErrors) as caught:
        compile_config(parse(json.dumps(config).encode()))
    text = str(caught.value)
    assert why in text
    assert "$.consumers[0].plugins.jwe-decrypt" in text
    assert SECRET not in text


def test_repeated_key_and_multi_auth_refused() -> None:
    same = {"key": "k", "secret": SECRET}
    config = config_for(
        [],
        consumers=[
            {"username": "a", "plugins": {"jwe-decrypt": same}},
            {"username": "b", "plugins": {"jwe-decrypt": same}},
        ],
    )
    with pytest.raises(ConfigErrors, match="jwe-decrypt"):
        compile_config(parse(json.dumps(config).encode()))
    multi = {"auth_plugins": [{"jwe-decrypt": {}}, {"key-auth": {}}]}
    route = {
        "id": "r",
        "uri": "/",
        "plugins": {"multi-auth": multi},
        "upstream": {"nodes": {"127.0.0.1:1": 1}},
    }
    with pytest.raises(ConfigErrors, match="not an authentication plugin"):
        compile_config(parse(json.dumps(config_for([route])).encode()))
