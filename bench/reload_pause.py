"""How long requests wait while the gateway reloads a large config (SIGHUP).

Starts the echo upstream and the gateway on a generated config of N consumers (a key-auth
and a jwt-auth credential and a limit-count each), sends a request every 5 ms on one
keep-alive connection, sends SIGHUP, and prints how long the reload took and the longest
and median request times while it ran. A measure, never a test.

    python bench/reload_pause.py [--consumers 100000]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench/load"))
from run import free_port, wait_port  # noqa: E402 (the load benchmark's helpers)


def config(port: int, upstream: int, count: int) -> dict[str, object]:
    consumers = [
        {
            "username": f"user{i}",
            "credentials": [
                {"id": f"k{i}", "plugins": {"key-auth": {"key": f"key-{i}"}}},
                {
                    "id": f"j{i}",
                    "plugins": {"jwt-auth": {"key": f"j-{i}", "secret": f"s-{i:032d}"}},
                },
            ],
            "plugins": {"limit-count": {"count": 1_000_000, "time_window": 60}},
        }
        for i in range(count)
    ]
    route = {"id": "r", "uri": "/*", "plugins": {"key-auth": {}},
             "upstream": {"nodes": {f"127.0.0.1:{upstream}": 1}}}  # fmt: skip
    return {"server": {"listen": f"127.0.0.1:{port}", "access_log": False},
            "routes": [route], "consumers": consumers}  # fmt: skip


def one_request(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, body = buffer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consumers", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    port, upstream = free_port(), free_port()
    path = work / "config.json"
    path.write_text(json.dumps(config(port, upstream, args.consumers)))
    log = (work / "gateway.err").open("w")
    echo = [sys.executable, str(ROOT / "bench/echo_upstream.py"), "--port", str(upstream)]
    up = subprocess.Popen(echo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(path)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        started = time.monotonic()
        wait_port(port, timeout=600)
        print(f"{args.consumers} consumers: started in {time.monotonic() - started:.1f} s")
        request = b"GET /x HTTP/1.1\r\nHost: bench\r\napikey: key-7\r\n\r\n"
        times: list[tuple[float, float]] = []
        stop = threading.Event()

        def client() -> None:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                while not stop.is_set():
                    began = time.monotonic()
                    one_request(sock, request)
                    times.append((began, time.monotonic() - began))
                    time.sleep(0.005)

        thread = threading.Thread(target=client)
        thread.start()
        time.sleep(1)
        sent = time.monotonic()
        gateway.send_signal(signal.SIGHUP)
        while "config reloaded" not in (work / "gateway.err").read_text():
            time.sleep(0.05)
        reloaded = time.monotonic()
        time.sleep(1)
        stop.set()
        thread.join()
        during = sorted(t for began, t in times if sent <= began + t and began <= reloaded)
        print(
            f"reload {reloaded - sent:.1f} s; {len(during)} requests meanwhile: longest "
            f"{during[-1] * 1000:.0f} ms, median {during[len(during) // 2] * 1000:.1f} ms"
        )
    finally:
        gateway.kill()
        up.kill()


if __name__ == "__main__":
    main()
