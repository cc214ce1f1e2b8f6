"""Load benchmark: the gateway next to its baselines, in one run, on loopback.

Processes (each started and stopped by PID):
  - upstream: nginx from Debian when installed (else the shipped echo upstream), CPU 1;
  - direct:   wrk straight at the upstream (the ceiling);
  - nginx:    nginx as a reverse proxy (1 worker, upstream keepalive), CPU 0;
  - trio L4 pipe: bench/trio_pipe.py, bytes copied with no HTTP work (trio's floor), CPU 0;
  - trio+h11 floor: bench/trio_pipe.py --h11, h11 parses each request head, bytes relayed
    as they came (the floor of a trio + h11 proxy), CPU 0;
  - gateway:  trio-gateway, 1 worker, CPU 0;
  - wrk:      1 thread, 64 keep-alive connections, CPU 1.
Scenarios: small GET, 64 KiB GET, 1 MiB POST; each target runs once per round, rounds
interleaved, and keeps its median round. Prints a table and JSON (req/s, p50, p99 and the
ratios to nginx, aiohttp and direct). Timing never goes into a test.

    python bench/load/run.py [--duration 5] [--connections 64] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL, MEDIUM, POST = "/small", "/64k", "/post"
SCENARIOS = [
    ("small GET", SMALL, None),
    ("64 KiB GET", MEDIUM, None),
    ("1 MiB POST", POST, 1 << 20),
]
HAVE_TASKSET = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if HAVE_TASKSET else argv


def find_nginx() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


NGINX_COMMON = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log error;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  {body}
}}
"""

NGINX_UPSTREAM = """
  server {{
    listen 127.0.0.1:{port};
    location = /small {{ default_type text/plain; return 200 "hello, world\\n"; }}
    location = /64k {{ default_type application/octet-stream; alias {dir}/64k.bin; }}
    location = /post {{ client_max_body_size 2m; client_body_buffer_size 2m;
                        default_type text/plain; return 200 "ok\\n"; }}
  }}
"""

NGINX_PROXY = """
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 2m;
    location / {{
      proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_request_buffering off;
    }}
  }}
"""


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def start_nginx(procs: Procs, nginx: str, workdir: Path, body: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nginx.conf").write_text(NGINX_COMMON.format(dir=workdir, body=body))
    cpu = 0 if workdir.name.endswith("proxy") else 1  # the proxy under test gets CPU 0
    argv = [nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"]
    procs.start(pinned(cpu, argv))


def start_oidc_provider(procs: Procs) -> tuple[str, str] | None:
    """(discovery URL, ID token) from a provider on CPU 1, or None when not installed."""
    try:
        import httpx
    except ImportError:
        return None
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "oidc_provider_mock",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--token-max-age",
        "3600",
    ]
    procs.start(pinned(1, argv))
    try:
        wait_port(port)
    except RuntimeError:
        return None
    base = f"http://127.0.0.1:{port}"
    redirect = "http://bench.test/cb"
    with httpx.Client(base_url=base, timeout=10) as client:
        authorize = client.post(
            "/oauth2/authorize",
            params={
                "client_id": "bench",
                "redirect_uri": redirect,
                "response_type": "code",
                "scope": "openid",
                "state": "s",
            },
            data={"sub": "bench-user"},
        )
        code = authorize.headers["location"].split("code=")[1].split("&")[0]
        token = client.post(
            "/oauth2/token",
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect},
            auth=("bench", "secret"),
        ).json()["id_token"]
    return f"{base}/.well-known/openid-configuration", token


