"""ldap-auth: HTTP Basic credentials checked by an LDAP server's simple bind, the consumer
named by the bound entry's DN (APISIX's plugin).

The entry is `<uid>=<username>,<base_dn>`, the username escaped as RFC 4514 asks (so a
username cannot add to the DN or end it early); a consumer's `user_dn` must be written that
way to match. The password goes to the server as it came (split at the first colon, no
whitespace taken out: APISIX strips it). An empty password is refused without asking the
server, which would take it as an unauthenticated bind and succeed (RFC 4513 section
5.1.2). A server with no verdict (unreachable, TLS, timeout, its own failure) is a 503,
not a wrong password.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from gateway.config.fields import Realm
from gateway.config.upstream import split_host_port
from gateway.consumers import Credential
from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.ldap import LdapError, simple_bind
from gateway.pipeline import AuthPlugin, PluginConf, PluginEnv
from gateway.plugins.basic_auth import basic_credentials, basic_refusals

log = logging.getLogger("gateway")

TIMEOUT_S = 10.0  # APISIX's socket timeout for ldap-auth
_SPECIAL = frozenset(b'"+,;<>\\=')


class LdapAuthConf(PluginConf, frozen=True, kw_only=True):
    base_dn: Annotated[str, msgspec.Meta(min_length=1)]
    ldap_uri: Annotated[str, msgspec.Meta(min_length=1)]
    use_tls: bool = False
    tls_verify: bool = False
    uid: Annotated[
        str, msgspec.Meta(pattern=r"^(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)\Z")
    ] = "cn"
    realm: Realm = "ldap"

    def __post_init__(self) -> None:
        self.address()  # raises ValueError naming the problem

    def address(self) -> tuple[str, int]:
        """The server's (host, port): `host[:port]`, 389 or, with use_tls, 636 by default."""
        text = self.ldap_uri
        if "://" in text:
            raise ValueError("`ldap_uri` is `host[:port]` (use_tls for ldaps), not a URL")
        if text.endswith("]") or ":" not in text:
            text = f"{text}:{636 if self.use_tls else 389}"
        return split_host_port(text)


class LdapAuthCredential(PluginConf, frozen=True, kw_only=True):
    user_dn: Annotated[str, msgspec.Meta(min_length=1)]


def escape_dn_value(value: bytes) -> bytes:
    """An attribute value as a DN carries it (RFC 4514 section 2.4)."""
    out = bytearray()
    last = len(value) - 1
    for i, byte in enumerate(value):
        if byte == 0:
            out += b"\\00"
        elif byte in _SPECIAL or (i == 0 and byte in b" #") or (i == last and byte == 0x20):
            out += b"\\" + bytes((byte,))
        else:
            out.append(byte)
    return bytes(out)


class LdapAuth(AuthPlugin):
    name = "ldap-auth"
    priority = 2540
    Conf = LdapAuthConf
    CredentialConf = LdapAuthCredential

    def __init__(self, conf: LdapAuthConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.host, self.port = conf.address()
        self.tls = conf.use_tls
        self.verify = conf.tls_verify
        self.prefix = conf.uid.encode() + b"="
        self.suffix = b"," + conf.base_dn.encode()
        self.challenge, self.missing, self.malformed, self.invalid = basic_refusals(conf.realm)
        self.no_consumers = message(401, "Missing related consumer", self.challenge)
        self.unavailable = message(503, "LDAP server unavailable")
        self.index: dict[bytes, Credential] = env.consumers.index(self.name) or {}

    @classmethod
    def build_index(cls, entries: Sequence[tuple[Any, Credential]]) -> Any:
        return {conf.user_dn.encode(): cred for conf, cred in entries}

    @classmethod
    def unique_keys(cls, conf: Any) -> list[str]:
        return ["user_dn:" + conf.user_dn]

    async def rewrite(self, ctx: RequestContext) -> Reply | None:
        value = ctx.header(b"authorization")
        if value is None:
            return self.missing
        user_pass = basic_credentials(value)
        if user_pass is None:
            return self.malformed
        username, password = user_pass
        try:
            username.decode()  # a DN is UTF-8
        except UnicodeDecodeError:
            return self.malformed
        if not username or not password:
            return self.invalid
        user_dn = self.prefix + escape_dn_value(username) + self.suffix
        try:
            accepted = await simple_bind(
                self.host, self.port, self.tls, self.verify, user_dn, password, TIMEOUT_S
            )
        except LdapError as exc:
            log.warning("ldap-auth: %s:%d: %s", self.host, self.port, exc)
            return self.unavailable
        if not accepted:
            return self.invalid
        if not self.index:
            return self.no_consumers
        credential = self.index.get(user_dn)
        if credential is None:
            return self.invalid
        self.attach(ctx, credential)
        return None
