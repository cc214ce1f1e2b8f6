"""ldap-auth against a real slapd: HTTP Basic credentials checked by a simple bind, the
consumer named by the bound DN; plain and ldaps; the failures APISIX answers, and ours."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.config.load import parse
from gateway.errors import ConfigErrors
from gateway.ldap import encode_bind, parse_response
from gateway.plugins.ldap_auth import escape_dn_value
from gateway.runtime import compile_config
from tests.helpers import Upstream, config_for, free_port, request, start_gateway
from tests.ldap_server import USERS, SlapdServer


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    server = SlapdServer(tmp_path_factory.mktemp("slapd"))
    server.setup()
    server.start()
    yield server
    server.stop()


def consumers() -> list[dict[str, Any]]:
    return [
        {"username": "user01", "plugins": {"ldap-auth": {"user_dn": f"cn=user01,{USERS}"}}},
        {
            "username": "john",
            "credentials": [
                {"id": "john-ldap", "plugins": {"ldap-auth": {"user_dn": f"cn=John Smith,{USERS}"}}}
            ],
        },
        {"username": "comma", "plugins": {"ldap-auth": {"user_dn": f"cn=comma\\,user,{USERS}"}}},
        {"username": "keyed", "plugins": {"key-auth": {"key": "k-1"}}},
    ]


def route(rid: str, upstream: Upstream, plugins: dict[str, Any]) -> dict[str, Any]:
    return {"id": rid, "uri": f"/{rid}", "plugins": plugins,
            "upstream": {"nodes": {upstream.address: 1}}}  # fmt: skip


def basic(user: str, password: str) -> list[tuple[str, str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [("Authorization", f"Basic {token}")]


async def gateway(
    nursery: trio.Nursery, upstream: Upstream, slapd: SlapdServer, **extra: Any
) -> str:
    conf = {"base_dn": USERS, "ldap_uri": f"127.0.0.1:{slapd.port}", **extra}
    tls = {"base_dn": USERS, "ldap_uri": f"127.0.0.1:{slapd.tls_port}", "use_tls": True}
    down = {"base_dn": USERS, "ldap_uri": f"127.0.0.1:{free_port()}"}
    routes = [
        route("plain", upstream, {"ldap-auth": conf}),
        route("tls", upstream, {"ldap-auth": tls}),
        route("verified", upstream, {"ldap-auth": {**tls, "tls_verify": True}}),
        route("down", upstream, {"ldap-auth": down}),
    ]
    multi = {"auth_plugins": [{"ldap-auth": conf}, {"key-auth": {}}]}
    routes.append(route("multi", upstream, {"multi-auth": multi}))
    _, address = await start_gateway(nursery, config_for(routes, consumers=consumers()))
    return address


def assert_401(resp: Any, text: str) -> None:
    assert resp.status == 401
    assert resp.json() == {"message": text}
    assert resp.header(b"www-authenticate") == b'Basic realm="ldap"'


async def test_bind_names_the_consumer(
    nursery: trio.Nursery, upstream: Upstream, slapd: SlapdServer
) -> None:
    gw = await gateway(nursery, upstream, slapd)
    # A space in the username, a colon and a space in the password, a comma escaped in
    # the DN: each goes to the server as it is.
    for user, password, consumer in [
        ("user01", "password1", b"user01"),
        ("John Smith", "pa ss:word", b"john"),
        ("comma,user", "pw3", b"comma"),
    ]:
        resp = await request(gw, target="/plain", headers=basic(user, password))
        assert resp.status == 200, (user, resp.body)
        seen = upstream.received[-1]
        assert seen.header(b"x-consumer-username") == consumer
    assert upstream.received[-2].header(b"x-credential-identifier") == b"john-ldap"

    # ldaps, the server's certificate unchecked (tls_verify false, APISIX's default).
    resp = await request(gw, target="/tls", headers=basic("user01", "password1"))
    assert resp.status == 200, resp.body
    # multi-auth: either plugin.
    assert (await request(gw, target="/multi", headers=basic("user01", "password1"))).status == 200
    assert (await request(gw, target="/multi", headers=[("apikey", "k-1")])).status == 200


async def test_refusals(nursery: trio.Nursery, upstream: Upstream, slapd: SlapdServer) -> None:
    gw = await gateway(nursery, upstream, slapd)
    before = len(upstream.received)

    async def on(target: str, headers: list[tuple[str, str]]) -> Any:
        return await request(gw, target=target, headers=headers)

    assert_401(await on("/plain", []), "Missing authorization in request")
    assert_401(
        await on("/plain", [("Authorization", "Bearer x")]), "Invalid authorization in request"
    )
    assert_401(
        await on("/plain", [("Authorization", "Basic !!")]), "Invalid authorization in request"
    )
    no_colon = [("Authorization", "Basic " + base64.b64encode(b"user01").decode())]
    assert_401(await on("/plain", no_colon), "Invalid authorization in request")
    assert_401(await on("/plain", basic("user01", "wrong")), "Invalid user authorization")
    assert_401(await on("/plain", basic("nobody", "password1")), "Invalid user authorization")
    # A DN the username tries to extend is escaped, so it names no entry.
    assert_401(
        await on("/plain", basic(f"user01,{USERS}", "password1")), "Invalid user authorization"
    )
    # The directory knows the entry, no consumer has it.
    assert_401(await on("/plain", basic("no-consumer", "pw4")), "Invalid user authorization")
    # An empty password would be an anonymous bind, which this server grants: refused
    # before the server is asked.
    assert_401(await on("/plain", basic("user01", "")), "Invalid user authorization")
    assert len(upstream.received) == before


async def test_server_without_verdict_is_503(
    nursery: trio.Nursery, upstream: Upstream, slapd: SlapdServer, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway(nursery, upstream, slapd)
    before = len(upstream.received)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        resp = await request(gw, target="/down", headers=basic("user01", "password1"))
        assert resp.status == 503
        assert resp.json() == {"message": "LDAP server unavailable"}
        # tls_verify: the test server's certificate chains to no CA this process trusts.
        resp = await request(gw, target="/verified", headers=basic("user01", "password1"))
        assert resp.status == 503
    assert len(upstream.received) == before
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ldap-auth" in logged
    assert "password1" not in logged


async def test_tls_verify_with_trusted_ca(
    nursery: trio.Nursery, upstream: Upstream, slapd: SlapdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert slapd.cert is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(slapd.cert))
    gw = await gateway(nursery, upstream, slapd)
    resp = await request(gw, target="/verified", headers=basic("user01", "password1"))
    assert resp.status == 200, resp.body


async def test_connections_kept_and_renewed(
    nursery: trio.Nursery, upstream: Upstream, slapd: SlapdServer
) -> None:
    gw = await gateway(nursery, upstream, slapd)
    first = slapd.accepted()
    for password, status in [("password1", 200), ("wrong", 401), ("password1", 200)]:
        resp = await request(gw, target="/plain", headers=basic("user01", password))
        assert resp.status == status
    assert slapd.accepted() - first <= 1  # one kept connection carried the binds
    # The server restarts: the kept connection is dead, the next bind opens another.
    slapd.stop()
    slapd.start()
    resp = await request(gw, target="/plain", headers=basic("user01", "password1"))
    assert resp.status == 200, resp.body


def test_bind_request_bytes() -> None:
    # LDAPMessage { messageID 1, BindRequest { version 3, "cn=a", simple "p" } }
    assert (
        encode_bind(1, b"cn=a", b"p").hex()
        == "301102010160" + "0c020103" + "0404636e3d61" + "800170"
    )
    # Lengths past 127 take the long form: id 300 (4 bytes), name 200 + 3, password 2,
    # version 3: the BindRequest holds 208, the message 4 + 3 + 208.
    long = encode_bind(300, b"x" * 200, b"")
    assert long[:11] == bytes.fromhex("3081d7" + "0202012c" + "6081d0" + "02")
    assert len(long) == 3 + 215
    # A BindResponse { messageID 1, success, "", "" } and one cut short.
    response = bytes.fromhex("300c02010161070a010004000400")
    assert parse_response(response) == (1, 0x61, 0, len(response))
    assert parse_response(response[:-1]) is None


def test_dn_escaping() -> None:
    assert escape_dn_value(b"a,b+c=d") == b"a\\,b\\+c\\=d"
    assert escape_dn_value(b' #x"<>;\\ ') == b'\\ #x\\"\\<\\>\\;\\\\\\ '
    assert escape_dn_value(b"#lead") == b"\\#lead"
    assert escape_dn_value(b"a\x00b") == b"a\\00b"


@pytest.mark.parametrize(
    ("conf", "why"),
    [
        ({"base_dn": USERS}, "missing required field `ldap_uri`"),
        ({"base_dn": USERS, "ldap_uri": "ldap://h:389"}, "not a URL"),
        ({"base_dn": USERS, "ldap_uri": "h:99999"}, "port out of range"),
        ({"base_dn": USERS, "ldap_uri": "h", "uid": "c n"}, "uid"),
    ],
)
def test_route_conf_checked_at_load(conf: dict[str, Any], why: str) -> None:
    config = config_for([{"id": "r", "uri": "/", "plugins": {"ldap-auth": conf},
                          "upstream": {"nodes": {"127.0.0.1:1": 1}}}])  # fmt: skip
    with pytest.raises(ConfigErrors) as caught:
        compile_config(parse(json.dumps(config).encode()))
    assert why in str(caught.value)
    assert "$.routes[0].plugins.ldap-auth" in str(caught.value)


def test_default_ports(tmp_path: Path) -> None:
    from gateway.plugins.ldap_auth import LdapAuthConf

    assert LdapAuthConf(base_dn="x", ldap_uri="ldap.test").address() == ("ldap.test", 389)
    assert LdapAuthConf(base_dn="x", ldap_uri="ldap.test", use_tls=True).address() == (
        "ldap.test",
        636,
    )
    assert LdapAuthConf(base_dn="x", ldap_uri="[::1]").address() == ("::1", 389)
    assert LdapAuthConf(base_dn="x", ldap_uri="h:1389").address() == ("h", 1389)
