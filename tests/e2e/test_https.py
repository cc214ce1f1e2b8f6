"""HTTPS on `server.ssl_listen` with APISIX's `ssls`: real TLS handshakes from a client
that trusts only the test CA, the certificate picked by SNI, requests proxied to a plain
upstream that is told the request came over https."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket, wrap_client_stream

from gateway.config.load import load
from gateway.config.ssl import load_pairs
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from tests.helpers import (
    LogLine,
    Response,
    Upstream,
    config_for,
    connect,
    read_response,
    read_until_close,
    request,
)
from tests.tls_certs import Authority


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority()


def ssl_entry(pair: tuple[str, str], *snis: str, **extra: Any) -> dict[str, Any]:
    cert, key = pair
    return {"cert": cert, "key": key, "snis": list(snis), **extra}


def https_config(up: Upstream, ssls: list[dict[str, Any]], **top: Any) -> dict[str, Any]:
    routes = top.pop("routes", None) or [
        {"id": "r", "uri": "/*", "upstream": {"nodes": {up.address: 1}}}
    ]
    server = {"ssl_listen": "127.0.0.1:0", **top.pop("server", {})}
    return config_for(routes, server=server, ssls=ssls, **top)


async def start(
    nursery: trio.Nursery, config: dict[str, Any], path: Path
) -> tuple[Gateway, str, str]:
    """A gateway serving `config` from the file `path` (so that it can reload); returns it,
    its plain address and its HTTPS address."""
    path.write_text(json.dumps(config))  # noqa: ASYNC240 - a small file, before serving
    limits = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=limits), limits)
    plain, tls = await nursery.start(gateway.serve)
    return gateway, plain, tls


async def open_tls(
    address: str, ca: Authority, server_name: str | None, client: tuple[str, str] | None = None
) -> trio.SSLStream[trio.SocketStream]:
    """A TLS connection asking for `server_name`, showing `client` (a certificate chain
    and its key) when given."""
    stream = await connect(address)
    context = ca.client_context()
    if server_name is None:
        context.check_hostname = False
    if client is not None:
        load_pairs(context, [client])
    tls = trio.SSLStream(stream, context, server_hostname=server_name, https_compatible=True)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return tls


async def exchange(
    tls: trio.SSLStream[trio.SocketStream],
    target: str = "/",
    host: str = "api.test",
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """One request on an open connection."""
    conn = h11.Connection(h11.CLIENT)
    hdrs = [("host", host), *(headers or [])]
    if body:
        hdrs.append(("content-length", str(len(body))))
    data = conn.send(h11.Request(method=method, target=target, headers=hdrs))
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await tls.send_all(data)
    return await read_response(tls, conn, method.encode())  # type: ignore[arg-type]


def peer_name(tls: trio.SSLStream[trio.SocketStream]) -> str:
    cert = tls.getpeercert()
    assert cert is not None
    return dict(item[0] for item in cert["subject"])["commonName"]


async def test_a_request_over_https_reaches_the_upstream(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    config = https_config(upstream, [ssl_entry(ca.issue("api.test"), "api.test")])
    _, plain, address = await start(nursery, config, tmp_path / "c.json")
    tls = await open_tls(address, ca, "api.test")
    assert tls.selected_alpn_protocol() == "http/1.1"
    for i in range(3):  # one kept connection
        resp = await exchange(tls, target=f"/hello/{i}")
        assert resp.status == 200
        assert resp.json()["target"] == f"/hello/{i}"
    await tls.aclose()
    assert len(upstream.received) == 3
    seen = upstream.received[-1]
    assert seen.header(b"x-forwarded-proto") == b"https"
    assert seen.header(b"x-forwarded-port") == address.rpartition(":")[2].encode()
    assert seen.header(b"host") == b"api.test"
    # The plain address still speaks plain HTTP.
    resp = await request(plain, target="/plain")
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-forwarded-proto") == b"http"


async def test_the_sni_picks_the_certificate(
    nursery: trio.Nursery,
    upstream: Upstream,
    ca: Authority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As APISIX: an exact name first, then `*.parent` one label down, else no certificate
    (the handshake fails); SNIs compare without case."""
    ssls = [
        ssl_entry(ca.issue("exact", "a.test"), "A.test"),
        ssl_entry(ca.issue("wild", "*.b.test"), "*.b.test"),
        ssl_entry(ca.issue("both", "c.test", "d.test"), "c.test", "d.test"),
    ]
    _, _, address = await start(nursery, https_config(upstream, ssls), tmp_path / "c.json")
    for name, expected in [
        ("a.test", "exact"),
        ("x.b.test", "wild"),
        ("C.TEST", "both"),
        ("d.test", "both"),
    ]:
        tls = await open_tls(address, ca, name)
        assert peer_name(tls) == expected
        assert (await exchange(tls, host=name)).status == 200
        await tls.aclose()
    last = LogLine("the client sent no SNI")
    logging.getLogger("gateway").addHandler(last)
    try:
        with caplog.at_level(logging.INFO, logger="gateway"):
            for name in ["y.x.b.test", "b.test", "e.test", None]:
                with pytest.raises(trio.BrokenResourceError):
                    await open_tls(address, ca, name)
            with trio.fail_after(10):  # logged after the client saw the failure
                await last.seen.wait()
    finally:
        logging.getLogger("gateway").removeHandler(last)
    logged = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert logged == [
        "TLS handshake from 127.0.0.1 failed: no certificate for SNI 'y.x.b.test'",
        "TLS handshake from 127.0.0.1 failed: no certificate for SNI 'b.test'",
        "TLS handshake from 127.0.0.1 failed: no certificate for SNI 'e.test'",
        "TLS handshake from 127.0.0.1 failed: the client sent no SNI",
    ]
    assert len(upstream.received) == 4


