"""The CLI as a subprocess: check, serve, SIGHUP reload, SIGTERM drain, workers, access log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway import server as server_module
from gateway.config.load import load
from gateway.plugins.key_auth import KeyAuth
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from gateway.supervisor import Supervisor
from tests.helpers import (
    ROOT,
    GatewayProcess,
    Received,
    Upstream,
    config_for,
    exchange_raw,
    free_port,
    request,
    start_gateway,
    wait_port,
)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config, indent=2))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def basic_config(port: int, upstream: str, **server: Any) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}", "access_log": False, **server},
        "routes": [{"id": "r1", "uri": "/*", "upstream": {"nodes": {upstream: 1}}}],
    }


# --- gateway check ----------------------------------------------------------------------


def test_check_accepts_the_shipped_config() -> None:
    result = run_cli("check", "--config", str(ROOT / "config.json"))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid: 3 routes, 0 services, 0 plugin configs" in result.stdout
    assert result.stdout.rstrip().endswith("0 global rules, 0 certificates")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"routes": [{"id": "r", "uri": "/a", "upstream_id": "missing"}]},
            "- at `$.routes[0].upstream_id`",
        ),
        (
            {
                "routes": [
                    {
                        "id": "r",
                        "uri": "/a",
                        "upstream": {"nodes": {"h:1": 1}},
                        "plugins": {"proxy-rewrite": {"uri": 5}},
                    }
                ]
            },
            "- at `$.routes[0].plugins.proxy-rewrite.uri`",
        ),
        ({"server": {"listen": "nope"}}, "- at `$.server`"),
        ({"routes": [], "extra": 1}, "unknown field `extra`"),
        (
            {"routes": [{"id": "r", "uri": "/a", "upstream": {"nodes": {"h:1": 0}}}]},
            "a node with a weight above 0 - at `$.routes[0].upstream`",
        ),
    ],
)
def test_check_rejects_bad_config_naming_the_path(
    tmp_path: Path, config: dict[str, Any], expected: str
) -> None:
    path = write_config(tmp_path / "bad.json", config)
    for args in (("check", "--config", str(path)), ("--config", str(path), "--check")):
        result = run_cli(*args)
        assert result.returncode != 0
        assert expected in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_listen_address_in_use_is_one_clear_line(tmp_path: Path, workers: int) -> None:
    """As nginx's `bind() to ... failed (98: Address already in use)`: the address and the
    reason on one line, exit 1, no traceback; with workers, before any is started (they
    would fail and be restarted forever)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    with taken:
        port = taken.getsockname()[1]
        config = basic_config(port, "127.0.0.1:9", workers=workers)
        result = run_cli("--config", str(write_config(tmp_path / "c.json", config)))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert "restarting" not in result.stderr


def test_check_reports_every_problem(tmp_path: Path) -> None:
    config = {
        "routes": [
            {"id": "a", "uri": "/a", "upstream_id": "nope"},
            {"id": "a", "uri": "/b", "service_id": "nosvc"},
        ]
    }
    result = run_cli("check", "--config", str(write_config(tmp_path / "c.json", config)))
    assert result.returncode == 1
    lines = [ln for ln in result.stderr.splitlines() if " - at `" in ln]
    assert len(lines) == 3
    assert "$.routes[1].id" in result.stderr
    assert "$.routes[1].service_id" in result.stderr
    assert result.stderr.rstrip().endswith("configuration is invalid (3 problems)")


def test_check_unset_env_reference_is_an_error(tmp_path: Path) -> None:
    config = {
        "routes": [
            {
                "id": "r",
                "uri": "/a",
                "upstream": {"nodes": {"h:1": 1}},
                "plugins": {"proxy-rewrite": {"host": "$env://GATEWAY_TEST_UNSET"}},
            }
        ]
    }
    result = run_cli("check", "--config", str(write_config(tmp_path / "c.json", config)))
    assert result.returncode == 1
    assert "GATEWAY_TEST_UNSET" in result.stderr
    assert "$.routes[0].plugins.proxy-rewrite.host" in result.stderr


