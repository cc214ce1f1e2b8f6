"""Self-signed certificates and TLS servers for the tests (Redis, upstreams)."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import Upstream, raw_serve


def write_certificate(directory: Path, ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the certificate is its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def serve_tls(
    nursery: trio.Nursery, upstream: Upstream, directory: Path, ip: str = "127.0.0.1"
) -> Path:
    """Serve `upstream` behind TLS with a fresh self-signed certificate for 127.0.0.1
    (returned); the server names clients asked for go to `upstream.server_names`."""
    cert, key = write_certificate(directory, ip)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, _: names.append(name)  # type: ignore[assignment,func-returns-value]
    upstream.server_names = names  # type: ignore[attr-defined]

    async def handle(stream: trio.SocketStream) -> None:
        await upstream._handle(trio.SSLStream(stream, context, server_side=True))  # type: ignore[arg-type]

    await nursery.start(functools.partial(raw_serve, handle, on_port=upstream._set_port))
    return cert


class Authority:
    """A test CA issuing server certificates as PEM text (APISIX's `ssls` shape)."""

    def __init__(self, name: str = "Gateway Test CA", parent: Authority | None = None) -> None:
        """A root CA, or with `parent` an intermediate one it signs."""
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(parent.name if parent is not None else self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(parent.key if parent is not None else self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        # What a certificate it issues is sent with: itself, and its parents below the root.
        self.chain = self.pem + (parent.chain if parent is not None and parent.parent else "")
        self.parent = parent

    def issue(self, common_name: str, *names: str, rsa_key: bool = False) -> tuple[str, str]:
        """(certificate chain PEM, private key PEM) for `names` (DNS names)."""
        from cryptography.hazmat.primitives.asymmetric import rsa

        key: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if rsa_key
            else ec.generate_private_key(ec.SECP256R1())
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names or (common_name,)]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return cert.public_bytes(serialization.Encoding.PEM).decode() + self.chain, key_pem

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        context = ssl.create_default_context(cadata=self.pem)
        context.set_alpn_protocols(["http/1.1"])
        return context
