"""limit-count against a real redis-server that speaks TLS: APISIX's `redis_ssl` and
`redis_ssl_verify`, and the connection pool fields its exports carry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import Upstream, config_for, free_port, request, start_gateway
from tests.redis_server import RedisServer, redis_command
from tests.tls_certs import write_certificate


class TlsRedis:
    def __init__(self, server: RedisServer, tls_port: int, cert: Path) -> None:
        self.server = server
        self.tls_port = tls_port
        self.cert = cert


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    directory = tmp_path_factory.mktemp("redis-tls")
    cert, key = write_certificate(directory)
    tls_port = free_port()
    # The plain port stays open for the test's own look at the counters.
    server = RedisServer(
        directory,
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-auth-clients",
        "no",
    )
    server.start()
    yield TlsRedis(server, tls_port, cert)
    server.stop()


def limited_route(upstream: Upstream, rid: str, tls: TlsRedis, **fields: Any) -> dict[str, Any]:
    conf = {
        "count": 2,
        "time_window": 60,
        "rejected_code": 429,
        "policy": "redis",
        "redis_host": "127.0.0.1",
        "redis_port": tls.tls_port,
        "redis_ssl": True,
        # What APISIX's admin API writes into every stored limit-count conf.
        "redis_keepalive_timeout": 10000,
        "redis_keepalive_pool": 100,
        **fields,
    }
    return {
        "id": rid,
        "uri": f"/{rid}",
        "upstream": {"nodes": {upstream.address: 1}},
        "plugins": {"limit-count": conf},
    }


async def test_redis_over_tls(
    nursery: trio.Nursery,
    upstream: Upstream,
    tls_redis: TlsRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls_redis.server.flush()
    routes = [
        limited_route(upstream, "unverified", tls_redis, redis_ssl_verify=False),
        limited_route(upstream, "verified", tls_redis, redis_ssl_verify=True),
    ]
    # The system's CA list, here one that holds this server's certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_redis.cert))
    _, gw = await start_gateway(nursery, config_for(routes))
    for target in ("/unverified", "/verified"):
        statuses = [(await request(gw, target=target)).status for _ in range(3)]
        assert statuses == [200, 200, 429], target
    # The counters are in that Redis (read through its plain port).
    keys = redis_command(tls_redis.server.port, "KEYS", "gateway:limit-count:*")
    assert keys.startswith(b"*2\r\n")


async def test_redis_tls_verification_refuses_an_unknown_certificate(
    nursery: trio.Nursery,
    upstream: Upstream,
    tls_redis: TlsRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls_redis.server.flush()
    other_ca, _ = write_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    routes = [
        limited_route(upstream, "verified", tls_redis, redis_ssl_verify=True),
        limited_route(
            upstream, "degraded", tls_redis, redis_ssl_verify=True, allow_degradation=True
        ),
        # Plain text to a TLS port fails too.
        limited_route(upstream, "plain", tls_redis, redis_ssl=False),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    resp = await request(gw, target="/verified")
    assert (resp.status, resp.json()) == (500, {"error_msg": "failed to limit count"})
    assert (await request(gw, target="/plain")).status == 500
    assert [(await request(gw, target="/degraded")).status for _ in range(3)] == [200] * 3
    assert redis_command(tls_redis.server.port, "DBSIZE") == b":0\r\n"
