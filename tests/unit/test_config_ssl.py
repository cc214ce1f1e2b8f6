"""`ssls` and `server.ssl_listen` in the config: what loads, what is refused (with the JSON
path and a message that never quotes a key), and which certificate an SNI picks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config.load import parse
from gateway.errors import ConfigErrors
from gateway.https import Certificates
from tests.tls_certs import Authority

CA = Authority()
PAIR = CA.issue("api.test")
OTHER = CA.issue("other.test")


def entry(**fields: Any) -> dict[str, Any]:
    return {"cert": PAIR[0], "key": PAIR[1], "sni": "api.test", **fields}


def refused(config: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigErrors) as info:
        parse(json.dumps(config).encode())
    for error in info.value.errors:
        for secret in (PAIR[1], OTHER[1]):
            assert secret.splitlines()[1] not in str(error)
    return [(e.path, e.message) for e in info.value.errors]


def test_an_entry_loads_with_apisix_fields() -> None:
    config = parse(
        json.dumps(
            {
                "server": {"listen": "127.0.0.1:9080", "ssl_listen": ["127.0.0.1:9443"]},
                "ssls": [
                    entry(id="1", labels={"env": "prod"}, status=1, type="server"),
                    {"cert": OTHER[0], "key": OTHER[1], "snis": ["other.test", "*.other.test"]},
                ],
            }
        ).encode()
    )
    assert config.server.ssl_addresses == ["127.0.0.1:9443"]
    assert [s.names for s in config.ssls] == [["api.test"], ["other.test", "*.other.test"]]


@pytest.mark.parametrize(
    ("ssl", "path", "message"),
    [
        (entry(sni=None), "$.ssls[0]", "takes exactly one of `sni` and `snis`"),
        (entry(snis=["b.test"]), "$.ssls[0]", "takes exactly one of `sni` and `snis`"),
        (entry(sni="bad name"), "$.ssls[0]", "'bad name' is not a host name"),
        (entry(sni="a.*.test"), "$.ssls[0]", "'a.*.test' is not a host name"),
        (entry(cert="-----BEGIN CERTIFICATE-----\n" + "A" * 64), "$.ssls[0]", "not a PEM cert"),
        (entry(key="-----BEGIN PRIVATE KEY-----\n" + "A" * 64), "$.ssls[0]", "not a PEM private"),
        (entry(key=OTHER[1]), "$.ssls[0]", "the key does not belong to the certificate"),
        (
            entry(certs=[OTHER[0]], keys=[PAIR[1]]),
            "$.ssls[0]",
            "`certs[0]` and `keys[0]`: the key does not belong",
        ),
        (entry(certs=[OTHER[0]]), "$.ssls[0]", "`certs` and `keys` must hold as many"),
        (entry(type="client"), "$.ssls[0].type", "Invalid enum value 'client'"),
        (entry(client={"ca": "-" * 64}), "$.ssls[0].client", "`ca` is not PEM certificates"),
        (
            entry(client={"ca": CA.pem, "skip_mtls_uri_regex": ["("]}),
            "$.ssls[0].client",
            "invalid skip_mtls_uri_regex '('",
        ),
        (entry(client={"ca": CA.pem, "depth": -1}), "$.ssls[0].client.depth", ""),
        (
            entry(client={"ca": CA.pem, "skip_mtls_uri_regex": []}),
            "$.ssls[0].client.skip_mtls_uri_regex",
            "",
        ),
        (entry(client={"ca": CA.pem, "verify": True}), "$.ssls[0].client", "unknown field"),
        (entry(ssl_protocols=["TLSv1.1"]), "$.ssls[0].ssl_protocols[0]", "Invalid enum value"),
        (entry(ssl_protocols=[]), "$.ssls[0].ssl_protocols", ""),
        (entry(status=2), "$.ssls[0].status", ""),
    ],
)
def test_a_bad_entry_is_refused(ssl: dict[str, Any], path: str, message: str) -> None:
    ssl = {k: v for k, v in ssl.items() if v is not None}
    errors = refused({"ssls": [ssl]})
    assert any(p == path and message in m for p, m in errors), errors


def test_an_encrypted_key_is_refused_with_the_way_out() -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(PAIR[1].encode(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    ).decode()
    [(path, message)] = refused({"ssls": [entry(key=encrypted)]})
    assert path == "$.ssls[0]"
    assert "encrypted" in message
    assert "$env://" in message


def test_an_sni_is_answered_by_one_entry() -> None:
    errors = refused(
        {
            "ssls": [
                entry(),
                {"cert": OTHER[0], "key": OTHER[1], "snis": ["other.test", "API.test."]},
                entry(status=0),  # a disabled entry takes no name
            ]
        }
    )
    assert errors == [("$.ssls[1].snis[1]", "duplicate sni 'api.test' (first at $.ssls[0].sni)")]


def test_an_https_address_needs_a_certificate() -> None:
    for ssls in ([], [entry(status=0)]):
        errors = refused({"server": {"ssl_listen": "127.0.0.1:9443"}, "ssls": ssls})
        assert errors == [
            ("$.server.ssl_listen", "an HTTPS address needs a certificate: add one to `ssls`")
        ]
    assert refused({"server": {"ssl_listen": "nowhere"}, "ssls": [entry()]})[0][0] == "$.server"


def test_the_sni_picks_as_apisix_does() -> None:
    config = parse(
        json.dumps(
            {
                "ssls": [
                    entry(sni="a.test"),
                    {"cert": OTHER[0], "key": OTHER[1], "sni": "*.b.test"},
                    {**entry(), "sni": None, "snis": ["B.test."]},
                ]
            }
        ).encode()
    )
    certificates = Certificates(config.ssls)
    exact, wild, parent = (certificates.pick(n) for n in ("a.test", "x.b.test", "b.test"))
    assert exact is not None
    assert wild is not None
    assert parent is not None
    assert len({id(exact), id(wild), id(parent)}) == 3
    assert certificates.pick("A.TEST") is exact
    assert certificates.pick("y.x.b.test") is None  # a wildcard covers one label
    assert certificates.pick("c.test") is None
    assert certificates.pick(None) is None


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"client_cert": PAIR[0]}, "`client_cert` and `client_key` go together"),
        ({"client_key": PAIR[1]}, "`client_cert` and `client_key` go together"),
        (
            {"client_cert": PAIR[0], "client_key": OTHER[1]},
            "`client_cert` and `client_key`: the key does not belong to the certificate",
        ),
        ({"client_cert_id": "1"}, "unknown field `client_cert_id`"),
    ],
)
def test_an_upstream_client_certificate_is_checked(tls: dict[str, Any], message: str) -> None:
    upstream = {"nodes": {"h:443": 1}, "scheme": "https", "tls": tls}
    errors = refused({"routes": [{"id": "r", "uri": "/", "upstream": upstream}]})
    assert any(p.startswith("$.routes[0].upstream") and message in m for p, m in errors), errors


def test_the_fallback_sni_must_have_a_certificate() -> None:
    wild = {"cert": OTHER[0], "key": OTHER[1], "sni": "*.other.test"}
    for fallback in ("api.test", "API.test.", "a.other.test"):
        parse(
            json.dumps({"server": {"ssl_fallback_sni": fallback}, "ssls": [entry(), wild]}).encode()
        )
    errors = refused({"server": {"ssl_fallback_sni": "a.b.other.test"}, "ssls": [entry(), wild]})
    assert errors == [
        ("$.server.ssl_fallback_sni", "no enabled entry of `ssls` answers 'a.b.other.test'")
    ]
