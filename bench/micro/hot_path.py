"""Hot-path micro-benchmark: per-request cost, in µs, of the work the gateway does without
sockets: parse a realistic request head with h11, route it, run its plugin chain, and build
the upstream request head. Prints JSON.

    python bench/micro/hot_path.py [--iterations N]
"""

from __future__ import annotations

import argparse
import contextlib
import json

import h11
from timing import measure  # bench/micro/timing.py, beside this script

from gateway.config.load import parse
from gateway.context import RequestContext
from gateway.http.headers import upstream_request_headers
from gateway.pipeline import run_request_phases
from gateway.runtime import compile_config
from gateway.upstream.framing import encode_request_head

REQUEST = (
    b"GET /petstore/pets/42?limit=10&offset=20 HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"apikey: bot-key\r\n"
    b"X-Request-Id: 6f1c1e2a-3b4d-4c5e-8f90-a1b2c3d4e5f6\r\n"
    b"Connection: keep-alive\r\n\r\n"
)

ROUTES = 200  # a realistic table, with the matched route near the end


def build_runtime():  # type: ignore[no-untyped-def]
    routes = [{"id": f"r{i}", "uri": f"/service{i}/*", "upstream_id": "u"} for i in range(ROUTES)]
    routes.append(
        {
            "id": "pets",
            "uri": "/petstore/*",
            "upstream_id": "u",
            "methods": ["GET", "POST"],
            "plugins": {
                "proxy-rewrite": {
                    "regex_uri": ["^/petstore/(.*)", "/$1"],
                    "headers": {"set": {"X-Gateway": "trio-gateway"}},
                }
            },
        }
    )
    config = {"upstreams": [{"id": "u", "nodes": {"127.0.0.1:8080": 1}}], "routes": routes}
    return compile_config(parse(json.dumps(config).encode()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    runtime = build_runtime()

    def parse_head() -> h11.Request:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        return conn.next_event()  # type: ignore[return-value]

    request = parse_head()
    headers = list(request.headers)

    def route() -> object:
        return runtime.router.match(b"GET", b"/petstore/pets/42", b"api.example.com")

    compiled = route()

    def new_ctx() -> RequestContext:
        ctx = RequestContext(
            request.method, request.target, list(headers), b"1.1", "127.0.0.1", 5555, 9080, 0.0
        )
        ctx.route = compiled  # type: ignore[assignment]
        return ctx

    def chain() -> None:
        ctx = new_ctx()
        coro = run_request_phases(compiled.chain, ctx)  # type: ignore[attr-defined]
        with contextlib.suppress(StopIteration):
            coro.send(None)

    def upstream_head() -> list[tuple[bytes, bytes]]:
        return upstream_request_headers(
            headers,
            host=b"api.example.com",
            remote_addr=b"127.0.0.1",
            forwarded_host=b"api.example.com",
            server_port=b"9080",
            framing=None,
            websocket=False,
        )

    def serialise_upstream_request() -> bytes:
        return encode_request_head(b"GET", request.target, upstream_head())

    def everything() -> None:
        parse_head()
        route()
        chain()
        serialise_upstream_request()

    n = args.iterations
    results = {
        "parse_request_head_us": measure(parse_head, n),
        "route_match_us": measure(route, n),
        "plugin_chain_us": measure(chain, n),
        "upstream_head_build_us": measure(upstream_head, n),
        "upstream_head_serialise_us": measure(serialise_upstream_request, n),
        "total_us": measure(everything, n),
    }
    results = {k: round(v, 2) for k, v in results.items()}
    results["routes"] = ROUTES + 1
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
