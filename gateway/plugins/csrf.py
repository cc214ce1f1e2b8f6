"""csrf: double-submit tokens, as APISIX's plugin checks them.

Every answer of the route sets a token cookie (`name`, `path=/`, `SameSite=Lax`, valid for
`expires` seconds); a request with an unsafe method (not GET, HEAD or OPTIONS) must send
that token back in the `name` header too, the two equal, the token made with `key` and
not expired, or it gets 401 with APISIX's `error_msg`. A token is base64 JSON of a random
number, its creation time and a signature; **(ours)** the signature is an HMAC-SHA256 of
the other two under `key` (APISIX hashes them with the key inside), compared in constant
time. Priority 2980: access, header_filter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from email.utils import formatdate
from typing import Annotated

import msgspec

from gateway.config.fields import TOKEN
from gateway.context import RequestContext
from gateway.http.replies import Header, Reply, error_msg
from gateway.pipeline import Plugin, PluginConf, PluginEnv

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})


class CsrfConf(PluginConf, frozen=True, kw_only=True):
    key: Annotated[str, msgspec.Meta(min_length=1)]
    expires: Annotated[int, msgspec.Meta(ge=1)] = 7200
    name: Annotated[str, msgspec.Meta(pattern=TOKEN)] = "apisix-csrf-token"

    def __repr__(self) -> str:  # the key stays out of any output
        return f"CsrfConf(name={self.name!r}, expires={self.expires})"


class Csrf(Plugin):
    name = "csrf"
    priority = 2980
    Conf = CsrfConf

    def __init__(self, conf: CsrfConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.key = conf.key.encode()
        self.expires = conf.expires
        self.cookie_name = conf.name
        self.header = conf.name.lower().encode()
        self.now = env.now
        self.no_header = error_msg(401, "no csrf token in headers")
        self.no_cookie = error_msg(401, "no csrf cookie")
        self.mismatch = error_msg(401, "csrf token mismatch")
        self.bad_sign = error_msg(401, "Failed to verify the CSRF token signature")
        self.expired = error_msg(401, "Failed to verify the CSRF token expiration")

    def _sign(self, random: str, created: str) -> str:
        return hmac.new(self.key, f"{random}:{created}".encode(), hashlib.sha256).hexdigest()

    def new_token(self, now: float) -> str:
        random = secrets.token_hex(16)
        created = str(int(now))
        doc = {"random": random, "expires": int(created), "sign": self._sign(random, created)}
        return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()

    def _verify(self, token: str, now: float) -> Reply | None:
        try:
            doc = json.loads(base64.b64decode(token, validate=True))
            random, created, sign = str(doc["random"]), int(doc["expires"]), str(doc["sign"])
        except (binascii.Error, ValueError, KeyError, TypeError):
            return self.bad_sign
        if not hmac.compare_digest(sign, self._sign(random, str(created))):
            return self.bad_sign
        if created + self.expires < now:
            return self.expired
        return None

    def access(self, ctx: RequestContext) -> Reply | None:
        if ctx.method in SAFE_METHODS:
            return None
        sent = ctx.header(self.header)
        if not sent:
            return self.no_header
        cookie = ctx.cookies.get(self.cookie_name)
        if cookie is None:
            return self.no_cookie
        if not hmac.compare_digest(sent, cookie.encode("latin-1")):
            return self.mismatch
        return self._verify(cookie, self.now())

    def header_filter(self, ctx: RequestContext, status: int, headers: list[Header]) -> None:
        now = self.now()
        expires = formatdate(now + self.expires, usegmt=True)
        cookie = f"{self.cookie_name}={self.new_token(now)};path=/;SameSite=Lax;Expires={expires}"
        headers.append((b"set-cookie", cookie.encode()))