def gateway_config(
    gw_port: int, up_port: int, limited: list[tuple[str, dict]], oidc_discovery: str | None
) -> dict:
    """The benchmarked gateway: a plain route, and the same upstream behind key-auth (1000
    consumers, plus the `limited` ones with their own limit-count) for `Host: auth.bench`
    and behind openid-connect for `Host: oidc.bench`.

    The host routes share the plain route's URI, so they need the higher `priority`: among
    routes with the same URI the first in config order would win, and the authenticated
    rows would measure the plain route."""
    config: dict = {
        "server": {"listen": f"127.0.0.1:{gw_port}", "access_log": False},
        "upstreams": [{"id": "up", "nodes": {f"127.0.0.1:{up_port}": 1}}],
        "routes": [
            {"id": "bench", "uri": "/*", "upstream_id": "up"},
            {
                "id": "bench-auth",
                "uri": "/*",
                "hosts": ["auth.bench"],
                "priority": 1,
                "upstream_id": "up",
                "plugins": {"key-auth": {}},
            },
        ],
        "consumers": [
            {
                "username": f"user{i}",
                "credentials": [
                    {"id": f"c{i}", "plugins": {"key-auth": {"key": f"bench-key-{i}"}}}
                ],
            }
            for i in range(1000)
        ]
        + [
            # The seed scenario: a consumer with its own limit-count (never reached).
            {
                "username": name,
                "plugins": {"limit-count": conf},
                "credentials": [{"id": name, "plugins": {"key-auth": {"key": f"{name}-key"}}}],
            }
            for name, conf in limited
        ],
    }
    if oidc_discovery is not None:
        config["routes"].append(
            {
                "id": "bench-oidc",
                "uri": "/*",
                "hosts": ["oidc.bench"],
                "priority": 1,
                "upstream_id": "up",
                "plugins": {
                    "openid-connect": {
                        "discovery": oidc_discovery,
                        "client_id": "bench",
                        "bearer_only": True,
                    }
                },
            }
        )
    return config


