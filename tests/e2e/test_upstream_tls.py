"""Upstreams with `scheme: https` over real sockets: TLS to a test upstream with its own
certificate, checked or not as `tls.verify` says, and pooled like plain connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import Upstream, config_for, request, start_gateway
from tests.tls_certs import serve_tls, write_certificate


async def tls_upstream(nursery: trio.Nursery, directory: Path) -> tuple[Upstream, Path]:
    """An echo upstream behind TLS, with a self-signed certificate for 127.0.0.1."""
    upstream = Upstream(name="tls")
    return upstream, await serve_tls(nursery, upstream, directory)


def route(up: Upstream, rid: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "uri": f"/{rid}",
        "upstream": {"nodes": {up.address: 1}, "scheme": "https", **fields},
    }


async def test_https_upstream(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up, _ = await tls_upstream(nursery, tmp_path)
    routes = [
        route(up, "plain"),
        route(up, "named", pass_host="rewrite", upstream_host="api.example"),
        route(up, "checked", tls={"verify": True}, pass_host="node"),
    ]
    # Certificates are checked against the system's CAs: here, another one.
    (tmp_path / "other").mkdir()
    other, _ = write_certificate(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    _, gw = await start_gateway(nursery, config_for(routes))
    for _ in range(3):
        resp = await request(gw, target="/plain")
        assert resp.status == 200
        assert resp.json()["target"] == "/plain"
    assert up.connections == 1  # one TLS connection, pooled and reused
    resp = await request(gw, target="/named")
    assert resp.status == 200
    assert up.received[-1].header(b"host") == b"api.example"
    assert "api.example" in up.server_names  # type: ignore[attr-defined]
    # tls.verify: this certificate chains to no CA the gateway trusts.
    resp = await request(gw, target="/checked")
    assert resp.status == 502
    assert len(up.received) == 4


async def test_https_upstream_verified(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up, cert = await tls_upstream(nursery, tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    routes = [route(up, "checked", tls={"verify": True}, pass_host="node")]
    _, gw = await start_gateway(nursery, config_for(routes))
    resp = await request(gw, target="/checked")
    assert resp.status == 200
    assert up.received[-1].header(b"host") == up.address.encode()


async def test_a_certificate_for_another_address_is_refused(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trusted, but issued for 10.9.9.9: the node 127.0.0.1 is not the one it names."""
    up = Upstream(name="elsewhere")
    cert = await serve_tls(nursery, up, tmp_path, ip="10.9.9.9")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    routes = [route(up, "checked", tls={"verify": True}, pass_host="node")]
    _, gw = await start_gateway(nursery, config_for(routes))
    assert (await request(gw, target="/checked")).status == 502
    assert up.received == []
