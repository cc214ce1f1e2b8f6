"""basic-auth: a consumer is named by `Authorization: Basic base64(username:password)`.

Credentials are indexed by the SHA-256 of the username and hold the SHA-256 of the
password; the password check is `hmac.compare_digest` on digests, and an unknown username
costs the same comparison against a dummy digest. The user-pass is split at the first colon
(RFC 7617), without stripping whitespace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from gateway.config.fields import Realm, Username
from gateway.consumers import Credential
from gateway.context import RequestContext
from gateway.http.replies import Header, Reply, message
from gateway.pipeline import AuthPlugin, PluginConf, PluginEnv

_DUMMY = hashlib.sha256(b"no such user").digest()


class BasicAuthConf(PluginConf, frozen=True, kw_only=True):
    hide_credentials: bool = False
    realm: Realm = "basic"
    anonymous_consumer: Username | None = None  # APISIX: who a failed request becomes


class BasicAuthCredential(PluginConf, frozen=True, kw_only=True):
    username: Annotated[str, msgspec.Meta(min_length=1)]
    password: Annotated[str, msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        if ":" in self.username:
            raise ValueError("a basic-auth username cannot contain `:` (RFC 7617)")


def basic_refusals(realm: str) -> tuple[list[Header], Reply, Reply, Reply]:
    """The `Basic` challenge for `realm` and the 401s with it: no Authorization, one that
    is not Basic credentials, credentials not accepted (basic-auth's and ldap-auth's)."""
    challenge = [(b"www-authenticate", f'Basic realm="{realm}"'.encode())]
    return (
        challenge,
        message(401, "Missing authorization in request", challenge),
        message(401, "Invalid authorization in request", challenge),
        message(401, "Invalid user authorization", challenge),
    )


def basic_credentials(value: bytes) -> tuple[bytes, bytes] | None:
    """(username, password) of an `Authorization: Basic` value, split at the first colon
    (RFC 7617), or None when it is not one."""
    scheme, _, encoded = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(b":")
    return (username, password) if colon else None


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class BasicAuth(AuthPlugin):
    name = "basic-auth"
    priority = 2520
    Conf = BasicAuthConf
    CredentialConf = BasicAuthCredential

    def __init__(self, conf: BasicAuthConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.hide = conf.hide_credentials
        self.challenge, self.missing, self.malformed, self.invalid = basic_refusals(conf.realm)
        self.index: dict[bytes, tuple[bytes, Credential]] = env.consumers.index(self.name) or {}

    @classmethod
    def build_index(cls, entries: Sequence[tuple[Any, Credential]]) -> Any:
        return {
            _sha256(conf.username.encode()): (_sha256(conf.password.encode()), cred)
            for conf, cred in entries
        }

    @classmethod
    def unique_keys(cls, conf: Any) -> list[str]:
        return ["username:" + conf.username]

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        value = ctx.header(b"authorization")
        if value is None:
            return self.missing
        user_pass = basic_credentials(value)
        if user_pass is None:
            return self.malformed
        username, password = user_pass
        entry = self.index.get(_sha256(username))
        expected = entry[0] if entry is not None else _DUMMY
        if not hmac.compare_digest(expected, _sha256(password)) or entry is None:
            return self.invalid
        if self.hide:
            ctx.remove_header(b"authorization")
        self.attach(ctx, entry[1])
        return None
