"""Upstreams with `scheme: https` over real sockets: TLS to a test upstream with its own
certificate, checked or not as `tls.verify` says, and pooled like plain connections."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import Upstream, config_for, raw_serve, request, start_gateway
from tests.tls_certs import Authority, serve_tls, write_certificate


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


async def mtls_upstream(
    nursery: trio.Nursery, tmp_path: Path, ca: Authority
) -> tuple[Upstream, Path, list[str]]:
    """An echo upstream behind TLS that requires a client certificate from `ca`; returns
    it, its own certificate, and the client names it saw, one per handshake."""
    up = Upstream(name="mtls")
    server_cert, server_key = write_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.pem)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    presented: list[str] = []

    async def handle(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, context, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            await trio.aclose_forcefully(stream)
            return
        cert = tls.getpeercert()
        assert cert is not None
        presented.append(dict(item[0] for item in cert["subject"])["commonName"])
        await up._handle(tls)  # type: ignore[arg-type]

    await nursery.start(functools.partial(raw_serve, handle, on_port=up._set_port))
    return up, server_cert, presented


async def test_client_certificates_for_an_upstream_that_asks(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tls.client_cert` / `client_key` (mutual TLS with the upstream): an upstream that
    requires a certificate from its CA gets each route's own, also on pooled connections
    (a connection opened with one identity never carries another's requests); a route
    without one is refused by the upstream: 502."""
    ca = Authority("Upstream clients CA")
    alice, bob = ca.issue("alice"), ca.issue("bob")
    up, server_cert, presented = await mtls_upstream(nursery, tmp_path, ca)
    monkeypatch.setenv("SSL_CERT_FILE", str(server_cert))
    routes = [
        route(up, "alice", tls={"client_cert": alice[0], "client_key": alice[1]}),
        route(up, "bob", tls={"client_cert": bob[0], "client_key": bob[1]}),
        # alice's identity, but the upstream's certificate checked: it names 127.0.0.1,
        # not the Host sent (gateway.test), so never on alice's unchecked connection.
        route(up, "checked", tls={"client_cert": alice[0], "client_key": alice[1], "verify": True}),
        route(up, "nobody"),
    ]
    _, gw = await start_gateway(nursery, config_for(routes))
    for _ in range(2):
        for who in ("alice", "bob"):
            resp = await request(gw, target=f"/{who}")
            assert resp.status == 200
            assert resp.json()["target"] == f"/{who}"
    # One connection each, kept: the same node and SNI, apart by the certificate shown.
    assert presented == ["alice", "bob"]
    assert [r.connection for r in up.received] == [0, 1, 0, 1]
    assert (await request(gw, target="/checked")).status == 502
    assert (await request(gw, target="/nobody")).status == 502
    assert len(up.received) == 4


async def test_https_probes_show_the_client_certificate(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Active `type: https` checks of an upstream with `tls.client_cert` present it too,
    so an upstream that asks for one sees the probes (not failed handshakes)."""
    ca = Authority("Upstream clients CA")
    alice = ca.issue("alice")
    up, _, presented = await mtls_upstream(nursery, tmp_path, ca)
    probes = {
        "active": {
            "type": "https",
            "http_path": "/health",
            "https_verify_certificate": False,
            "healthy": {"interval": 1},
        }
    }
    tls = {"client_cert": alice[0], "client_key": alice[1]}
    _, _ = await start_gateway(nursery, config_for([route(up, "probed", tls=tls, checks=probes)]))
    with trio.fail_after(20):
        while not any(r.target == b"/health" for r in up.received):  # noqa: ASYNC110 (probe)
            await trio.sleep(0.05)
    assert presented[0] == "alice"
