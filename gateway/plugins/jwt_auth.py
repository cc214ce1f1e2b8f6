"""jwt-auth: a consumer is named by a claim (`key` by default) of a signed JWT.

The token's header `alg` must equal the credential's algorithm before anything is verified,
so `none`, and HS256 signed with an RSA public key as the secret, always fail. pyjwt does
the cryptography with keys prepared once at config load; `exp` and `nbf` are checked here
against the injected clock with the credential's grace period. Malformed input of any kind
is a 401, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from jwt.algorithms import get_default_algorithms
from jwt.api_jwt import PyJWT
from jwt.exceptions import InvalidKeyError, PyJWTError
from jwt.utils import base64url_decode

from gateway.config.fields import HeaderName, Realm, Username
from gateway.consumers import Credential
from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.pipeline import AuthPlugin, PluginConf, PluginEnv

log = logging.getLogger("gateway")

Algorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
]
_ALGORITHMS = get_default_algorithms()
_UNVERIFIED = PyJWT()
_NO_CHECKS: Any = {"verify_signature": False}


class JwtAuthConf(PluginConf, frozen=True, kw_only=True):
    header: HeaderName = "authorization"
    query: Annotated[str, msgspec.Meta(min_length=1)] = "jwt"
    cookie: HeaderName = "jwt"  # a cookie name is a token too (RFC 6265)
    hide_credentials: bool = False
    key_claim_name: Annotated[str, msgspec.Meta(min_length=1)] = "key"
    claims_to_verify: list[Literal["exp", "nbf"]] = []
    realm: Realm = "jwt"
    anonymous_consumer: Username | None = None  # APISIX: who a failed request becomes


class JwtAuthCredential(PluginConf, frozen=True, kw_only=True):
    key: Annotated[str, msgspec.Meta(min_length=1)]
    secret: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    public_key: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    algorithm: Algorithm = "HS256"
    base64_secret: bool = False
    lifetime_grace_period: Annotated[int, msgspec.Meta(ge=0)] = 0
    exp: Annotated[int, msgspec.Meta(ge=1)] = 86400  # accepted for APISIX configs; unused

    def __post_init__(self) -> None:
        self.verifying_key()  # raises ValueError naming the problem

    def verifying_key(self) -> Any:
        """The key pyjwt verifies with, prepared once; raises ValueError when unusable."""
        if self.algorithm.startswith("HS"):
            if self.secret is None:
                raise ValueError(f"`secret` is required for {self.algorithm}")
            secret = self.secret.encode()
            if self.base64_secret:
                try:
                    secret = base64.b64decode(self.secret, validate=True)
                except (binascii.Error, ValueError):
                    raise ValueError("`secret` is not valid base64 (base64_secret)") from None
            material: Any = secret
        else:
            if self.public_key is None:
                raise ValueError(f"`public_key` is required for {self.algorithm}")
            material = self.public_key.encode()
        try:
            return _ALGORITHMS[self.algorithm].prepare_key(material)
        except (InvalidKeyError, ValueError, TypeError) as exc:
            kind = "secret" if self.algorithm.startswith("HS") else "public_key"
            raise ValueError(f"`{kind}` is not a usable {self.algorithm} key: {exc}") from None


class _Verifier:
    """A credential ready to verify tokens: its algorithm object and prepared key."""

    __slots__ = ("algorithm", "credential", "grace", "key", "name")

    def __init__(self, conf: JwtAuthCredential, credential: Credential) -> None:
        self.name = conf.algorithm
        self.algorithm = _ALGORITHMS[conf.algorithm]
        self.key = conf.verifying_key()
        self.grace = conf.lifetime_grace_period
        self.credential = credential


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class JwtAuth(AuthPlugin):
    name = "jwt-auth"
    priority = 2510
    Conf = JwtAuthConf
    CredentialConf = JwtAuthCredential

    def __init__(self, conf: JwtAuthConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.now = env.now
        self.header = conf.header.lower().encode("latin-1")
        self.query = conf.query
        self.cookie = conf.cookie
        self.hide = conf.hide_credentials
        self.key_claim = conf.key_claim_name
        self.required = frozenset(conf.claims_to_verify)
        challenge = [(b"www-authenticate", f'Bearer realm="{conf.realm}"'.encode())]
        self.challenge = challenge
        self.missing = message(401, "Missing JWT token in request", challenge)
        self.not_jwt = message(401, "JWT token invalid", challenge)
        self.no_key = message(401, "missing user key in JWT token", challenge)
        self.unknown_key = message(401, "Invalid user key in JWT token", challenge)
        self.failed = message(401, "failed to verify jwt", challenge)
        self.index: dict[str, _Verifier] = env.consumers.index(self.name) or {}

    @classmethod
    def build_index(cls, entries: Sequence[tuple[Any, Credential]]) -> Any:
        return {conf.key: _Verifier(conf, cred) for conf, cred in entries}

    @classmethod
    def unique_keys(cls, conf: Any) -> list[str]:
        return ["key:" + conf.key]

    def _find_token(self, ctx: RequestContext) -> tuple[str, int] | None:
        """(token, source) with source 0 header, 1 query, 2 cookie."""
        raw = ctx.header(self.header)
        if raw is not None:
            token = raw.decode("latin-1").strip()
            if token[:7] in ("Bearer ", "bearer "):
                token = token[7:].strip()
            return token, 0
        if ctx.query:
            arg = ctx.args.get(self.query)
            if arg is not None:
                return arg, 1
        cookie = ctx.cookies.get(self.cookie)
        if cookie is not None:
            return cookie, 2
        return None

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        found = self._find_token(ctx)
        if found is None or not found[0]:
            return self.missing
        token, source = found
        try:
            decoded = _UNVERIFIED.decode_complete(token, options=_NO_CHECKS)
        except (PyJWTError, ValueError, TypeError):
            return self.not_jwt
        header, payload = decoded["header"], decoded["payload"]
        user_key = payload.get(self.key_claim)
        if user_key is None:
            return self.no_key
        verifier = self.index.get(user_key) if isinstance(user_key, str) else None
        if verifier is None:
            return self.unknown_key
        if header.get("alg") != verifier.name:
            log.info("jwt-auth: token alg %r is not the credential's", header.get("alg"))
            return self.failed
        signing_input, _, signature = token.rpartition(".")
        try:
            valid = verifier.algorithm.verify(
                signing_input.encode("latin-1"), verifier.key, base64url_decode(signature)
            )
        except (PyJWTError, ValueError, TypeError, binascii.Error):
            valid = False
        if not valid:
            log.info("jwt-auth: bad signature")
            return self.failed
        if not self._claims_valid(payload, verifier.grace):
            return self.failed
        if self.hide:
            if source == 0:
                ctx.remove_header(self.header)
            elif source == 1:
                ctx.remove_query_arg(self.query)
            else:
                ctx.remove_cookie(self.cookie)
        self.attach(ctx, verifier.credential)
        return None

    def _claims_valid(self, payload: dict[str, Any], grace: int) -> bool:
        now = self.now()
        for claim in ("exp", "nbf"):
            if claim not in payload:
                if claim in self.required:
                    log.info("jwt-auth: required claim %s missing", claim)
                    return False
                continue
            value = _number(payload[claim])
            if value is None:
                log.info("jwt-auth: claim %s is not a number", claim)
                return False
            if claim == "exp" and not value > now - grace:
                log.info("jwt-auth: token expired")
                return False
            if claim == "nbf" and not value < now + grace:
                log.info("jwt-auth: token not valid yet")
                return False
        return True
