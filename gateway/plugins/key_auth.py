"""key-auth: a consumer is named by an API key in a header or a query argument.

Credentials are indexed by the SHA-256 of the key, so a lookup is one dict access on a
digest plus `hmac.compare_digest`: its time does not depend on which key was sent or on how
much of it matches a real key. `key_hash` (`sha256:<hex>`) lets config.json hold the digest
instead of the key (ours, beyond APISIX).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

import msgspec

from gateway.config.fields import HeaderName, Realm, Username
from gateway.consumers import Credential
from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.pipeline import AuthPlugin, PluginConf, PluginEnv

_KEY_HASH = re.compile(r"^sha256:[0-9a-fA-F]{64}\Z")


class KeyAuthConf(PluginConf, frozen=True, kw_only=True):
    header: HeaderName = "apikey"
    query: Annotated[str, msgspec.Meta(min_length=1)] = "apikey"
    hide_credentials: bool = False
    realm: Realm = "key"
    anonymous_consumer: Username | None = None  # APISIX: who a failed request becomes


class KeyAuthCredential(PluginConf, frozen=True, kw_only=True):
    key: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    key_hash: Annotated[str, msgspec.Meta(pattern=_KEY_HASH.pattern)] | None = None

    def __post_init__(self) -> None:
        if (self.key is None) == (self.key_hash is None):
            raise ValueError("key-auth needs exactly one of `key` and `key_hash`")

    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.encode()).digest()
        assert self.key_hash is not None
        return bytes.fromhex(self.key_hash.partition(":")[2])


def hash_key(key: str) -> str:
    """The `key_hash` value for `key` (what `gateway hash-key` prints)."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class KeyAuth(AuthPlugin):
    name = "key-auth"
    priority = 2500
    Conf = KeyAuthConf
    CredentialConf = KeyAuthCredential

    def __init__(self, conf: KeyAuthConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.header = conf.header.lower().encode("latin-1")
        self.query = conf.query
        self.hide = conf.hide_credentials
        challenge = [(b"www-authenticate", f'apikey realm="{conf.realm}"'.encode())]
        self.challenge = challenge
        self.missing = message(401, "Missing API key in request", challenge)
        self.invalid = message(401, "Invalid API key in request", challenge)
        self.index: dict[bytes, tuple[bytes, Credential]] = env.consumers.index(self.name) or {}

    @classmethod
    def build_index(cls, entries: Sequence[tuple[Any, Credential]]) -> Any:
        return {conf.digest(): (conf.digest(), cred) for conf, cred in entries}

    @classmethod
    def unique_keys(cls, conf: Any) -> list[str]:
        return ["key:" + conf.digest().hex()]

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        raw = ctx.header(self.header)
        from_header = raw is not None
        if raw is not None:
            key = raw
        else:
            arg = ctx.raw_arg(self.query) if ctx.query else None
            if arg is None:
                return self.missing
            # The escapes' own bytes, as a header would carry them (UTF-8 for a key
            # outside ASCII); `+` is a space, as in APISIX's query arguments.
            key = unquote_to_bytes(arg.replace(b"+", b" "))
        digest = hashlib.sha256(key).digest()
        entry = self.index.get(digest)
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return self.invalid
        if self.hide:
            if from_header:
                ctx.remove_header(self.header)
            else:
                ctx.remove_query_arg(self.query)
        self.attach(ctx, entry[1])
        return None
