"""hmac-auth: a consumer signs the request with a shared secret (APISIX 3.x scheme).

    Authorization: Signature keyId="k",algorithm="hmac-sha256",headers="@request-target date",
                   signature="<base64>"

Signing string: the keyId, then for each name in `headers`, in order, `@request-target` as
`METHOD path?query` as the client sent them (before normalisation), or `name: value` for a
header present in the request (absent ones are skipped); lines joined with "\\n" plus a
trailing "\\n". `Date` is always required and must be within `clock_skew` of now. With
`validate_request_body`, `Digest: SHA-256=<base64>` must match the body, which is read whole
(up to `max_req_body_size`, else 413).

Clients get a fixed message; the reason goes to the log only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Literal

import msgspec

from gateway.config.fields import TOKEN, Realm, Username
from gateway.consumers import Credential
from gateway.context import RequestContext
from gateway.http.replies import Reply, message, status_reply
from gateway.pipeline import AuthPlugin, PluginConf, PluginEnv

log = logging.getLogger("gateway")

HmacAlgorithm = Literal["hmac-sha1", "hmac-sha256", "hmac-sha512"]
_DIGESTS = {"hmac-sha1": hashlib.sha1, "hmac-sha256": hashlib.sha256, "hmac-sha512": hashlib.sha512}
_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*(?:,|$)')
DEFAULT_MAX_BODY = 64 * 1024 * 1024
# A header name, or the pseudo-header for the request line.
SignedName = Annotated[str, msgspec.Meta(pattern=rf"^@request-target\Z|{TOKEN}")]


class HmacAuthConf(PluginConf, frozen=True, kw_only=True):
    allowed_algorithms: Annotated[list[HmacAlgorithm], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["hmac-sha1", "hmac-sha256", "hmac-sha512"]
    )
    clock_skew: Annotated[int, msgspec.Meta(ge=1)] = 300
    signed_headers: list[SignedName] = msgspec.field(default_factory=lambda: ["date"])
    validate_request_body: bool = False
    max_req_body_size: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_MAX_BODY
    hide_credentials: bool = False
    realm: Realm = "hmac"
    anonymous_consumer: Username | None = None  # APISIX: who a failed request becomes


class HmacAuthCredential(PluginConf, frozen=True, kw_only=True):
    key_id: Annotated[str, msgspec.Meta(min_length=1)]
    secret_key: Annotated[str, msgspec.Meta(min_length=1)]


class _Failure(Exception):
    """Why a signature was refused (logged, never sent to the client)."""


def parse_authorization(value: str) -> dict[str, str]:
    """The parameters of a `Signature k="v",...` value; raises _Failure when malformed."""
    params: dict[str, str] = {}
    rest = value[len("Signature") :].strip()
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            raise _Failure("malformed Signature parameters")
        params[m.group(1)] = m.group(2)
        pos = m.end()
    return params


def signing_string(key_id: str, names: list[str], ctx: RequestContext) -> bytes:
    """The bytes the client signed (see the module docstring)."""
    lines = [key_id.encode("latin-1")]
    for name in names:
        if name == "@request-target":
            lines.append(ctx.method + b" " + ctx.request_target)
            continue
        value = ctx.header(name.encode("latin-1"))
        if value is not None:
            lines.append(name.encode("latin-1") + b": " + value)
    return b"\n".join(lines) + b"\n"


class HmacAuth(AuthPlugin):
    name = "hmac-auth"
    priority = 2530
    Conf = HmacAuthConf
    CredentialConf = HmacAuthCredential

    def __init__(self, conf: HmacAuthConf, env: PluginEnv) -> None:
        super().__init__(conf, env)
        self.now = env.now
        self.allowed = frozenset(conf.allowed_algorithms)
        self.skew = conf.clock_skew
        self.signed = tuple(h.lower() for h in conf.signed_headers)
        self.hide = conf.hide_credentials
        self.max_body = conf.max_req_body_size
        challenge = [(b"www-authenticate", f'hmac realm="{conf.realm}"'.encode())]
        self.challenge = challenge
        base = "client request can't be validated"
        self.missing = message(401, f"{base}: missing Authorization header", challenge)
        self.not_signature = message(
            401, f"{base}: Authorization header does not start with 'Signature'", challenge
        )
        self.failed = message(401, base, challenge)
        self.too_large = status_reply(413)
        self.index: dict[str, tuple[bytes, Credential]] = env.consumers.index(self.name) or {}
        if conf.validate_request_body:
            self.rewrite = self._rewrite_with_body  # type: ignore[method-assign,assignment]

    @classmethod
    def build_index(cls, entries: Sequence[tuple[Any, Credential]]) -> Any:
        return {conf.key_id: (conf.secret_key.encode(), cred) for conf, cred in entries}

    @classmethod
    def unique_keys(cls, conf: Any) -> list[str]:
        return ["key_id:" + conf.key_id]

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        result = self._verify(ctx)
        if isinstance(result, Reply):
            return result
        self._accept(ctx, result)
        return None

    async def _rewrite_with_body(self, ctx: RequestContext) -> Reply | None:
        result = self._verify(ctx)
        if isinstance(result, Reply):
            return result
        assert ctx.request_body is not None
        body = (
            ctx.body if ctx.body is not None else await ctx.request_body.read_whole(self.max_body)
        )
        if body is None:
            return self.too_large
        ctx.body = body
        digest_header = ctx.header(b"digest")
        expected = b"SHA-256=" + base64.b64encode(hashlib.sha256(body).digest())
        if digest_header is None or not hmac.compare_digest(digest_header.strip(), expected):
            log.info("hmac-auth: body digest missing or wrong")
            return self.failed
        self._accept(ctx, result)
        return None

    def _accept(self, ctx: RequestContext, credential: Credential) -> None:
        if self.hide:
            ctx.remove_header(b"authorization")
        self.attach(ctx, credential)

    def _verify(self, ctx: RequestContext) -> Reply | Credential:
        raw = ctx.header(b"authorization")
        if raw is None:
            return self.missing
        value = raw.decode("latin-1").strip()
        if not value.startswith("Signature"):
            return self.not_signature
        try:
            return self._check(ctx, value)
        except _Failure as exc:
            log.info("hmac-auth: %s", exc)
            return self.failed

    def _check(self, ctx: RequestContext, value: str) -> Credential:
        params = parse_authorization(value)
        key_id = params.get("keyId")
        algorithm = params.get("algorithm")
        signature = params.get("signature")
        if not key_id or not algorithm or not signature:
            raise _Failure("keyId, algorithm and signature are required")
        if algorithm not in self.allowed:
            raise _Failure(f"algorithm {algorithm!r} is not allowed")
        entry = self.index.get(key_id)
        if entry is None:
            raise _Failure("unknown keyId")
        self._check_date(ctx)
        names = params.get("headers", "").lower().split()
        for required in self.signed:
            if required not in names:
                raise _Failure(f"header {required!r} must be signed")
        try:
            given = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise _Failure("signature is not base64") from None
        secret, credential = entry
        expected = hmac.new(
            secret, signing_string(key_id, names, ctx), _DIGESTS[algorithm]
        ).digest()
        if not hmac.compare_digest(expected, given):
            raise _Failure("signature mismatch")
        return credential

    def _check_date(self, ctx: RequestContext) -> None:
        date = ctx.header(b"date")
        if date is None:
            raise _Failure("Date header missing")
        try:
            sent = parsedate_to_datetime(date.decode("latin-1")).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            raise _Failure("Date header is not an HTTP date") from None
        if abs(self.now() - sent) > self.skew:
            raise _Failure("Date outside clock_skew")
