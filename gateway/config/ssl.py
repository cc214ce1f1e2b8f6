"""APISIX's `ssls`: the certificates the gateway answers TLS handshakes with, by SNI.

Each entry's PEM certificate chain and private key are parsed when the config loads, and the
key must belong to the certificate: a bad pair is refused with its JSON path, never met at a
client's handshake. Error messages never quote the key.
"""

from __future__ import annotations

import re
import ssl
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config.fields import Id, Labels
from gateway.patterns import Pattern, any_of
from gateway.pipeline import Conf, Resource

# APISIX's host pattern for an SNI: a name, `*.` before one, or `*` alone (every name).
_SNI = re.compile(r"^(\*\.)?[0-9A-Za-z_-]+(\.[0-9A-Za-z_-]+)*\.?\Z|^\*\Z")
Sni = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
Pem = Annotated[str, msgspec.Meta(min_length=64, max_length=64 * 1024)]


def normal_sni(name: str) -> str:
    """An SNI as APISIX keeps it: lower-case, without a final dot."""
    return name.lower().removesuffix(".")


def sni_keys(server_name: str) -> tuple[str, ...]:
    """The `ssls` names that answer `server_name`, in APISIX's order: the name itself,
    `*.` and its parent (one label down only), then `*`."""
    name = normal_sni(server_name)
    _, dot, parent = name.partition(".")
    return (name, f"*.{parent}", "*") if dot else (name, "*")


def check_pair(cert: str, key: str, where: str) -> None:
    """ValueError unless `cert` is a PEM certificate chain and `key` the unencrypted PEM
    private key of its first certificate (`where` names the pair in the message)."""
    try:
        chain = x509.load_pem_x509_certificates(cert.encode())
    except ValueError:
        raise ValueError(f"{where}: the certificate is not a PEM certificate chain") from None
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        raise ValueError(
            f"{where}: the private key is encrypted; give it unencrypted, from the"
            " environment (`$env://NAME`) to keep it out of the file"
        ) from None
    except Exception:  # cryptography raises several types for bad input
        raise ValueError(f"{where}: the key is not a PEM private key") from None
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf = (
        chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if public != leaf:
        raise ValueError(f"{where}: the key does not belong to the certificate")


def load_pairs(context: ssl.SSLContext, pairs: list[tuple[str, str]]) -> None:
    """Load (certificate chain, key) PEM pairs into `context`.

    OpenSSL loads certificates from files only: the PEM text is written to a directory only
    this process can read and removed as soon as it is loaded."""
    with tempfile.TemporaryDirectory(prefix="gateway-tls-") as directory:
        cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        for cert, key in pairs:
            cert_path.write_text(cert)
            key_path.touch(mode=0o600)
            key_path.write_text(key)
            context.load_cert_chain(cert_path, key_path)


class SslClient(Conf, frozen=True, kw_only=True):
    """APISIX's `client` of an SSL object: client certificates (mutual TLS).

    `ca`: the PEM certificates a client's must chain to; `depth`: how many intermediate
    certificates may stand between the client's and them (OpenSSL's verify depth);
    `skip_mtls_uri_regex`: URIs a client without a certificate may still ask for (then the
    handshake takes one without, and each other request is refused with 400)."""

    ca: Pem
    depth: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    skip_mtls_uri_regex: Annotated[list[str], msgspec.Meta(min_length=1)] | None = None

    def __post_init__(self) -> None:
        try:
            x509.load_pem_x509_certificates(self.ca.encode())
        except ValueError:
            raise ValueError("`ca` is not PEM certificates") from None
        if self.skip_mtls_uri_regex is not None:
            any_of(self.skip_mtls_uri_regex, "skip_mtls_uri_regex")

    @property
    def skip(self) -> Pattern | None:
        if self.skip_mtls_uri_regex is None:
            return None
        return any_of(self.skip_mtls_uri_regex, "skip_mtls_uri_regex")


class Ssl(Resource, frozen=True, kw_only=True):
    id: Id | None = None
    type: Literal["server"] = "server"
    cert: Pem
    key: Pem
    # More pairs for the same names (an ECDSA and an RSA certificate, say); the client's
    # handshake picks the one it can use.
    certs: list[Pem] = []
    keys: list[Pem] = []
    sni: Sni | None = None
    snis: Annotated[list[Sni], msgspec.Meta(min_length=1)] | None = None
    status: Literal[0, 1] = 1
    client: SslClient | None = None
    # APISIX's TLSv1.1 is refused: OpenSSL 3 offers it only below its default security
    # level (APISIX's own docs say its default ciphers do not support it either).
    ssl_protocols: (
        Annotated[list[Literal["TLSv1.2", "TLSv1.3"]], msgspec.Meta(min_length=1, max_length=2)]
        | None
    ) = None
    labels: Labels | None = None
    desc: Annotated[str, msgspec.Meta(max_length=256)] | None = None

    def __post_init__(self) -> None:
        if (self.sni is None) == (self.snis is None):
            raise ValueError("takes exactly one of `sni` and `snis`")
        for name in self.names:
            if _SNI.match(name) is None:
                raise ValueError(f"{name!r} is not a host name, `*.` and a name, or `*`")
        if len(self.certs) != len(self.keys):
            raise ValueError("`certs` and `keys` must hold as many entries")
        check_pair(self.cert, self.key, "`cert` and `key`")
        for i, (cert, key) in enumerate(zip(self.certs, self.keys, strict=True)):
            check_pair(cert, key, f"`certs[{i}]` and `keys[{i}]`")

    @property
    def names(self) -> list[str]:
        """The SNIs this entry answers, as written."""
        return [self.sni] if self.sni is not None else list(self.snis or [])

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(self.cert, self.key), *zip(self.certs, self.keys, strict=True)]