def expect_answer(
    port: int, path: str, headers: tuple[str, ...], status: int, header: str | None = None
) -> None:
    """Stop the benchmark unless the gateway answers `status`, with `header` among the
    response headers when one is named."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(h.split(": ", 1) for h in headers))
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    missing = header is not None and response.getheader(header) is None
    if response.status != status or missing:
        raise SystemExit(
            f"bench config: GET {path} with {list(headers)} answered {response.status}"
            f"{' without ' + header if missing else ''}; expected {status}"
        )


def run_wrk(
    url: str,
    duration: int,
    connections: int,
    post_bytes: int | None,
    tmp: Path,
    headers: tuple[str, ...] = (),
    pin: bool = True,
) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    if post_bytes:
        script = tmp / "post.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = string.rep("x", {post_bytes})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )
        argv += ["-s", str(script)]
    argv = [*argv, url]
    out = subprocess.run(
        pinned(1, argv) if pin else argv, capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def measure_workers(
    procs: Procs, config: dict, tmp: Path, args: argparse.Namespace, have_redis: bool
) -> dict:
    """Small GETs with key-auth + limit-count through `server.workers: 1` and `2`.

    Nothing is pinned here: the workers, wrk and the upstream share the machine's CPUs, as
    they would on a real two-core host. Local counters are per process (`gateway check`
    refuses them with several workers), so the limited consumer uses Redis when it runs;
    otherwise the route has key-auth only. Runs alternate (1, 2) three times and the median of
    each is kept, because a shared machine drifts.
    """
    consumer = "bot-redis" if have_redis else "user500"
    key = f"{consumer}-key" if have_redis else "bench-key-500"
    rps: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    ports = {}
    for workers in (1, 2):
        port = free_port()
        scaled = json.loads(json.dumps(config))
        scaled["server"] = {
            "listen": f"127.0.0.1:{port}",
            "access_log": False,
            "workers": workers,
        }
        scaled["consumers"] = [c for c in scaled["consumers"] if c["username"] != "bot-local"]
        path = tmp / f"gateway-workers{workers}.json"
        path.write_text(json.dumps(scaled))
        procs.start([sys.executable, "-m", "gateway", "--config", str(path)], cwd=ROOT)
        wait_port(port)
        ports[workers] = port
    headers = ("Host: auth.bench", f"apikey: {key}")
    for workers in (1, 2) * 3:
        url = f"http://127.0.0.1:{ports[workers]}{SMALL}"
        run_wrk(url, 1, args.connections, None, tmp, headers, pin=False)  # warm-up
        rps[workers].append(
            run_wrk(url, args.duration, args.connections, None, tmp, headers, pin=False)
        )
    out: dict = {"limit": "redis" if have_redis else "none: key-auth only"}
    for workers, runs in rps.items():
        runs.sort(key=lambda r: r["rps"])
        out[str(workers)] = runs[len(runs) // 2]
    out["ratio"] = round(out["2"]["rps"] / out["1"]["rps"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rounds", type=int, default=3, help="runs per target; median kept")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (make bench-deps installs it)", file=sys.stderr)
        return 1
    nginx = find_nginx()
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must read the files
    procs = Procs()
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        up_port = free_port()
        if nginx:
            updir = tmp / "upstream"
            updir.mkdir(mode=0o755)
            (updir / "64k.bin").write_bytes(b"x" * 65536)
            (updir / "64k.bin").chmod(0o644)
            start_nginx(procs, nginx, updir, NGINX_UPSTREAM.format(port=up_port, dir=updir))
            upstream_kind = "nginx"
            paths = {SMALL: SMALL, MEDIUM: MEDIUM, POST: POST}
        else:
            procs.start(
                pinned(
                    1,
                    [sys.executable, str(ROOT / "bench/echo_upstream.py"), "--port", str(up_port)],
                )
            )
            upstream_kind = "echo_upstream.py"
            paths = {SMALL: "/bytes/13", MEDIUM: "/bytes/65536", POST: "/bytes/3"}
        wait_port(up_port)

        targets = {"direct": up_port}
        if nginx:
            proxy_port = free_port()
            start_nginx(
                procs,
                nginx,
                tmp / "nginx-proxy",
                NGINX_PROXY.format(port=proxy_port, upstream=up_port),
            )
            wait_port(proxy_port)
            targets["nginx"] = proxy_port

        # The aiohttp + uvloop reverse proxy a Python user would write, on CPU 0 like the
        # gateway (installed by `make bench` with the bench extras).
        try:
            import aiohttp  # noqa: F401
            import uvloop  # noqa: F401
        except ImportError:
            print("aiohttp/uvloop not installed: no aiohttp baseline", file=sys.stderr)
        else:
            aio_port = free_port()
            procs.start(
                pinned(
                    0,
                    [
                        sys.executable,
                        str(ROOT / "bench/aiohttp_proxy.py"),
                        "--port",
                        str(aio_port),
                        "--upstream",
                        f"http://127.0.0.1:{up_port}",
                    ],
                )
            )
            wait_port(aio_port)
            targets["aiohttp"] = aio_port

        # The floors of a trio proxy (bench/trio_pipe.py), on CPU 0 like the gateway: a
        # layer-4 byte pipe with no HTTP work at all, and the least a trio + h11 HTTP proxy
        # does (h11 parses each request head; bytes relayed by Content-Length, unchanged).
        for name, extra in (("trio L4 pipe", []), ("trio+h11 floor", ["--h11"])):
            pipe_port = free_port()
            argv = [
                sys.executable,
                str(ROOT / "bench/trio_pipe.py"),
                "--port",
                str(pipe_port),
                "--upstream",
                f"127.0.0.1:{up_port}",
                *extra,
            ]
            procs.start(pinned(0, argv), cwd=ROOT)
            wait_port(pipe_port)
            targets[name] = pipe_port

        # Redis for the `policy: redis` run (Debian's redis-server, CPU 1), when installed.
        redis_port = free_port() if shutil.which("redis-server") else None
        if redis_port:
            procs.start(
                pinned(
                    1,
                    [
                        "redis-server",
                        "--port",
                        str(redis_port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                )
            )
            wait_port(redis_port)
        high_limit = {"count": 1_000_000_000, "time_window": 60}
        limited = [("bot-local", {**high_limit})]
        if redis_port:
            limited.append(
                (
                    "bot-redis",
                    {
                        **high_limit,
                        "policy": "redis",
                        "redis_host": "127.0.0.1",
                        "redis_port": redis_port,
                    },
                )
            )
        # An OpenID Connect provider (oidc-provider-mock, installed with the test extras) for
        # the openid-connect run: a real ID token from its authorization-code flow.
        oidc = start_oidc_provider(procs)
        gw_port = free_port()
        config = gateway_config(gw_port, up_port, limited, oidc[0] if oidc else None)
        (tmp / "gateway.json").write_text(json.dumps(config))
        procs.start(
            pinned(0, [sys.executable, "-m", "gateway", "--config", str(tmp / "gateway.json")]),
            cwd=ROOT,
        )
        wait_port(gw_port)
        targets["gateway"] = gw_port
        # The same gateway, on a route with key-auth (1000 consumers configured).
        auth_headers = ("Host: auth.bench", "apikey: bench-key-500")
        # Each gateway row must measure the plugins its name says: checked before any run.
        expect_answer(gw_port, paths[SMALL], ("Host: auth.bench",), 401)
        expect_answer(gw_port, paths[SMALL], auth_headers, 200)
        for name, _ in limited:
            limit_headers = ("Host: auth.bench", f"apikey: {name}-key")
            expect_answer(gw_port, paths[SMALL], limit_headers, 200, "x-ratelimit-remaining")
        if oidc is not None:
            expect_answer(gw_port, paths[SMALL], ("Host: oidc.bench",), 401)
            bearer = ("Host: oidc.bench", f"Authorization: Bearer {oidc[1]}")
            expect_answer(gw_port, paths[SMALL], bearer, 200)

        for label, path, post in SCENARIOS:
            results[label] = {}
            runs: list[tuple[str, int, tuple[str, ...]]] = [(n, p, ()) for n, p in targets.items()]
            runs.append(("gw+key-auth", gw_port, auth_headers))
            if oidc is not None:
                runs.append(
                    (
                        "gw+openid-connect",
                        gw_port,
                        ("Host: oidc.bench", f"Authorization: Bearer {oidc[1]}"),
                    )
                )
            for name, _ in limited:
                short = "local" if name.endswith("local") else "redis"
                runs.append(
                    (f"gw+auth+limit-{short}", gw_port, ("Host: auth.bench", f"apikey: {name}-key"))
                )
            # Rounds go through every target in turn, so that a drift of the shared
            # machine touches them all alike; each target keeps its median round.
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in runs}
            for round_no in range(args.rounds):
                for name, port, headers in runs:
                    url = f"http://127.0.0.1:{port}{paths[path]}"
                    if round_no == 0:
                        run_wrk(url, 1, args.connections, post, tmp, headers)  # warm-up
                    rounds[name].append(
                        run_wrk(url, args.duration, args.connections, post, tmp, headers)
                    )
            for name, got in rounds.items():
                got.sort(key=lambda r: r["rps"])
                results[label][name] = got[len(got) // 2]
        scaling = measure_workers(procs, config, tmp, args, redis_port is not None)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    placement = (
        "gateway and nginx proxy on CPU 0, wrk and upstream on CPU 1"
        if HAVE_TASKSET
        else "processes not pinned (taskset missing or one CPU)"
    )
    print(
        f"upstream: {upstream_kind}; {args.connections} connections, "
        f"{args.duration}s per run, median of {args.rounds} rounds; {placement}"
    )
    print(
        f"{'scenario':<12} {'target':<22} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'x nginx':>8} {'x aiohttp':>9} {'x direct':>8}"
    )
    for label, by_target in results.items():
        for name, r in by_target.items():
            r["x_direct"] = round(r["rps"] / by_target["direct"]["rps"], 3)
            if "aiohttp" in by_target:
                r["x_aiohttp"] = round(r["rps"] / by_target["aiohttp"]["rps"], 3)
            if "nginx" in by_target:
                r["x_nginx"] = round(r["rps"] / by_target["nginx"]["rps"], 3)
            print(
                f"{label:<12} {name:<22} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r.get('x_nginx', float('nan')):>8.3f} {r.get('x_aiohttp', float('nan')):>9.3f} "
                f"{r['x_direct']:>8.3f}"
            )
    if scaling:
        print(
            "server.workers scaling, small GET with key-auth + limit-count "
            f"({scaling['limit']}); gateway, wrk and upstream share both CPUs (no pinning):"
        )
        for workers in (1, 2):
            r = scaling[str(workers)]
            print(f"  workers={workers}: {r['rps']:>8.0f} req/s  p99 {r['p99_ms']:.2f} ms")
        print(f"  2 workers / 1 worker: {scaling['ratio']:.2f}x")
    doc = {
        "upstream": upstream_kind,
        "workers_scaling": scaling,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "results": results,
    }
    print(json.dumps(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
