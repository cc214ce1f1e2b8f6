"""Auth micro-benchmark: µs per request for each auth plugin's rewrite hook, with a valid and
an invalid credential, with 10 and 100,000 consumers configured. Lookup cost must not grow
with the number of consumers. Then the whole decision of issue 7's target: every phase
before the upstream (key-auth, the consumer's own limit-count with the local policy, the
identity headers) for consumers that each have a limit. Prints JSON.

    python bench/micro/auth.py [--iterations N] [--sizes 10,100000]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time
from email.utils import formatdate
from typing import Any

import jwt
from timing import measure  # bench/micro/timing.py, beside this script

from gateway.config.load import parse
from gateway.context import RequestContext
from gateway.pipeline import run_request_phases
from gateway.runtime import Runtime, compile_config
from gateway.server import settle_memory

SECRET = "benchmark-hs256-secret-0123456789abcdef"


def build(n: int) -> Runtime:
    consumers = []
    for i in range(n):
        consumers.append(
            {
                "username": f"user{i}",
                "credentials": [
                    {"id": f"k{i}", "plugins": {"key-auth": {"key": f"key-{i:08d}"}}},
                    {
                        "id": f"b{i}",
                        "plugins": {"basic-auth": {"username": f"u{i}", "password": f"p{i}"}},
                    },
                    {"id": f"j{i}", "plugins": {"jwt-auth": {"key": f"jk{i}", "secret": SECRET}}},
                    {
                        "id": f"h{i}",
                        "plugins": {"hmac-auth": {"key_id": f"hk{i}", "secret_key": f"s{i}"}},
                    },
                ],
            }
        )
    up = {"nodes": {"127.0.0.1:1": 1}}
    routes = [
        {"id": name, "uri": f"/{name}", "upstream": up, "plugins": {name: {}}}
        for name in ("key-auth", "basic-auth", "jwt-auth", "hmac-auth")
    ]
    return compile_config(parse(json.dumps({"routes": routes, "consumers": consumers}).encode()))


def build_limited(n: int) -> Runtime:
    """n consumers, each with a key and its own limit-count (never reached)."""
    consumers = [
        {
            "username": f"user{i}",
            "plugins": {"limit-count": {"count": 1_000_000_000, "time_window": 60}},
            "credentials": [{"id": f"k{i}", "plugins": {"key-auth": {"key": f"key-{i:08d}"}}}],
        }
        for i in range(n)
    ]
    up = {"nodes": {"127.0.0.1:1": 1}}
    routes = [{"id": "r", "uri": "/r", "upstream": up, "plugins": {"key-auth": {}}}]
    return compile_config(parse(json.dumps({"routes": routes, "consumers": consumers}).encode()))


def decide(chain: Any, headers: list[tuple[bytes, bytes]]) -> Any:
    """Every phase before the upstream, for one request (all hooks here are sync, so the
    coroutine finishes at its first step)."""
    ctx = RequestContext(b"GET", b"/r", list(headers), b"1.1", "1.2.3.4", 1, 9080, 0.0)
    coro = run_request_phases(chain, ctx)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("a hook waited")


def request_headers(plugin: str, i: int, valid: bool) -> list[tuple[bytes, bytes]]:
    if plugin == "key-auth":
        return [(b"apikey", f"key-{i:08d}".encode() if valid else b"key-wrong-key")]
    if plugin == "basic-auth":
        pw = f"p{i}" if valid else "nope"
        return [(b"authorization", b"Basic " + base64.b64encode(f"u{i}:{pw}".encode()))]
    if plugin == "jwt-auth":
        secret = SECRET if valid else SECRET + "x"
        return [(b"authorization", b"Bearer " + jwt.encode({"key": f"jk{i}"}, secret).encode())]
    date = formatdate(usegmt=True)
    secret = f"s{i}" if valid else "wrong"
    signing = f"hk{i}\nGET /hmac-auth\ndate: {date}\n".encode()
    sig = base64.b64encode(hmac.new(secret.encode(), signing, hashlib.sha256).digest()).decode()
    auth = (
        f'Signature keyId="hk{i}",algorithm="hmac-sha256",headers="@request-target date",'
        f'signature="{sig}"'
    )
    return [(b"date", date.encode()), (b"authorization", auth.encode())]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--sizes", default="10,100000")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        runtime = build(n)
        results[f"compile_s_{n}"] = round(time.perf_counter() - started, 2)
        for plugin in ("key-auth", "basic-auth", "jwt-auth", "hmac-auth"):
            route = runtime.router.match(b"GET", f"/{plugin}".encode(), b"")
            assert route is not None
            hook = route.chain.rewrite[0][0]
            for valid in (True, False):
                headers = request_headers(plugin, n // 2, valid)
                target = f"/{plugin}".encode()

                def run(hook: Any = hook, headers: Any = headers, target: bytes = target) -> Any:
                    ctx = RequestContext(
                        b"GET", target, list(headers), b"1.1", "1.2.3.4", 1, 9080, 0.0
                    )
                    return hook(ctx)

                outcome = run()
                assert (outcome is None) == valid, (plugin, valid, outcome)
                label = f"{plugin} {'valid' if valid else 'invalid'} n={n}"
                results[label] = round(measure(run, args.iterations), 2)
        del runtime
        started = time.perf_counter()
        limited = build_limited(n)
        results[f"compile_s_limited_{n}"] = round(time.perf_counter() - started, 2)
        # As the server does after loading a config: the previous runtime's garbage goes
        # now, and the new one is kept out of the full collections a timed loop would pay.
        settle_memory()
        route = limited.router.match(b"GET", b"/r", b"")
        assert route is not None
        headers = [(b"apikey", f"key-{n // 2:08d}".encode())]
        assert decide(route.chain, headers) is None  # authenticated, within the limit

        def run_decision(chain: Any = route.chain, headers: Any = headers) -> Any:
            return decide(chain, headers)

        label = f"key-auth + consumer limit-count (local), whole decision n={n}"
        results[label] = round(measure(run_decision, args.iterations), 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