# --- serving ----------------------------------------------------------------------------


async def start_process(
    tmp_path: Path, started: list[GatewayProcess], config: dict[str, Any]
) -> tuple[GatewayProcess, Path]:
    path = write_config(tmp_path / "config.json", config)
    process = GatewayProcess(path, tmp_path)
    started.append(process)
    process.start()
    listen = config["server"]["listen"]
    for address in [listen] if isinstance(listen, str) else listen:
        await wait_port(address)
    return process, path


async def test_serves_several_addresses_and_writes_access_log(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    a, b = f"127.0.0.1:{free_port()}", f"[::1]:{free_port()}"
    config = basic_config(0, upstream.address)
    config["server"]["listen"] = [a, b]
    config["server"]["access_log"] = str(tmp_path / "access.log")
    await start_process(tmp_path, gateway_process, config)
    assert (await request(a, target="/x?apikey=secret-value")).status == 200
    assert (await request(b, target="/y")).status == 200
    # Refused requests get their line too (as nginx logs its 400s), without what they carried.
    refused = [
        b"GET /z HTTP/1.1\r\nHost: a b\r\n\r\n",  # a Host that is not host[:port]
        b"GET /z HTTP/1.1\r\nHost: a\r\napikey : secret-value\r\n\r\n",  # h11 refuses it
        b"NOT HTTP AT ALL\r\n\r\n",
    ]
    for data in refused:
        assert (await exchange_raw(a, data)).startswith(b"HTTP/1.1 400 ")
    # The line is written just after the response goes out: wait for it.
    log_file = tmp_path / "access.log"
    with trio.fail_after(10):
        while len(log_file.read_text().splitlines()) < 5:  # noqa: ASYNC110 (a file, no event)
            await trio.sleep(0.02)
    lines = log_file.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["path"] for e in entries] == ["/x", "/y", "/z", None, None]
    assert [e["method"] for e in entries] == ["GET", "GET", "GET", None, None]
    assert [e["status"] for e in entries] == [200, 200, 400, 400, 400]
    assert entries[0]["route_id"] == "r1"
    assert entries[0]["upstream"] == upstream.address
    assert entries[0]["upstream_time"] >= 0
    assert all(e["route_id"] is None and e["upstream"] is None for e in entries[2:])
    assert "secret-value" not in "\n".join(lines)


