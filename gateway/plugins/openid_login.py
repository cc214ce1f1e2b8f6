"""openid-connect's browser flow (`bearer_only: false`): the authorization-code login.

A request without a bearer token and without a session is sent to the provider's login
page (302, `unauth_action: auth`; `deny` answers 401, `pass` lets it through
unauthenticated). The provider sends the browser back to `redirect_uri` with a code; the
gateway checks the `state` it issued (and the `nonce`, PKCE's verifier when configured),
exchanges the code at the token endpoint, verifies the ID token (signature by the
provider's JWKS, issuer, audience, times), fetches the userinfo, and keeps the whole in the
session cookie (`gateway.sessions`: sealed, no server state), then sends the browser back
to the page it asked for. Later requests carry the session: an expired access token is
renewed with the refresh token (`renew_access_token_on_expiry`), and the upstream receives
`X-Access-Token`, `X-ID-Token` and `X-Userinfo` as in bearer mode. `logout_path` ends the
session and goes on to the provider's `end_session_endpoint`.

**(ours)** A callback that does not match a login this browser started (no pending
session, another `state`) or that the provider refused is 401; a provider that cannot be
reached is 503 (APISIX answers both 500).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

from gateway.context import RequestContext
from gateway.http.replies import Reply, status_reply
from gateway.oidc import ProviderUnavailable
from gateway.sessions import SessionCookies

if TYPE_CHECKING:
    from gateway.plugins.openid_connect import ProviderConf, _Verifier

log = logging.getLogger("gateway")

REDIRECT_SUFFIX: Final = "/.apisix/redirect"
LOGIN_WITHIN_S: Final = 600.0  # a started login must come back within this
DEFAULT_ACCESS_TOKEN_S: Final = 3600  # lua-resty-openidc's, for a response without expires_in
_LOGGED_OUT: Final = b"<html><body>Logged Out</body></html>\n"


class LoginFailed(Exception):
    """A callback that does not complete a login; the reason is for the log only."""


class BrowserLogin:
    """The authorization-code flow of one provider conf (see the module docstring)."""

    def __init__(self, conf: ProviderConf, verifier: _Verifier) -> None:
        assert conf.session is not None  # the conf check requires it for this flow
        self.conf = conf
        self.verifier = verifier
        self.provider = verifier.provider
        self.now = verifier.now
        self.cookies = SessionCookies(
            conf.session.secret, "session", b"trio-gateway openid-connect session"
        )
        self.lifetime = conf.session.cookie.lifetime
        self.logout_path = conf.logout_path
        self.redirect_path = (
            None if conf.redirect_uri is None else urlsplit(conf.redirect_uri).path or "/"
        )
        self.auth_method = conf.token_endpoint_auth_method or "client_secret_basic"
        self.refused = status_reply(401)
        self.unavailable = status_reply(503)

    async def handle(self, ctx: RequestContext) -> Reply | tuple[str, dict[str, Any]] | None:
        """A Reply that ends the request, (access token, session) for a logged-in browser,
        or None to let the request through unauthenticated (`unauth_action: pass`)."""
        path = ctx.path.decode("latin-1")
        cookies = ctx.cookies
        if path == self.logout_path:
            return await self._logout(ctx, cookies)
        redirect_uri, redirect_path = self._redirect_uri(ctx, path)
        args = ctx.args
        try:
            if path == redirect_path and ("state" in args or "code" in args or "error" in args):
                return await self._callback(ctx, cookies, args, redirect_uri)
            session = self.cookies.open(cookies, self.now())
            if (
                session is not None
                and "id" in session
                and (session["ate"] > self.now() or await self._renew(ctx, session, cookies))
            ):
                return session["at"], session
            action = self.conf.unauth_action
            if action == "pass":
                return None
            if action == "deny":
                return self.refused
            return await self._start(ctx, cookies, redirect_uri)
        except ProviderUnavailable as exc:
            log.warning("openid-connect: %s", exc)
            return self.unavailable
        except LoginFailed as exc:
            log.info("openid-connect: login refused: %s", exc)
            return self.refused

    def _redirect_uri(self, ctx: RequestContext, path: str) -> tuple[str, str]:
        """The absolute callback URI for this request and its path (APISIX's default: the
        request's path with `/.apisix/redirect` appended)."""
        configured = self.conf.redirect_uri
        if configured is None:
            if path.endswith(REDIRECT_SUFFIX):
                configured = path
            else:
                configured = path.rstrip("/") + REDIRECT_SUFFIX
        redirect_path = self.redirect_path or configured
        if configured.startswith("/"):
            host = ctx.header(b"host")
            authority = host.decode("latin-1") if host else ctx.host.decode("latin-1")
            configured = f"{ctx.scheme}://{authority}{configured}"
        return configured, redirect_path

    async def _start(
        self, ctx: RequestContext, cookies: dict[str, str], redirect_uri: str
    ) -> Reply:
        """Send the browser to the provider's login, remembering what it asked for."""
        metadata = await self.provider.wait_loaded()
        endpoint = metadata.get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise ProviderUnavailable("discovery document without `authorization_endpoint`")
        pending: dict[str, Any] = {
            "state": secrets.token_urlsafe(24),
            # Where to come back to: the normalised path (one leading `/`, so never another
            # site) and the query.
            "target": (ctx.path + (b"?" + ctx.query if ctx.query else b"")).decode("latin-1"),
            "expires": self.now() + LOGIN_WITHIN_S,
        }
        params = {
            "response_type": "code",
            "client_id": self.conf.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.conf.scope,
            "state": pending["state"],
        }
        if self.conf.use_nonce:
            params["nonce"] = pending["nonce"] = secrets.token_urlsafe(24)
        if self.conf.use_pkce:
            pending["verifier"] = verifier = secrets.token_urlsafe(48)
            challenge = hashlib.sha256(verifier.encode()).digest()
            params["code_challenge"] = base64.urlsafe_b64encode(challenge).rstrip(b"=").decode()
            params["code_challenge_method"] = "S256"
        params.update(self.conf.authorization_params or {})
        location = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
        headers = [(b"location", location.encode()), (b"cache-control", b"no-store")]
        headers += self.cookies.seal(pending, ctx.tls is not None, cookies)
        return Reply(302, headers)

    async def _callback(
        self, ctx: RequestContext, cookies: dict[str, str], args: dict[str, str], redirect_uri: str
    ) -> Reply:
        """The provider sent the browser back: finish the login this browser started."""
        pending = self.cookies.open(cookies, self.now())
        if pending is None or "state" not in pending:
            raise LoginFailed("no login was started by this browser")
        if not hmac.compare_digest(args.get("state", "").encode(), pending["state"].encode()):
            raise LoginFailed("the state does not match the login started")
        if "error" in args:
            raise LoginFailed(f"the provider answered error={args['error'][:64]!r}")
        code = args.get("code")
        if not code:
            raise LoginFailed("no code")
        metadata = await self.provider.wait_loaded()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if "verifier" in pending:
            form["code_verifier"] = pending["verifier"]
        tokens = await self._grant(metadata, form)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed("the token response holds no id_token")
        claims = await self._verify_id_token(id_token, metadata, pending.get("nonce"))
        session = await self._session(metadata, tokens, claims, id_token)
        headers = [
            (b"location", pending["target"].encode("latin-1")),
            (b"cache-control", b"no-store"),
        ]
        headers += self.cookies.seal(session, ctx.tls is not None, cookies)
        return Reply(302, headers)

    async def _grant(self, metadata: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
        endpoint = metadata.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise ProviderUnavailable("discovery document without `token_endpoint`")
        status, tokens = await self.provider.wait_grant(
            endpoint, form, self.conf.client_id, self.conf.client_secret, self.auth_method
        )
        if status != 200:
            raise LoginFailed(f"the token endpoint answered {status} {tokens.get('error', '')}")
        if not isinstance(tokens.get("access_token"), str):
            raise LoginFailed("the token response holds no access_token")
        return tokens

    async def _verify_id_token(
        self, id_token: str, metadata: dict[str, Any], nonce: str | None
    ) -> dict[str, Any]:
        from gateway.plugins.openid_connect import _Rejected  # (one module imports the other)

        try:
            claims = await self.verifier.verify_jwt(id_token, metadata)
            self.verifier.check_claims(claims, metadata)
        except _Rejected as exc:
            raise LoginFailed(f"ID token: {exc}") from None
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        if self.conf.client_id not in audiences:
            raise LoginFailed("ID token: not issued to this client_id")
        if claims.get("iss") != metadata.get("issuer"):
            raise LoginFailed("ID token: issuer not valid")
        if nonce is not None and not hmac.compare_digest(
            str(claims.get("nonce", "")).encode(), nonce.encode()
        ):
            raise LoginFailed("ID token: the nonce does not match")
        return claims

    async def _session(
        self,
        metadata: dict[str, Any],
        tokens: dict[str, Any],
        claims: dict[str, Any],
        id_token: str,
    ) -> dict[str, Any]:
        now = self.now()
        access_token = tokens["access_token"]
        session: dict[str, Any] = {
            "id": claims,
            "it": id_token,
            "at": access_token,
            "ate": now + self._expires_in(tokens),
            "expires": now + self.lifetime,
        }
        if isinstance(tokens.get("refresh_token"), str):
            session["rt"] = tokens["refresh_token"]
        endpoint = metadata.get("userinfo_endpoint")
        if self.conf.set_userinfo_header and isinstance(endpoint, str):
            userinfo = await self.provider.wait_userinfo(endpoint, access_token)
            if userinfo is not None:
                session["ui"] = userinfo
        return session

    def _expires_in(self, tokens: dict[str, Any]) -> float:
        value = tokens.get("expires_in")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        return float(self.conf.access_token_expires_in or DEFAULT_ACCESS_TOKEN_S)

    async def _renew(
        self, ctx: RequestContext, session: dict[str, Any], cookies: dict[str, str]
    ) -> bool:
        """Renew an expired access token with the refresh token; the new session cookie
        goes out with the response. False when it cannot be renewed (log in again)."""
        refresh_token = session.get("rt")
        if not self.conf.renew_access_token_on_expiry or not isinstance(refresh_token, str):
            return False
        metadata = await self.provider.wait_loaded()
        try:
            tokens = await self._grant(
                metadata, {"grant_type": "refresh_token", "refresh_token": refresh_token}
            )
        except LoginFailed as exc:
            log.info("openid-connect: renewing the access token failed: %s", exc)
            return False
        session["at"] = tokens["access_token"]
        session["ate"] = self.now() + self._expires_in(tokens)
        if isinstance(tokens.get("refresh_token"), str):
            session["rt"] = tokens["refresh_token"]
        ctx.add_response_headers(self.cookies.seal(session, ctx.tls is not None, cookies))
        return True

    async def _logout(self, ctx: RequestContext, cookies: dict[str, str]) -> Reply:
        session = self.cookies.open(cookies, self.now())
        headers = self.cookies.clear(ctx.tls is not None, cookies)
        headers.append((b"cache-control", b"no-store"))
        try:
            metadata = await self.provider.wait_loaded()
        except ProviderUnavailable:
            metadata = {}
        endpoint = metadata.get("end_session_endpoint")
        after = self.conf.post_logout_redirect_uri
        if isinstance(endpoint, str):
            params = {}
            if session is not None and isinstance(session.get("it"), str):
                params["id_token_hint"] = session["it"]
            if after is not None:
                params["post_logout_redirect_uri"] = after
            location = endpoint + (
                ("&" if "?" in endpoint else "?") + urlencode(params) if params else ""
            )
            return Reply(302, [(b"location", location.encode()), *headers])
        if after is not None:
            return Reply(302, [(b"location", after.encode()), *headers])
        return Reply(200, [(b"content-type", b"text/html"), *headers], _LOGGED_OUT)


def session_headers(
    session: dict[str, Any], with_id: bool, with_userinfo: bool
) -> list[tuple[bytes, bytes]]:
    """X-ID-Token and X-Userinfo for the upstream (base64 of their JSON, as APISIX)."""
    out = []
    if with_id:
        out.append((b"x-id-token", base64.b64encode(json.dumps(session["id"]).encode())))
    if with_userinfo and "ui" in session:
        out.append((b"x-userinfo", base64.b64encode(json.dumps(session["ui"]).encode())))
    return out
