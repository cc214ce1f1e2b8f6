"""openid-connect micro-benchmark: µs per request for a JWKS-verified RS256 token with the
key already cached (no IO): a valid token, and one that verifies but names another issuer.
Prints JSON.

    python bench/micro/oidc.py [--iterations N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from timing import measure  # bench/micro/timing.py, beside this script

from gateway.config.load import parse
from gateway.context import RequestContext
from gateway.runtime import compile_config

DISCOVERY = "http://idp.bench/.well-known/openid-configuration"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    conf = {"discovery": DISCOVERY, "client_id": "bench", "bearer_only": True}
    route = {"id": "r", "uri": "/", "upstream": {"nodes": {"127.0.0.1:1": 1}},
             "plugins": {"openid-connect": conf}}  # fmt: skip
    runtime = compile_config(parse(json.dumps({"routes": [route]}).encode()))
    provider = runtime.idps.provider(DISCOVERY, False, 3.0)
    # What a loaded provider holds: its discovery document and its keys (no IO below).
    provider.metadata = {
        "issuer": "http://idp.bench",
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    provider.keys = {"k1": [jwt.PyJWK(jwk)]}
    compiled = runtime.router.match(b"GET", b"/", b"")
    assert compiled is not None
    hook: Any = compiled.chain.rewrite[0][0]
    now = int(time.time())
    claims = {"iss": "http://idp.bench", "sub": "alice", "aud": "bench", "exp": now + 3600}
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    other = jwt.encode({**claims, "iss": "http://elsewhere"}, key, algorithm="RS256",
                       headers={"kid": "k1"})  # fmt: skip

    def run(value: str) -> Any:
        ctx = RequestContext(b"GET", b"/", [(b"authorization", b"Bearer " + value.encode())],
                             b"1.1", "1.2.3.4", 1, 9080, 0.0)  # fmt: skip
        coro = hook(ctx)
        # With the key cached nothing awaits: the coroutine finishes on its first step.
        with contextlib.suppress(StopIteration):
            coro.send(None)
        return ctx

    assert run(token).headers[-1][0] == b"x-userinfo"
    verifier = hook.__self__.verifiers[0]

    def run_uncached(value: str) -> Any:
        verifier.verified.clear()
        return run(value)

    results = {
        "openid-connect RS256 valid (cached JWKS key) us": round(
            measure(lambda: run_uncached(token), args.iterations), 2
        ),
        "openid-connect RS256 valid, token seen before us": round(
            measure(lambda: run(token), args.iterations), 2
        ),
        "openid-connect RS256 wrong issuer us": round(
            measure(lambda: run(other), args.iterations), 2
        ),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