async def test_serves_a_config_whose_secrets_come_from_the_environment(
    tmp_path: Path,
    gateway_process: list[GatewayProcess],
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An APISIX config brought over with its references: `$env://NAME/key` for a key
    held in a JSON variable, `${{NAME:=default}}` for a number; `gateway check` refuses a
    `$secret://` one rather than take it as a literal key."""
    monkeypatch.setenv("GATEWAY_TEST_KEYS", json.dumps({"jack": "jack-from-env"}))
    address = f"127.0.0.1:{free_port()}"
    limit = {"count": "${{GATEWAY_TEST_LIMIT:=1}}", "time_window": 60, "key": "consumer_name"}
    config = {
        "server": {"listen": address},
        "routes": [
            {
                "id": "r",
                "uri": "/*",
                "upstream": {"nodes": {upstream.address: 1}},
                "plugins": {"key-auth": {}, "limit-count": limit},
            }
        ],
        "consumers": [
            {"username": "jack", "plugins": {"key-auth": {"key": "$env://GATEWAY_TEST_KEYS/jack"}}}
        ],
    }
    await start_process(tmp_path, gateway_process, config)
    assert (
        await request(address, headers=[("apikey", "$env://GATEWAY_TEST_KEYS/jack")])
    ).status == 401
    assert (await request(address, headers=[("apikey", "jack-from-env")])).status == 200
    assert (await request(address, headers=[("apikey", "jack-from-env")])).status == 503
    assert len(upstream.received) == 1

    config["consumers"][0]["plugins"]["key-auth"]["key"] = "$secret://vault/1/jack/key"
    result = run_cli("check", "--config", str(write_config(tmp_path / "c.json", config)))
    assert result.returncode == 1
    assert "$.consumers[0].plugins.key-auth.key" in result.stderr
    assert "$secret://" in result.stderr


async def test_sighup_reload_valid_then_invalid(
    tmp_path: Path,
    gateway_process: list[GatewayProcess],
    upstream: Upstream,
    second_upstream: Upstream,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = basic_config(0, upstream.address)
    config["server"]["listen"] = address
    process, path = await start_process(tmp_path, gateway_process, config)
    assert (await request(address)).status == 200
    assert len(upstream.received) == 1

    write_config(path, basic_config(0, second_upstream.address) | {"server": config["server"]})
    process.signal(signal.SIGHUP)
    await process.wait_log("config reloaded")
    assert (await request(address)).status == 200
    assert len(second_upstream.received) == 1

    path.write_text('{"routes": [{"id": "r1", "uri": 5}]}')
    process.signal(signal.SIGHUP)
    await process.wait_log("reload refused")
    assert "$.routes[0].uri" in process.stderr()
    assert (await request(address)).status == 200
    assert len(second_upstream.received) == 2

    # Valid, but its access log cannot be opened: refused too, and the process lives on.
    unopenable = {"listen": address, "access_log": str(tmp_path / "no-such-dir" / "a.log")}
    write_config(path, basic_config(0, upstream.address) | {"server": unopenable})
    process.signal(signal.SIGHUP)
    await process.wait_log("reload refused", count=2)
    assert "no-such-dir" in process.stderr()
    assert (await request(address)).status == 200
    assert len(second_upstream.received) == 3


async def test_a_reload_that_meets_a_bug_keeps_the_old_config(
    tmp_path: Path, nursery: trio.Nursery, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a refused config: whatever fails while the new one is built, the old one
    keeps serving and the gateway lives on (SIGHUP calls `reload`)."""
    path = write_config(tmp_path / "c.json", basic_config(0, upstream.address))
    limits = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=limits), limits)
    address = (await nursery.start(gateway.serve))[0]

    def broken(self: KeyAuth, conf: object, env: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(KeyAuth, "__init__", broken)
    keyed = basic_config(0, upstream.address)
    keyed["routes"][0]["plugins"] = {"key-auth": {}}
    write_config(path, keyed)
    assert await gateway.reload() is False
    assert (await request(address)).status == 200  # the old config: no key-auth


async def test_the_old_config_serves_while_the_new_one_compiles(
    tmp_path: Path, nursery: trio.Nursery, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload compiles on a worker thread (100,000 consumers take seconds): requests
    meanwhile are served by the old config, then by the new one."""
    path = write_config(tmp_path / "c.json", basic_config(0, upstream.address))
    limits = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=limits), limits)
    address = (await nursery.start(gateway.serve))[0]
    compiling, go_on = threading.Event(), threading.Event()
    real = server_module.compile_config

    def held(*args: Any, **kwargs: Any) -> Any:
        compiling.set()
        go_on.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(server_module, "compile_config", held)
    keyed = basic_config(0, upstream.address)
    keyed["routes"][0]["plugins"] = {"key-auth": {}}
    write_config(path, keyed)
    done = trio.Event()
    results: list[bool] = []

    async def reload() -> None:
        results.append(await gateway.reload())
        done.set()

    nursery.start_soon(reload)
    await trio.to_thread.run_sync(compiling.wait)
    for _ in range(3):
        assert (await request(address)).status == 200  # the old config, without key-auth
    assert not done.is_set()
    go_on.set()
    await done.wait()
    assert results == [True]
    assert (await request(address)).status == 401  # the new one asks for a key


async def test_a_reload_names_what_only_a_restart_applies(
    tmp_path: Path, nursery: trio.Nursery, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """The listen addresses, the worker count and max_connections are set when the gateway
    starts: a reload that changes them applies the rest and says so, naming each."""
    path = write_config(tmp_path / "c.json", basic_config(0, upstream.address))
    limits = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=limits), limits)
    await nursery.start(gateway.serve)
    changed = basic_config(0, upstream.address, workers=2, limits={"max_connections": 5})
    write_config(path, changed)
    with caplog.at_level("WARNING", logger="gateway"):
        assert await gateway.reload() is True
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [
        "server.workers changed: restart the gateway to apply it",
        "server.limits.max_connections changed: restart the gateway to apply it",
    ]


async def test_sigterm_lets_in_flight_request_finish(
    tmp_path: Path, gateway_process: list[GatewayProcess], nursery: trio.Nursery
) -> None:
    arrived = trio.Event()
    release = trio.Event()

    async def slow(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        arrived.set()
        await release.wait()
        return 200, [], b"finished"

    up = await nursery.start(Upstream(responder=slow).serve)
    address = f"127.0.0.1:{free_port()}"
    config = basic_config(0, up.address)
    config["server"]["listen"] = address
    process, _ = await start_process(tmp_path, gateway_process, config)
    results: list[Any] = []

    async def client() -> None:
        results.append(await request(address, target="/slow"))

    async with trio.open_nursery() as inner:
        inner.start_soon(client)
        await arrived.wait()
        process.signal(signal.SIGTERM)
        await process.wait_log("draining")
        # New connections are refused while the old request is still in flight (one that
        # reached the listener's backlog just before it closed is reset instead).
        with trio.fail_after(10):
            while True:
                try:
                    await request(address)
                except (OSError, trio.BrokenResourceError):
                    break
                await trio.sleep(0.02)
        release.set()
    assert results[0].status == 200
    assert results[0].body == b"finished"
    assert await process.wait_exit() == 0


async def test_python_dash_m_and_console_script(tmp_path: Path, upstream: Upstream) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = basic_config(0, upstream.address)
    config["server"]["listen"] = address
    path = write_config(tmp_path / "c.json", config)
    script = Path(sys.executable).parent / "gateway"
    process = await trio.lowlevel.open_process(
        [str(script), "--config", str(path)], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        await wait_port(address)
        assert (await request(address)).status == 200
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _worker_pids(supervisor: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


async def test_workers_share_the_port_and_are_restarted(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = basic_config(0, upstream.address, workers=2)
    config["server"]["listen"] = address
    process, _ = await start_process(tmp_path, gateway_process, config)
    await process.wait_log("gateway listening", count=2)
    workers = _worker_pids(process.pid)
    assert len(workers) == 2
    assert (await request(address)).status == 200

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    await process.wait_log("restarting")
    await process.wait_log("gateway listening", count=3)
    now = _worker_pids(process.pid)
    assert len(now) == 2
    assert victim not in now
    for _ in range(10):
        assert (await request(address)).status == 200
    process.signal(signal.SIGTERM)
    assert await process.wait_exit() == 0


async def test_a_worker_restarted_after_a_refused_reload_serves_the_old_config(
    tmp_path: Path,
    gateway_process: list[GatewayProcess],
    upstream: Upstream,
    second_upstream: Upstream,
) -> None:
    """A refused reload keeps the previous config serving, in a worker started after it too:
    workers run on the supervisor's copy of the last valid file, not on the file itself."""
    address = f"127.0.0.1:{free_port()}"
    config = basic_config(0, upstream.address, workers=2)
    config["server"]["listen"] = address
    process, path = await start_process(tmp_path, gateway_process, config)
    await process.wait_log("gateway listening", count=2)
    path.write_text('{"routes": [{"id": "r1", "uri": 5}]}')
    process.signal(signal.SIGHUP)
    await process.wait_log("reload refused")
    assert "$.routes[0].uri" in process.stderr()

    os.kill(min(_worker_pids(process.pid)), signal.SIGKILL)
    await process.wait_log("restarting")
    await process.wait_log("gateway listening", count=3)
    for _ in range(10):
        assert (await request(address)).status == 200
    assert len(upstream.received) == 10

    # A valid file then reaches every worker.
    write_config(path, basic_config(0, second_upstream.address) | {"server": config["server"]})
    process.signal(signal.SIGHUP)
    await process.wait_log("config reloaded", count=2)
    for _ in range(10):
        assert (await request(address)).status == 200
    assert len(second_upstream.received) == 10
    process.signal(signal.SIGTERM)
    assert await process.wait_exit() == 0


def test_supervisor_refuses_a_config_its_workers_could_not_start_on(tmp_path: Path) -> None:
    config = basic_config(0, "127.0.0.1:1", workers=2)
    path = write_config(tmp_path / "c.json", config)
    supervisor = Supervisor(str(path), 2)
    copy = Path(supervisor.copy_path)
    try:
        assert supervisor.take_config()
        kept = copy.read_bytes()
        for broken in (
            '{"routes": [{"id": "r1", "uri": 5}]}',
            json.dumps(config | {"server": {"access_log": str(tmp_path / "no-dir" / "a.log")}}),
        ):
            path.write_text(broken)
            assert not supervisor.take_config()
            assert copy.read_bytes() == kept
    finally:
        shutil.rmtree(copy.parent)


def test_ipv6_loopback_available() -> None:
    # The multi-address test above listens on [::1]; make a missing IPv6 stack obvious.
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))


