"""openid-connect: callers present a token from an identity provider (bearer mode), or log
in through the provider in their browser (`bearer_only: false`, see `openid_login`).

JWT tokens are verified locally with the provider's JWKS (`use_jwks`, default) or a
configured `public_key`; opaque tokens through RFC 7662 introspection. Then the issuer,
audience, scopes, `exp` and `nbf` are checked against the injected clock. **(ours)**
`consumer_claim` maps a claim to a consumer username, so IdP users get consumer plugins and
identity headers like any other caller; `providers` with `mode: all | any` requires several
providers to vouch for one request, each reading its own `token_header`.

Failures are 401 with `WWW-Authenticate: Bearer realm="...", error="invalid_token"` (RFC
6750; without `error` when no token was sent); a provider that cannot be reached is 503.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import OrderedDict
from typing import Annotated, Any, Literal

import msgspec
from jwt.algorithms import get_default_algorithms
from jwt.api_jwt import PyJWT
from jwt.exceptions import InvalidKeyError, PyJWTError

from gateway.config.fields import HeaderName, Realm
from gateway.consumers import Credential
from gateway.context import RequestContext
from gateway.http.replies import Reply, message
from gateway.oidc import Provider, ProviderUnavailable
from gateway.pipeline import AuthPlugin, Conf, PluginEnv, PluginMeta
from gateway.plugins.jwt_auth import Algorithm  # the JWS algorithms both plugins accept
from gateway.plugins.openid_login import BrowserLogin, session_headers

log = logging.getLogger("gateway")

_ALGORITHMS = get_default_algorithms()
VERIFIED_CACHE_SIZE = 10_000
_JWT = PyJWT()
_UNVERIFIED: Any = {"verify_signature": False}
_VERIFY: Any = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "require": [],
}


class IssuerRule(Conf, frozen=True, kw_only=True):
    valid_issuers: list[str] | None = None


class AudienceRule(Conf, frozen=True, kw_only=True):
    required: bool = False
    match_with_client_id: bool = False


class ClaimValidator(Conf, frozen=True, kw_only=True):
    issuer: IssuerRule = msgspec.field(default_factory=IssuerRule)
    audience: AudienceRule = msgspec.field(default_factory=AudienceRule)


class SessionCookie(Conf, frozen=True, kw_only=True):
    lifetime: Annotated[int, msgspec.Meta(gt=0)] = 3600


class SessionConf(Conf, frozen=True, kw_only=True):
    secret: Annotated[str, msgspec.Meta(min_length=16)]
    cookie: SessionCookie = msgspec.field(default_factory=SessionCookie)


class ProviderConf(Conf, frozen=True, kw_only=True):
    discovery: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None = None
    client_id: str = ""
    client_secret: str = ""
    bearer_only: bool = True
    realm: Realm = "apisix"
    use_jwks: bool = True
    public_key: str | None = None
    token_signing_alg_values_expected: Algorithm | list[Algorithm] | None = None
    introspection_endpoint: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None = None
    introspection_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"
    )
    required_scopes: list[str] = []
    claim_validator: ClaimValidator = msgspec.field(default_factory=ClaimValidator)
    set_access_token_header: bool = True
    access_token_in_authorization_header: bool = False
    set_userinfo_header: bool = True
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 3.0
    ssl_verify: bool = False
    hide_credentials: bool = False
    token_header: HeaderName = "Authorization"
    consumer_claim: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    consumer_optional: bool = False
    # The browser flow (`bearer_only: false`, see `openid_login`).
    redirect_uri: Annotated[str, msgspec.Meta(pattern=r"^(https?://[^/?#]+)?/[^?#]*$")] | None = (
        None
    )
    scope: Annotated[str, msgspec.Meta(min_length=1)] = "openid"
    session: SessionConf | None = None
    logout_path: Annotated[str, msgspec.Meta(pattern=r"^/")] = "/logout"
    post_logout_redirect_uri: Annotated[str, msgspec.Meta(pattern=r"^(https?://|/)")] | None = None
    set_id_token_header: bool = True
    unauth_action: Literal["auth", "deny", "pass"] = "auth"
    use_pkce: bool = False
    use_nonce: bool = False
    authorization_params: dict[str, str] | None = None
    renew_access_token_on_expiry: bool = True
    access_token_expires_in: Annotated[int, msgspec.Meta(gt=0)] | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] | None = None

    def check_provider(self) -> None:
        if not self.bearer_only:
            if self.session is None:
                raise ValueError("bearer_only: false (the browser login) needs `session.secret`")
            if not self.client_id or not self.client_secret:
                raise ValueError("bearer_only: false needs `client_id` and `client_secret`")
        if self.discovery is None:
            raise ValueError("`discovery` is required")
        if self.public_key is not None:
            algorithms = self.expected_algorithms() or ["RS256"]
            try:
                _ALGORITHMS[algorithms[0]].prepare_key(self.public_key.encode())
            except (InvalidKeyError, ValueError, TypeError) as exc:
                raise ValueError(f"`public_key` is not usable: {exc}") from None

    def expected_algorithms(self) -> list[str] | None:
        value = self.token_signing_alg_values_expected
        if value is None:
            return None
        return [value] if isinstance(value, str) else list(value)


class OpenIdConnectConf(ProviderConf, frozen=True, kw_only=True):
    meta: PluginMeta | None = msgspec.field(default=None, name="_meta")  # as PluginConf's
    providers: Annotated[list[ProviderConf], msgspec.Meta(min_length=1)] | None = None
    mode: Literal["all", "any"] = "all"

    def __post_init__(self) -> None:
        if self.providers is None:
            self.check_provider()
            return
        for i, provider in enumerate(self.providers):
            try:
                if not provider.bearer_only:
                    raise ValueError("the browser login (bearer_only: false) takes one provider")
                provider.check_provider()
            except ValueError as exc:
                raise ValueError(f"providers[{i}]: {exc}") from None


class _Rejected(Exception):
    """A token that does not pass; the reason is for the log only."""


class _Verifier:
    """One provider conf, compiled: where the token is, how to check it, what it maps to."""

    def __init__(self, conf: ProviderConf, env: PluginEnv) -> None:
        assert conf.discovery is not None
        self.conf = conf
        self.now = env.now
        self.consumers = env.consumers
        self.provider: Provider = env.idps.provider(conf.discovery, conf.ssl_verify, conf.timeout)
        name = conf.token_header.lower()
        self.header = name.encode("latin-1")
        self.bearer_prefix = name == "authorization"
        self.algorithms = conf.expected_algorithms()
        self.public_key = (
            _ALGORITHMS[(self.algorithms or ["RS256"])[0]].prepare_key(conf.public_key.encode())
            if conf.public_key is not None
            else None
        )
        self.scopes = frozenset(conf.required_scopes)
        self.verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.key_generation = self.provider.key_generation
        realm = f'Bearer realm="{conf.realm}"'.encode()
        self.challenge = [(b"www-authenticate", realm)]
        invalid = [(b"www-authenticate", realm + b', error="invalid_token"')]
        self.missing = message(401, "Missing bearer token in request", self.challenge)
        self.invalid = message(401, "Invalid bearer token", invalid)
        self.unmapped = message(401, "The consumer is not recognized", invalid)
        self.unavailable = message(503, "The identity provider could not be reached")

    def token(self, ctx: RequestContext) -> str | None:
        raw = ctx.header(self.header)
        if raw is None:
            return None
        value = raw.decode("latin-1").strip()
        if self.bearer_prefix:
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
        return value or None

    async def authenticate(self, ctx: RequestContext) -> Reply | tuple[str, dict[str, Any]]:
        """(token, claims) for a valid token, or the Reply that refuses the request."""
        token = self.token(ctx)
        if token is None:
            return self.missing
        if self.key_generation != self.provider.key_generation:
            # The provider's keys changed (rotation): what they verified is verified again.
            self.verified.clear()
            self.key_generation = self.provider.key_generation
        cached = self.verified.get(token)
        if cached is not None:
            exp = cached.get("exp")
            if exp is None or exp > self.now():
                return token, cached
            del self.verified[token]
        try:
            metadata = await self.provider.wait_loaded()
            if token.count(".") == 2 and (self.conf.use_jwks or self.public_key is not None):
                claims = await self.verify_jwt(token, metadata)
                self.check_claims(claims, metadata)
                # A verified JWT stays valid until its exp: skip the RSA work next time.
                self.verified[token] = claims
                if len(self.verified) > VERIFIED_CACHE_SIZE:
                    self.verified.popitem(last=False)
            else:
                claims = await self._introspect(token, metadata)
                self.check_claims(claims, metadata)
        except ProviderUnavailable as exc:
            log.warning("openid-connect: %s", exc)
            return self.unavailable
        except _Rejected as exc:
            log.info("openid-connect: token refused: %s", exc)
            return self.invalid
        return token, claims

    async def verify_jwt(self, token: str, metadata: dict[str, Any]) -> dict[str, Any]:
        try:
            header = _JWT.decode_complete(token, options=_UNVERIFIED)["header"]
        except (PyJWTError, ValueError, TypeError) as exc:
            raise _Rejected(f"not a JWT: {type(exc).__name__}") from None
        alg = header.get("alg")
        allowed = (
            self.algorithms or metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        )
        if alg not in allowed or alg not in _ALGORITHMS or alg == "none":
            raise _Rejected(f"alg {alg!r} not expected")
        if self.public_key is not None:
            claims = self._verify_with([self.public_key], token, alg)
        else:
            kid = header.get("kid")
            kid = kid if isinstance(kid, str) else None
            claims = self._verify_with([k.key for k in self.provider.cached_keys(kid)], token, alg)
            if claims is None:
                # Perhaps the provider rotated its keys: look again, rate-limited.
                fresh = await self.provider.wait_fresh_keys(kid)
                if fresh:
                    claims = self._verify_with([k.key for k in fresh], token, alg)
        if claims is None:
            raise _Rejected("no key verifies the signature")
        self._check_times(claims)
        return claims

    @staticmethod
    def _verify_with(keys: list[Any], token: str, alg: str) -> dict[str, Any] | None:
        for key in keys:
            try:
                claims = _JWT.decode(token, key, algorithms=[alg], options=_VERIFY)
            except (PyJWTError, ValueError, TypeError):
                continue
            if isinstance(claims, dict):
                return claims
        return None

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self.now()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if exp is not None and (not isinstance(exp, (int, float)) or exp <= now):
            raise _Rejected("expired")
        if nbf is not None and (not isinstance(nbf, (int, float)) or nbf > now):
            raise _Rejected("not valid yet")

    async def _introspect(self, token: str, metadata: dict[str, Any]) -> dict[str, Any]:
        endpoint = self.conf.introspection_endpoint or metadata.get("introspection_endpoint")
        if not endpoint:
            raise _Rejected("opaque token and no introspection endpoint")
        result = await self.provider.wait_introspection(
            endpoint,
            token,
            self.conf.client_id,
            self.conf.client_secret,
            self.conf.introspection_endpoint_auth_method,
            self.now(),
        )
        if result.get("active") is not True:
            raise _Rejected("introspection: token not active")
        self._check_times(result)
        return result

    def check_claims(self, claims: dict[str, Any], metadata: dict[str, Any]) -> None:
        rules = self.conf.claim_validator
        issuers: list[Any] = rules.issuer.valid_issuers or [metadata.get("issuer")]
        if "iss" in claims and claims["iss"] not in issuers:
            raise _Rejected("issuer not valid")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        if rules.audience.required and not audiences:
            raise _Rejected("audience missing")
        if rules.audience.match_with_client_id and self.conf.client_id not in audiences:
            raise _Rejected("audience does not match client_id")
        if self.scopes:
            scope = claims.get("scope", claims.get("scp", ""))
            granted = set(scope.split() if isinstance(scope, str) else scope or [])
            if not self.scopes <= granted:
                raise _Rejected("required scope missing")

    def pass_token(self, ctx: RequestContext, token: str) -> None:
        """The access token for the upstream: `X-Access-Token`, or `Authorization: Bearer`
        with `access_token_in_authorization_header` (`set_access_token_header`)."""
        if not self.conf.set_access_token_header:
            return
        if self.conf.access_token_in_authorization_header:
            ctx.remove_header(b"authorization")
            ctx.headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
        else:
            ctx.remove_header(b"x-access-token")
            ctx.headers.append((b"x-access-token", token.encode("latin-1")))

    def forward(self, ctx: RequestContext, token: str, claims: dict[str, Any]) -> None:
        """Edit the upstream request: hide the token, pass it and the claims on."""
        if self.conf.hide_credentials:
            ctx.remove_header(self.header)
        self.pass_token(ctx, token)
        if self.conf.set_userinfo_header:
            ctx.remove_header(b"x-userinfo")
            ctx.headers.append((b"x-userinfo", base64.b64encode(json.dumps(claims).encode())))


class OpenIdConnect(AuthPlugin):
    name = "openid-connect"
    priority = 2599
    Conf = OpenIdConnectConf

    def __init__(self, conf: OpenIdConnectConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.consumers = env.consumers
        confs = conf.providers if conf.providers is not None else [conf]
        self.verifiers = [_Verifier(c, env) for c in confs]
        self.login = None if conf.bearer_only else BrowserLogin(conf, self.verifiers[0])
        self.any = conf.mode == "any"
        self.challenge = [h for v in self.verifiers for h in v.challenge]

    async def rewrite(self, ctx: RequestContext) -> Reply | None:
        if self.login is not None and self.verifiers[0].token(ctx) is None:
            return await self._browser(ctx, self.login)
        passed: list[tuple[_Verifier, str, dict[str, Any]]] = []
        first_failure: Reply | None = None
        for verifier in self.verifiers:
            result = await verifier.authenticate(ctx)
            if isinstance(result, Reply):
                if not self.any:
                    return result
                first_failure = first_failure or result
                continue
            passed.append((verifier, *result))
            if self.any:
                break
        if not passed:
            assert first_failure is not None
            return first_failure
        for verifier, _, claims in passed:
            claim = verifier.conf.consumer_claim
            if claim is None:
                continue
            value = claims.get(claim)
            consumer = self.consumers.by_name.get(value) if isinstance(value, str) else None
            if consumer is None:
                if not verifier.conf.consumer_optional:
                    return verifier.unmapped
            else:
                self.attach(ctx, Credential(None, consumer))
            break
        for verifier, token, claims in passed:
            verifier.forward(ctx, token, claims)
        return None

    async def _browser(self, ctx: RequestContext, login: BrowserLogin) -> Reply | None:
        """A request without a bearer token, when the browser login is on."""
        result = await login.handle(ctx)
        if result is None or isinstance(result, Reply):
            return result
        access_token, session = result
        conf = login.conf
        claim = conf.consumer_claim
        if claim is not None:
            value = session["id"].get(claim)
            consumer = self.consumers.by_name.get(value) if isinstance(value, str) else None
            if consumer is not None:
                self.attach(ctx, Credential(None, consumer))
            elif not conf.consumer_optional:
                return self.verifiers[0].unmapped
        self.verifiers[0].pass_token(ctx, access_token)
        for name, value in session_headers(
            session, conf.set_id_token_header, conf.set_userinfo_header
        ):
            ctx.remove_header(name)
            ctx.headers.append((name, value))
        return None
