"""Instructions per proxied small GET, counted by valgrind's callgrind: a figure that does
not drift with the load of a shared machine (the req/s of run.py move by a third between
runs), for judging a change to the hot path before a full `make bench`.

Each proxy runs under callgrind in turn, behind the same nginx upstream as in run.py; wrk
(-c64) warms it up, the counters are zeroed, wrk runs again, and the count is dumped:
instructions / requests. User-space instructions only: the kernel's side of each socket
call is not in them, so this ranks changes to Python work, not to the number of syscalls.

    python bench/load/instructions.py [--duration 20]

Needs valgrind, nginx and wrk (`make bench-deps`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import (  # bench/load/run.py, beside this script
    NGINX_UPSTREAM,
    ROOT,
    Procs,
    expect_answer,
    find_nginx,
    free_port,
    gateway_config,
    start_nginx,
    wait_port,
)

SMALL = "/small"


def count(
    procs: Procs, argv: list[str], port: int, headers: tuple[str, ...], tmp: Path, duration: int
) -> tuple[int, int]:
    """(requests, instructions) of `argv` serving small GETs on `port` under callgrind."""
    out = tmp / f"callgrind-{port}"
    process = procs.start(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv], cwd=ROOT
    )
    wait_port(port, timeout=300)  # imports alone take a while under valgrind
    if headers:  # the authenticated row must go through its plugins
        expect_answer(port, SMALL, headers, 200, "x-ratelimit-remaining")
    url = f"http://127.0.0.1:{port}{SMALL}"
    wrk = ["wrk", "-t1", "-c64"]
    for header in headers:
        wrk += ["-H", header]
    subprocess.run([*wrk, "-d5s", url], capture_output=True, check=True)
    subprocess.run(["callgrind_control", "-z", str(process.pid)], capture_output=True, check=True)
    report = subprocess.run(
        [*wrk, f"-d{duration}s", url], capture_output=True, text=True, check=True
    ).stdout
    subprocess.run(["callgrind_control", "-d", str(process.pid)], capture_output=True, check=True)
    process.terminate()
    process.wait(timeout=60)
    requests = int(re.search(r"(\d+) requests in", report).group(1))  # type: ignore[union-attr]
    dumps = sorted(tmp.glob(f"callgrind-{port}.*"))  # the -d dump, beside the final one
    totals = re.search(rb"^(?:summary|totals): (\d+)", dumps[0].read_bytes(), re.M)
    assert totals is not None, dumps
    return requests, int(totals.group(1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=20)
    args = parser.parse_args()
    nginx = find_nginx()
    missing = [t for t in ("valgrind", "callgrind_control", "wrk") if not shutil.which(t)]
    if nginx is None or missing:
        print(f"missing: {missing or ['nginx']} (make bench-deps installs them)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="gateway-instructions-"))
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must read the files
    procs = Procs()
    try:
        up_port = free_port()
        updir = tmp / "upstream"
        updir.mkdir(mode=0o755)
        start_nginx(procs, nginx, updir, NGINX_UPSTREAM.format(port=up_port, dir=updir))
        wait_port(up_port)
        limited = [("bot-local", {"count": 1_000_000_000, "time_window": 60})]
        py = sys.executable
        rows: list[tuple[str, int, int]] = []
        for name in ("trio+h11 floor", "aiohttp", "gateway", "gw+auth+limit-local"):
            port = free_port()
            headers: tuple[str, ...] = ()
            if name == "trio+h11 floor":
                argv = [py, "bench/trio_pipe.py", "--port", str(port), "--h11"]
                argv += ["--upstream", f"127.0.0.1:{up_port}"]
            elif name == "aiohttp":
                argv = [py, "bench/aiohttp_proxy.py", "--port", str(port)]
                argv += ["--upstream", f"http://127.0.0.1:{up_port}"]
            else:
                path = tmp / f"gateway-{port}.json"
                path.write_text(json.dumps(gateway_config(port, up_port, limited, None)))
                argv = [py, "-m", "gateway", "--config", str(path)]
                if name != "gateway":
                    headers = ("Host: auth.bench", "apikey: bot-local-key")
            requests, instructions = count(procs, argv, port, headers, tmp, args.duration)
            rows.append((name, requests, instructions))
            per_request = instructions // requests
            print(f"{name:<22} {requests:>7} requests {per_request:>9,} instructions/request")
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    floor = rows[0][2] / rows[0][1]
    for name, requests, instructions in rows:
        print(f"{name:<22} {instructions / requests / floor:>6.2f} x the trio+h11 floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