def test_check_never_prints_secrets(tmp_path: Path) -> None:
    secret = "super-secret-key-123"
    duplicate = {
        "consumers": [
            {
                "username": "a",
                "credentials": [{"id": "c1", "plugins": {"key-auth": {"key": secret}}}],
            },
            {
                "username": "b",
                "credentials": [{"id": "c2", "plugins": {"key-auth": {"key": secret}}}],
            },
        ]
    }
    unusable = {
        "consumers": [
            {
                "username": "c",
                "credentials": [
                    {
                        "id": "c3",
                        "plugins": {
                            "jwt-auth": {"key": "j", "public_key": secret, "algorithm": "RS256"}
                        },
                    }
                ],
            },
        ]
    }
    result = run_cli("check", "--config", str(write_config(tmp_path / "c.json", duplicate)))
    assert result.returncode == 1
    assert "key-auth key already used" in result.stderr
    assert "$.consumers[1].credentials[0].plugins.key-auth" in result.stderr
    assert secret not in result.stderr + result.stdout
    result = run_cli("check", "--config", str(write_config(tmp_path / "d.json", unusable)))
    assert result.returncode == 1
    assert "$.consumers[0].credentials[0].plugins.jwt-auth" in result.stderr
    assert secret not in result.stderr + result.stdout