async def test_a_catch_all_certificate(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """`*` answers every name no other entry has; a client without SNI still gets none."""
    ssls = [
        ssl_entry(ca.issue("exact", "a.test"), "a.test"),
        {**ssl_entry(ca.issue("fallback", "other.test"), "*"), "snis": None, "sni": "*"},
    ]
    _, _, address = await start(nursery, https_config(upstream, ssls), tmp_path / "c.json")
    tls = await open_tls(address, ca, "a.test")
    assert peer_name(tls) == "exact"
    await tls.aclose()
    tls = await open_tls(address, ca, "other.test")
    assert peer_name(tls) == "fallback"
    assert (await exchange(tls, host="other.test")).status == 200
    await tls.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await open_tls(address, ca, None)


async def test_an_ecdsa_and_an_rsa_certificate_for_the_same_names(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """`certs`/`keys`: a client that takes only RSA signatures gets the RSA certificate."""
    rsa_cert, rsa_key = ca.issue("rsa", "api.test", rsa_key=True)
    entry = ssl_entry(ca.issue("ecdsa", "api.test"), "api.test", certs=[rsa_cert], keys=[rsa_key])
    _, _, address = await start(nursery, https_config(upstream, [entry]), tmp_path / "c.json")
    tls = await open_tls(address, ca, "api.test")
    assert peer_name(tls) == "ecdsa"
    await tls.aclose()
    stream = await connect(address)
    context = ca.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    tls = trio.SSLStream(stream, context, server_hostname="api.test")
    await tls.do_handshake()
    assert peer_name(tls) == "rsa"
    assert (await exchange(tls)).status == 200
    await tls.aclose()


async def test_large_bodies_both_ways(nursery: trio.Nursery, ca: Authority, tmp_path: Path) -> None:
    """A 1 MiB request body reaches the upstream whole, a 1 MiB answer the client, and the
    connection serves the next request."""
    big = bytes(range(256)) * 4096

    async def responder(req: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if req.target == b"/big":
            return 200, [(b"content-type", b"application/octet-stream")], big
        return 200, [], str(len(req.body)).encode()

    up = await nursery.start(Upstream(responder=responder).serve)
    config = https_config(up, [ssl_entry(ca.issue("api.test"), "api.test")])
    _, _, address = await start(nursery, config, tmp_path / "c.json")
    tls = await open_tls(address, ca, "api.test")
    resp = await exchange(tls, target="/upload", method="POST", body=big)
    assert (resp.status, resp.body) == (200, str(len(big)).encode())
    assert up.received[-1].body == big
    resp = await exchange(tls, target="/big")
    assert resp.status == 200
    assert resp.body == big
    resp = await exchange(tls, target="/again", method="POST", body=b"x" * 10)
    assert resp.body == b"10"
    await tls.aclose()


async def test_plain_http_to_the_https_address_gets_400(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    config = https_config(upstream, [ssl_entry(ca.issue("api.test"), "api.test")])
    _, _, address = await start(nursery, config, tmp_path / "c.json")
    async with await connect(address) as stream:
        await stream.send_all(b"GET /x HTTP/1.1\r\nHost: api.test\r\n\r\n")
        with trio.fail_after(10):
            answer = await read_until_close(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body) == {"error_msg": "400 The plain HTTP request was sent to HTTPS port"}
    assert upstream.received == []


async def test_a_silent_client_is_cut_at_the_head_timeout(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    config = https_config(
        upstream,
        [ssl_entry(ca.issue("api.test"), "api.test")],
        server={"limits": {"head_timeout": 0.5}},
    )
    _, _, address = await start(nursery, config, tmp_path / "c.json")
    async with await connect(address) as stream:
        with trio.fail_after(10):
            assert await read_until_close(stream) == b""


async def test_variables_and_redirect_know_the_scheme(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """`$scheme`, `$https` and `$ssl_server_name`; redirect's `http_to_https` leaves a
    request that came over TLS alone."""
    target = {"nodes": {upstream.address: 1}}
    routes = [
        {
            "id": "vars",
            "uri": "/vars",
            "upstream": target,
            "plugins": {
                "proxy-rewrite": {
                    "headers": {
                        "set": {
                            "x-scheme": "$scheme",
                            "x-https": "$https",
                            "x-sni": "$ssl_server_name",
                        }
                    }
                }
            },
        },
        {
            "id": "secure",
            "uri": "/secure",
            "upstream": target,
            "plugins": {"redirect": {"http_to_https": True}},
        },
    ]
    ssls = [ssl_entry(ca.issue("wild", "*.example.test"), "*.example.test")]
    config = https_config(upstream, ssls, routes=routes)
    _, plain, address = await start(nursery, config, tmp_path / "c.json")
    tls = await open_tls(address, ca, "API.example.test")
    assert (await exchange(tls, target="/vars", host="api.example.test")).status == 200
    seen = upstream.received[-1]
    assert seen.header(b"x-scheme") == b"https"
    assert seen.header(b"x-https") == b"on"
    assert seen.header(b"x-sni") == b"API.example.test"
    assert (await exchange(tls, target="/secure", host="api.example.test")).status == 200
    await tls.aclose()
    resp = await request(plain, target="/vars", headers=[("host", "api.example.test")])
    assert resp.status == 200
    assert upstream.received[-1].header(b"x-scheme") == b"http"
    assert upstream.received[-1].header(b"x-https") == b""
    resp = await request(plain, target="/secure", headers=[("host", "api.example.test")])
    assert resp.status == 301
    assert resp.header(b"location") == b"https://api.example.test/secure"


async def test_a_reload_serves_the_new_certificate(
    nursery: trio.Nursery,
    upstream: Upstream,
    ca: Authority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """New handshakes get the reloaded certificates; a connection open before keeps its
    session; a reload with a key that does not fit its certificate is refused, the old
    certificates serve on, and the log names the field without the key."""
    path = tmp_path / "c.json"
    config = https_config(upstream, [ssl_entry(ca.issue("old", "api.test"), "api.test")])
    gateway, _, address = await start(nursery, config, path)
    before = await open_tls(address, ca, "api.test")
    config["ssls"] = [ssl_entry(ca.issue("new", "api.test"), "api.test")]
    path.write_text(json.dumps(config))
    assert await gateway.reload()
    after = await open_tls(address, ca, "api.test")
    assert peer_name(after) == "new"
    assert (await exchange(after)).status == 200
    assert peer_name(before) == "old"
    assert (await exchange(before)).status == 200
    for tls in (before, after):
        await tls.aclose()

    cert, _ = ca.issue("mismatched", "api.test")
    _, other_key = ca.issue("other", "api.test")
    config["ssls"] = [{"cert": cert, "key": other_key, "sni": "api.test"}]
    path.write_text(json.dumps(config))
    with caplog.at_level(logging.INFO, logger="gateway"):
        assert not await gateway.reload()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "the key does not belong to the certificate - at `$.ssls[0]`" in logged
    key_body = other_key.splitlines()[1]
    assert key_body not in logged
    tls = await open_tls(address, ca, "api.test")
    assert peer_name(tls) == "new"
    await tls.aclose()


async def test_a_websocket_over_https(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """The tunnel runs through the client's TLS session (both directions at once)."""

    async def echo(req: WebSocketRequest) -> None:
        ws = await req.accept()
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send_message(f"echo:{await ws.get_message()}")

    server = await nursery.start(serve_websocket, echo, "127.0.0.1", 0, None)
    target = {"nodes": {f"127.0.0.1:{server.port}": 1}}
    routes = [{"id": "ws", "uri": "/ws", "enable_websocket": True, "upstream": target}]
    config = https_config(upstream, [ssl_entry(ca.issue("api.test"), "api.test")], routes=routes)
    _, _, address = await start(nursery, config, tmp_path / "c.json")
    tls = await open_tls(address, ca, "api.test")
    ws = await wrap_client_stream(nursery, tls, "api.test", "/ws")
    for text in ("hello", "x" * 70_000, "bye"):
        await ws.send_message(text)
        assert await ws.get_message() == f"echo:{text}"
    await ws.aclose()


async def test_pipelined_requests_and_the_clients_close(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """Three requests in one TLS write are answered in order; the client's close_notify
    ends the connection; a client that stops in the middle of a record is dropped without
    an answer and nothing reaches the upstream."""
    config = https_config(upstream, [ssl_entry(ca.issue("api.test"), "api.test")])
    _, _, address = await start(nursery, config, tmp_path / "c.json")
    tls = await open_tls(address, ca, "api.test")
    heads = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: api.test\r\n\r\n".encode() for i in range(3))
    await tls.send_all(heads)
    for i in range(3):
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target=f"/p{i}", headers=[("host", "api.test")]))
        conn.send(h11.EndOfMessage())
        resp = await read_response(tls, conn)  # type: ignore[arg-type]
        assert resp.json()["target"] == f"/p{i}"
    await tls.aclose()  # close_notify, then the socket's close

    stream = await connect(address)
    context = ca.client_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="api.test")
    async with stream:
        while True:  # a hand-driven handshake, to send a record cut short afterwards
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                await stream.send_all(outgoing.read())
                incoming.write(await stream.receive_some(65536))
        await stream.send_all(outgoing.read())
        client.write(b"GET /cut HTTP/1.1\r\nHost: api.test\r\n\r\n")
        record = outgoing.read()
        await stream.send_all(record[: len(record) // 2])
        await stream.send_eof()
        with trio.fail_after(10):
            rest = await read_until_close(stream)
    incoming.write(rest)
    with contextlib.suppress(ssl.SSLError):  # no answer, at most TLS's own close
        assert client.read(65536) == b"", rest
    assert [r.target for r in upstream.received] == [b"/p0", b"/p1", b"/p2"]


async def refused_after_handshake(tls: trio.SSLStream[trio.SocketStream]) -> bool:
    """Whether the server ended the connection for its certificate rules: in TLS 1.3 a
    client learns it at its first read after the handshake."""
    async with tls:
        try:
            await exchange(tls)
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return True
    return False


async def test_client_certificates_mutual_tls(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """An entry's `client.ca`: a client shows a certificate from that CA or its handshake
    fails; the upstream can be told who it is (`$ssl_client_*`). Another entry of the same
    gateway asks no client for a certificate."""
    clients = Authority("Clients CA")
    stranger = Authority("Another CA").issue("stranger")
    alice = clients.issue("alice")
    routes = [
        {
            "id": "who",
            "uri": "/*",
            "upstream": {"nodes": {upstream.address: 1}},
            "plugins": {
                "proxy-rewrite": {
                    "headers": {
                        "set": {
                            "x-client-dn": "$ssl_client_s_dn",
                            "x-client-issuer": "$ssl_client_i_dn",
                            "x-client-serial": "$ssl_client_serial",
                            "x-client-fingerprint": "$ssl_client_fingerprint",
                            "x-client-verify": "$ssl_client_verify",
                        }
                    }
                }
            },
        }
    ]
    ssls = [
        ssl_entry(ca.issue("api.test"), "api.test", client={"ca": clients.pem}),
        ssl_entry(ca.issue("open.test"), "open.test"),
    ]
    _, _, address = await start(
        nursery, https_config(upstream, ssls, routes=routes), tmp_path / "c.json"
    )
    tls = await open_tls(address, ca, "api.test", alice)
    assert (await exchange(tls)).status == 200
    await tls.aclose()
    seen = upstream.received[-1]
    leaf = x509.load_pem_x509_certificates(alice[0].encode())[0]
    assert seen.header(b"x-client-dn") == b"CN=alice"
    assert seen.header(b"x-client-issuer") == b"CN=Clients CA"
    assert seen.header(b"x-client-serial") == format(leaf.serial_number, "X").encode()
    assert seen.header(b"x-client-verify") == b"SUCCESS"
    fingerprint = leaf.fingerprint(hashes.SHA1()).hex().encode()
    assert seen.header(b"x-client-fingerprint") == fingerprint

    for who in (None, stranger):
        try:
            tls = await open_tls(address, ca, "api.test", who)
        except trio.BrokenResourceError:
            continue  # refused in the handshake itself (TLS 1.2)
        assert await refused_after_handshake(tls)
    assert len(upstream.received) == 1

    tls = await open_tls(address, ca, "open.test", None)  # no certificate asked for
    assert (await exchange(tls, host="open.test")).status == 200
    await tls.aclose()
    assert upstream.received[-1].header(b"x-client-verify") == b"NONE"
    assert upstream.received[-1].header(b"x-client-dn") == b""


async def test_uris_a_client_without_a_certificate_may_ask_for(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """`client.skip_mtls_uri_regex`: without a certificate only those URIs are served
    (400 for the rest, the connection closed); with one, all are."""
    clients = Authority("Clients CA")
    client = {"ca": clients.pem, "skip_mtls_uri_regex": ["^/public/", "^/health$", "(a|aa)+$"]}
    ssls = [ssl_entry(ca.issue("api.test"), "api.test", client=client)]
    _, _, address = await start(nursery, https_config(upstream, ssls), tmp_path / "c.json")
    tls = await open_tls(address, ca, "api.test", None)
    assert (await exchange(tls, target="/public/a")).status == 200
    assert (await exchange(tls, target="/health")).status == 200
    # A path on which a pattern runs past its time budget is not shown to be skipped.
    assert (await exchange(tls, target="/" + "a" * 40 + "!")).status == 400
    await tls.aclose()
    tls = await open_tls(address, ca, "api.test", None)
    assert (await exchange(tls, target="/aaaa")).status == 200
    resp = await exchange(tls, target="/private")
    assert resp.status == 400
    assert resp.json() == {"error_msg": "400 Bad Request"}
    await tls.aclose()
    assert [r.target for r in upstream.received] == [b"/public/a", b"/health", b"/aaaa"]
    tls = await open_tls(address, ca, "api.test", clients.issue("alice"))
    assert (await exchange(tls, target="/private")).status == 200
    await tls.aclose()


async def test_a_client_certificate_holds_for_its_sni_only(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """With a `*.` entry, a client verified for a.mtls.test cannot name b.mtls.test in
    its Host (APISIX refuses that with 400)."""
    clients = Authority("Clients CA")
    ssls = [ssl_entry(ca.issue("wild", "*.mtls.test"), "*.mtls.test", client={"ca": clients.pem})]
    _, _, address = await start(nursery, https_config(upstream, ssls), tmp_path / "c.json")
    tls = await open_tls(address, ca, "a.mtls.test", clients.issue("alice"))
    assert (await exchange(tls, host="a.mtls.test")).status == 200
    assert (await exchange(tls, host="b.mtls.test")).status == 400
    await tls.aclose()
    assert len(upstream.received) == 1


async def test_client_depth_bounds_the_intermediates(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """`client.depth`: intermediate certificates allowed between a client's certificate
    and `client.ca` (1 by default, as APISIX)."""
    root = Authority("Clients root")
    one = Authority("Intermediate 1", parent=root)
    two = Authority("Intermediate 2", parent=one)
    direct, via_one, via_two = root.issue("direct"), one.issue("one"), two.issue("two")
    ssls = [
        ssl_entry(ca.issue("a.test"), "a.test", client={"ca": root.pem}),
        ssl_entry(ca.issue("b.test"), "b.test", client={"ca": root.pem, "depth": 0}),
    ]
    _, _, address = await start(nursery, https_config(upstream, ssls), tmp_path / "c.json")
    for name, client, passes in [
        ("a.test", direct, True),
        ("a.test", via_one, True),
        ("a.test", via_two, False),
        ("b.test", direct, True),
        ("b.test", via_one, False),
    ]:
        try:
            tls = await open_tls(address, ca, name, client)
        except trio.BrokenResourceError:
            assert not passes
            continue
        if passes:
            assert (await exchange(tls, host=name)).status == 200
            await tls.aclose()
        else:
            assert await refused_after_handshake(tls)
    assert len(upstream.received) == 3


async def test_an_entrys_protocols(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """`ssl_protocols`: the TLS versions an entry's handshakes may use."""
    ssls = [
        ssl_entry(ca.issue("a.test"), "a.test", ssl_protocols=["TLSv1.3"]),
        ssl_entry(ca.issue("b.test"), "b.test", ssl_protocols=["TLSv1.2"]),
        ssl_entry(ca.issue("c.test"), "c.test"),
    ]
    _, _, address = await start(nursery, https_config(upstream, ssls), tmp_path / "c.json")

    async def version(name: str, highest: ssl.TLSVersion) -> str | None:
        stream = await connect(address)
        context = ca.client_context()
        context.maximum_version = highest
        tls = trio.SSLStream(stream, context, server_hostname=name)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            await trio.aclose_forcefully(stream)
            return None
        async with tls:
            return tls.version()

    top, v12 = ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2
    assert await version("a.test", top) == "TLSv1.3"
    assert await version("a.test", v12) is None
    assert await version("b.test", top) == "TLSv1.2"
    assert await version("c.test", top) == "TLSv1.3"
    assert await version("c.test", v12) == "TLSv1.2"


async def test_hostile_bytes_on_the_https_address(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """Garbage instead of a ClientHello, a ClientHello cut short, and garbage after a good
    handshake: each connection is closed, nothing reaches the upstream, and the next
    client is served."""
    config = https_config(
        upstream,
        [ssl_entry(ca.issue("api.test"), "api.test")],
        server={"limits": {"head_timeout": 1}},
    )
    _, _, address = await start(nursery, config, tmp_path / "c.json")
    hello = bytearray(b"\x16\x03\x01\xff\xff" + bytes(range(256)) * 4)
    for data in (
        bytes(range(256)),  # not TLS, not HTTP
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a ClientHello that never ends
        bytes(hello),  # a record longer than what follows
        b"\x16" + b"\xff" * 4096,
    ):
        async with await connect(address) as stream:
            await stream.send_all(data)
            with trio.fail_after(10):
                await read_until_close(stream)
    # Plain bytes where TLS records belong, after a good handshake: closed, at most after
    # TLS's own alert (a record of its own, never an HTTP answer).
    tls = await open_tls(address, ca, "api.test")
    await tls.transport_stream.send_all(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n")
    with trio.fail_after(10):
        rest = await read_until_close(tls.transport_stream)
    assert b"HTTP/1.1" not in rest
    await trio.aclose_forcefully(tls)
    assert upstream.received == []
    tls = await open_tls(address, ca, "api.test")
    assert (await exchange(tls)).status == 200
    await tls.aclose()


async def test_a_fallback_sni_for_clients_that_send_none(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """`server.ssl_fallback_sni` (APISIX's `apisix.ssl.fallback_sni`): a client that sends
    no SNI (one connecting by IP address) gets that name's certificate."""
    ssls = [ssl_entry(ca.issue("api.test"), "api.test")]
    config = https_config(upstream, ssls, server={"ssl_fallback_sni": "api.test"})
    _, _, address = await start(nursery, config, tmp_path / "c.json")
    tls = await open_tls(address, ca, None)
    assert peer_name(tls) == "api.test"
    assert (await exchange(tls)).status == 200
    await tls.aclose()
    with pytest.raises(trio.BrokenResourceError):  # a name no entry has still gets none
        await open_tls(address, ca, "other.test")


async def test_an_https_address_that_cannot_be_had(
    nursery: trio.Nursery, upstream: Upstream, ca: Authority, tmp_path: Path
) -> None:
    """The start fails naming the address, and the plain listener bound before it is
    closed again (none is left open)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        config = https_config(
            upstream, [ssl_entry(ca.issue("api.test"), "api.test")], server={"ssl_listen": busy}
        )
        with pytest.raises(OSError, match=f"cannot listen on {busy}"):
            await start(nursery, config, tmp_path / "c.json")
        gc.collect()  # an unclosed listener would be reported here
