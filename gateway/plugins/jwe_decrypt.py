"""jwe-decrypt: a JWE in a request header, decrypted with the key of the consumer its `kid`
names, goes upstream as plaintext in `forward_header` (APISIX's plugin).

Tokens are RFC 7516 compact serializations with `alg: dir` (no encrypted key) and
`enc: A256GCM`: the consumer's 32-byte secret is the AES-256-GCM key, the IV 12 bytes, the
tag 16. RFC 7516 seals the protected header as the additional authenticated data; a token
sealed without it (what APISIX's own encrypt API made before) is accepted too, as APISIX
does, since GCM's tag under the consumer's key still vouches for the ciphertext.

As in APISIX it decrypts and does not authenticate: no consumer is named, so it is no
entry of multi-auth. It holds credentials (`key`, `secret`, `is_base64_encoded`) like the
auth plugins, so those are checked, indexed and kept out of logs the same way.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.config.fields import HeaderName
from gateway.consumers import Credential
from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.pipeline import AuthPlugin, PluginConf, PluginEnv

NAME = "jwe-decrypt"
KEY_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16
_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
# What a header value may hold (RFC 9110 section 5.5): no control character but HTAB.
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


class JweDecryptConf(PluginConf, frozen=True, kw_only=True):
    header: HeaderName = "Authorization"
    forward_header: HeaderName = "Authorization"
    strict: bool = True


class JweDecryptCredential(PluginConf, frozen=True, kw_only=True):
    key: Annotated[str, msgspec.Meta(min_length=1)]
    secret: Annotated[str, msgspec.Meta(min_length=KEY_SIZE)]
    is_base64_encoded: bool = False

    def __post_init__(self) -> None:
        self.key_bytes()  # raises ValueError naming the problem (never the secret)

    def key_bytes(self) -> bytes:
        """The AES-256 key; raises ValueError unless it is 32 bytes."""
        if self.is_base64_encoded:
            try:
                key = base64.b64decode(self.secret, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("`secret` is not valid base64 (is_base64_encoded)") from None
        else:
            key = self.secret.encode()
        if len(key) != KEY_SIZE:
            raise ValueError(
                f"secret must be {KEY_SIZE} bytes"
                f"{' once base64-decoded' if self.is_base64_encoded else ''}, not {len(key)}"
            )
        return key


class JweKey:
    """One consumer's key, ready to open and seal tokens."""

    __slots__ = ("aead", "credential", "kid")

    def __init__(self, conf: JweDecryptCredential, credential: Credential) -> None:
        self.kid = conf.key
        self.aead = AESGCM(conf.key_bytes())
        self.credential = credential

    def open(self, parts: list[bytes]) -> bytes | None:
        """The plaintext of a token split in its five parts, or None."""
        protected, encrypted_key, iv_text, text, tag_text = parts
        iv, ciphertext, tag = b64url(iv_text), b64url(text), b64url(tag_text)
        if encrypted_key or iv is None or ciphertext is None or tag is None:
            return None  # `dir` has no encrypted key
        if len(iv) != IV_SIZE or len(tag) != TAG_SIZE:
            return None
        sealed = ciphertext + tag
        for aad in (protected, None):  # RFC 7516's, then APISIX's older tokens'
            try:
                return self.aead.decrypt(iv, sealed, aad)
            except InvalidTag:
                continue
        return None

    def seal(self, plaintext: bytes) -> str:
        """A compact JWE of `plaintext` under this key (a fresh random IV each time)."""
        header = msgspec.json.encode({"alg": "dir", "enc": "A256GCM", "kid": self.kid})
        protected = _b64url_text(header)
        iv = os.urandom(IV_SIZE)
        sealed = self.aead.encrypt(iv, plaintext, protected.encode())
        parts = (protected, "", _b64url_text(iv), _b64url_text(sealed[:-TAG_SIZE]))
        return ".".join((*parts, _b64url_text(sealed[-TAG_SIZE:])))


def b64url(text: bytes) -> bytes | None:
    """Unpadded base64url (RFC 7515 section 2), strictly; None when it is not."""
    if len(text) % 4 == 1 or _BASE64URL.fullmatch(text) is None:
        return None
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _b64url_text(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class JweDecrypt(AuthPlugin):
    name = NAME
    priority = 2509
    Conf = JweDecryptConf
    CredentialConf = JweDecryptCredential
    names_consumer: ClassVar[bool] = False

    MISSING = message(403, "missing JWE token in request")
    INVALID = message(400, "JWE token invalid")
    NO_KID = message(400, "missing kid in JWE token")
    UNKNOWN_KID = message(400, "invalid kid in JWE token")
    FAILED = message(400, "failed to decrypt JWE token")
    NOT_A_VALUE = message(400, "JWE payload is not a valid header value")

    def __init__(self, conf: JweDecryptConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.header = conf.header.lower().encode("latin-1")
        self.forward = conf.forward_header.lower().encode("latin-1")
        self.strict = conf.strict
        self.challenge = []
        self.keys: dict[str, JweKey] = env.consumers.index(self.name) or {}

    @classmethod
    def build_index(cls, entries: Sequence[tuple[Any, Credential]]) -> Any:
        return {conf.key: JweKey(conf, cred) for conf, cred in entries}

    @classmethod
    def unique_keys(cls, conf: Any) -> list[str]:
        return ["key:" + conf.key]

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        token = ctx.header(self.header)
        if token is None:
            if self.strict:
                return self.MISSING
            if self.forward != self.header:
                ctx.remove_header(self.forward)  # the client's own copy is no plaintext
            return None
        if token[:7] in (b"Bearer ", b"bearer "):
            token = token[7:]
        parts = token.split(b".")
        if len(parts) != 5:
            return self.INVALID
        header_json = b64url(parts[0])
        try:
            header = msgspec.json.decode(header_json) if header_json is not None else None
        except (msgspec.DecodeError, RecursionError):
            header = None
        if not isinstance(header, dict):
            return self.INVALID
        kid = header.get("kid")
        if kid is None:
            return self.NO_KID
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return self.UNKNOWN_KID
        if header.get("alg") != "dir" or header.get("enc") != "A256GCM":
            return self.FAILED
        plaintext = key.open(parts)
        if plaintext is None:
            return self.FAILED
        if _FIELD_VALUE.fullmatch(plaintext) is None:
            return self.NOT_A_VALUE
        ctx.remove_header(self.forward)
        ctx.headers.append((self.forward, plaintext))
        return None


def jwe_keys(env: PluginEnv) -> dict[str, JweKey]:
    """Every consumer's jwe-decrypt key by `key` (for the encrypt API)."""
    keys: dict[str, JweKey] = env.consumers.index(NAME) or {}
    return keys