async def test_refused_requests_are_logged_without_the_bytes_they_carried(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    """h11 quotes the offending line in its errors; a header line or chunk can hold a key,
    so the log names the fault only."""
    port = free_port()
    process, _ = await start_process(
        tmp_path, gateway_process, basic_config(port, upstream.address)
    )
    secret = "key-9f8e7d6c5b4a"
    attempts = [
        b"GET / HTTP/1.1\r\nHost: x\r\napikey : %s\r\n\r\n",  # space before the colon
        b"GET / HTTP/1.1\r\nHost: x\r\nap\x7fikey: %s\r\n\r\n",  # DEL in a name
        b"GET /?apikey=%s HTTP/1.1 junk\r\nHost: x\r\n\r\n",  # a bad request line
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz %s\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab%s\r\n",
    ]
    for attempt in attempts:
        answer = await exchange_raw(f"127.0.0.1:{port}", attempt % secret.encode())
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:60]
    await process.wait_log("rejecting request", count=len(attempts))
    assert secret not in process.stderr() + process.stdout()


def test_hash_key_prints_the_key_hash_that_authenticates(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-key"],
        input="bot-key\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0
    digest = result.stdout.strip()
    assert digest == "sha256:" + __import__("hashlib").sha256(b"bot-key").hexdigest()
    assert "bot-key" not in result.stdout


async def test_sighup_adds_a_consumer(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream
) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = basic_config(0, upstream.address)
    config["server"]["listen"] = address
    config["routes"][0]["plugins"] = {"key-auth": {}}
    config["consumers"] = [
        {
            "username": "JohnDoe",
            "credentials": [{"id": "john-1", "plugins": {"key-auth": {"key": "john-key"}}}],
        }
    ]
    process, path = await start_process(tmp_path, gateway_process, config)
    assert (await request(address, headers=[("apikey", "jane-key")])).status == 401
    config["consumers"].append(
        {
            "username": "JaneRoe",
            "credentials": [
                {
                    "id": "jane-1",
                    "plugins": {
                        "key-auth": {
                            "key_hash": "sha256:"
                            + __import__("hashlib").sha256(b"jane-key").hexdigest()
                        }
                    },
                }
            ],
        }
    )
    write_config(path, config)
    process.signal(signal.SIGHUP)
    await process.wait_log("config reloaded")
    assert (await request(address, headers=[("apikey", "jane-key")])).status == 200
    assert upstream.received[-1].header(b"x-consumer-username") == b"JaneRoe"
    assert (await request(address, headers=[("apikey", "john-key")])).status == 200


async def test_demo_echo_upstream_answers_head_and_get_through_the_gateway(
    nursery: trio.Nursery,
) -> None:
    """`make run`'s echo upstream: a HEAD gets the GET's head without a body (it used to
    break the connection, which the gateway rightly answered with 502)."""
    echo = f"127.0.0.1:{free_port()}"
    process = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "bench/echo_upstream.py"), "--port", echo.split(":")[1]],
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        await wait_port(echo)
        route = {"id": "r", "uri": "/*", "upstream": {"nodes": {echo: 1}}}
        _, gw = await start_gateway(nursery, config_for([route]))
        head = await request(gw, method="HEAD", target="/echo")
        assert head.status == 200
        assert head.body == b""
        assert int(head.header(b"content-length") or 0) > 0
        get = await request(gw, target="/echo")
        assert get.json()["path"] == "/echo"
    finally:
        process.kill()
        await process.wait()


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _lines(path: Path, count: int) -> list[dict[str, Any]]:
    """The access log's entries once it holds `count` lines (each is written just after
    its response went out)."""
    with trio.fail_after(10):
        while len(entries := _entries(path)) < count:  # noqa: ASYNC110 (a file, no event)
            await trio.sleep(0.02)
    return entries


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigusr1_reopens_the_access_log_after_rotation(
    tmp_path: Path, gateway_process: list[GatewayProcess], upstream: Upstream, workers: int
) -> None:
    """As nginx's USR1: logrotate renames the file, then the gateway writes a new one (every
    worker, the supervisor passing the signal on)."""
    address = f"127.0.0.1:{free_port()}"
    log_file = tmp_path / "access.log"
    config = basic_config(0, upstream.address, workers=workers, access_log=str(log_file))
    config["server"]["listen"] = address
    process, _ = await start_process(tmp_path, gateway_process, config)
    await process.wait_log("gateway listening", count=workers)
    assert (await request(address, target="/before")).status == 200
    await _lines(log_file, 1)

    rotated = tmp_path / "access.log.1"
    log_file.rename(rotated)
    process.signal(signal.SIGUSR1)
    await process.wait_log("reopened the access log", count=workers)
    for _ in range(4):
        assert (await request(address, target="/after")).status == 200
    assert [e["path"] for e in await _lines(log_file, 4)] == ["/after"] * 4
    assert [e["path"] for e in await _lines(rotated, 1)] == ["/before"]
    # Still serving, and USR1 did not stop anything.
    process.signal(signal.SIGTERM)
    assert await process.wait_exit() == 0
