"""Identity providers for openid-connect: discovery documents and signing keys, fetched with
trio, cached, refreshed in the background and on an unknown `kid`.

A `Provider` is shared by every plugin conf naming the same discovery URL and outlives
reloads. The server runs `IdpRegistry.run` in its nursery: it loads every provider at
startup (a provider that is down does not stop the gateway) and refreshes keys every
`KEY_REFRESH_S`, so a key rotation is picked up without a restart. An unknown `kid` triggers
a refresh at most once per `KID_REFRESH_MIN_S`, so a flood of bogus `kid`s cannot hammer the
provider. Introspection results are cached until the token expires, in a bounded map.
"""

from __future__ import annotations

import base64
import json
import logging
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import trio
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from gateway.fetch import FetchError, wait_request
from gateway.wakeup import wake

log = logging.getLogger("gateway")

KEY_REFRESH_S = 300.0
KID_REFRESH_MIN_S = 10.0
RETRY_LOAD_MIN_S = 2.0
INTROSPECTION_CACHE_SIZE = 10_000
INTROSPECTION_MAX_TTL_S = 300.0


class ProviderUnavailable(Exception):
    """The provider could not be reached (or answered nonsense) within the timeout."""


class Provider:
    """One identity provider: metadata from discovery, keys from its JWKS."""

    def __init__(self, discovery: str, verify_tls: bool, timeout_s: float) -> None:
        self.discovery = discovery
        self.verify_tls = verify_tls
        self.timeout = timeout_s
        self.metadata: dict[str, Any] | None = None
        self.keys: dict[str | None, list[Any]] = {}
        self.key_generation = 0  # bumped whenever the published key set changes
        self._jwks_seen: Any = None
        self._lock = trio.Lock()
        self._last_refresh = -1e9
        self._last_attempt = -1e9
        self._last_forced = -1e9
        self._introspected: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = (
            OrderedDict()
        )

    def __repr__(self) -> str:
        return f"Provider({self.discovery!r}, loaded={self.metadata is not None})"

    async def _get_json(self, method: str, url: str, **kw: Any) -> Any:
        with trio.move_on_after(self.timeout):
            try:
                status, body = await wait_request(method, url, verify_tls=self.verify_tls, **kw)
            except FetchError as exc:
                raise ProviderUnavailable(str(exc)) from None
            if status != 200:
                raise ProviderUnavailable(f"{url} answered {status}")
            try:
                return json.loads(body)
            except ValueError:
                raise ProviderUnavailable(f"{url} did not answer JSON") from None
        raise ProviderUnavailable(f"{url} did not answer within {self.timeout} s")

    async def refresh(self) -> None:
        """Fetch discovery (first time) and the JWKS; raises ProviderUnavailable."""
        async with self._lock:
            self._last_attempt = trio.current_time()
            metadata = self.metadata
            if metadata is None:
                metadata = await self._get_json("GET", self.discovery)
                if not isinstance(metadata, dict) or "issuer" not in metadata:
                    raise ProviderUnavailable("discovery document without `issuer`")
            keys: dict[str | None, list[Any]] = {}
            document: Any = None
            jwks_uri = metadata.get("jwks_uri")
            if jwks_uri:
                document = await self._get_json("GET", jwks_uri)
                for entry in document.get("keys", []) if isinstance(document, dict) else []:
                    try:
                        key = PyJWK(entry)
                    except (PyJWKError, ValueError, TypeError, KeyError):
                        continue  # a key type we cannot use: skip it, keep the others
                    keys.setdefault(entry.get("kid"), []).append(key)
            self.metadata = metadata
            self.keys = keys
            if document != self._jwks_seen:
                self._jwks_seen = document
                self.key_generation += 1
            self._last_refresh = trio.current_time()

    async def wait_loaded(self) -> dict[str, Any]:
        """The discovery metadata, loading it now if it is missing (rate-limited)."""
        if self.metadata is not None:
            return self.metadata
        if trio.current_time() - self._last_attempt < RETRY_LOAD_MIN_S:
            raise ProviderUnavailable("provider not loaded yet")
        await self.refresh()
        assert self.metadata is not None
        return self.metadata

    def cached_keys(self, kid: str | None) -> list[Any]:
        """Keys for `kid` (every key when the token names none) as cached now."""
        return self._lookup(kid)

    async def wait_fresh_keys(self, kid: str | None) -> list[Any] | None:
        """Re-fetch the JWKS because a token's key is unknown (rotation), then the keys for
        `kid`; None when such a refresh ran less than KID_REFRESH_MIN_S ago (so a flood of
        bogus kids costs the provider one request per interval)."""
        now = trio.current_time()
        if now - self._last_forced < KID_REFRESH_MIN_S:
            return None
        self._last_forced = now
        await self.refresh()
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> list[Any]:
        if kid is None:
            return [k for keys in self.keys.values() for k in keys]
        return self.keys.get(kid, [])

    async def wait_introspection(
        self, endpoint: str, token: str, client_id: str, client_secret: str, method: str, now: float
    ) -> dict[str, Any]:
        """RFC 7662 introspection, cached until the token's `exp` (bounded in size and TTL)."""
        key = (endpoint, token)
        cached = self._introspected.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        form = f"token={_quote(token)}&token_type_hint=access_token"
        headers = [("content-type", "application/x-www-form-urlencoded")]
        if method == "client_secret_post":
            form += f"&client_id={_quote(client_id)}&client_secret={_quote(client_secret)}"
        else:
            basic = base64.b64encode(f"{_quote(client_id)}:{_quote(client_secret)}".encode())
            headers.append(("authorization", "Basic " + basic.decode()))
        result = await self._get_json("POST", endpoint, headers=headers, body=form.encode())
        if not isinstance(result, dict):
            raise ProviderUnavailable("introspection did not answer an object")
        if result.get("active") is True:
            exp = result.get("exp")
            until = now + INTROSPECTION_MAX_TTL_S
            if isinstance(exp, (int, float)) and not isinstance(exp, bool):
                until = min(until, float(exp))
            self._introspected[key] = (until, result)
            while len(self._introspected) > INTROSPECTION_CACHE_SIZE:
                self._introspected.popitem(last=False)
        return result

    async def wait_grant(
        self, endpoint: str, form: dict[str, str], client_id: str, client_secret: str, method: str
    ) -> tuple[int, dict[str, Any]]:
        """A token endpoint's answer to `form` (RFC 6749 section 4.1.3 and 6): its status
        and JSON object (empty when it sent none); raises ProviderUnavailable when it
        cannot be reached in time."""
        headers = [("content-type", "application/x-www-form-urlencoded")]
        fields = dict(form)
        if method == "client_secret_post":
            fields.update(client_id=client_id, client_secret=client_secret)
        else:
            basic = base64.b64encode(f"{_quote(client_id)}:{_quote(client_secret)}".encode())
            headers.append(("authorization", "Basic " + basic.decode()))
        body = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in fields.items()).encode()
        with trio.move_on_after(self.timeout):
            try:
                status, answer = await wait_request(
                    "POST", endpoint, headers=headers, body=body, verify_tls=self.verify_tls
                )
            except FetchError as exc:
                raise ProviderUnavailable(str(exc)) from None
            try:
                parsed = json.loads(answer)
            except ValueError:
                parsed = None
            return status, parsed if isinstance(parsed, dict) else {}
        raise ProviderUnavailable(f"{endpoint} did not answer within {self.timeout} s")

    async def wait_userinfo(self, endpoint: str, access_token: str) -> dict[str, Any] | None:
        """The userinfo endpoint's claims for `access_token`, or None when it refuses."""
        try:
            info = await self._get_json(
                "GET", endpoint, headers=[("authorization", "Bearer " + access_token)]
            )
        except ProviderUnavailable as exc:
            log.warning("openid-connect: userinfo: %s", exc)
            return None
        return info if isinstance(info, dict) else None

    async def run_refresh(self) -> None:
        """Keep the keys fresh: every KEY_REFRESH_S, or sooner while not loaded."""
        while True:
            try:
                await self.refresh()
            except ProviderUnavailable as exc:
                log.warning("identity provider %s: %s", self.discovery, exc)
                await trio.sleep(RETRY_LOAD_MIN_S)
                continue
            await trio.sleep(KEY_REFRESH_S)


def _quote(value: str) -> str:
    return quote(value, safe="")


class IdpRegistry:
    """Every provider the configs name, kept across reloads; refreshed by `run`."""

    def __init__(self) -> None:
        self._providers: dict[tuple[str, bool, float], Provider] = {}
        self._pending: list[Provider] = []
        self._wakeup = trio.Event()

    def provider(self, discovery: str, verify_tls: bool, timeout_s: float) -> Provider:
        key = (discovery, verify_tls, timeout_s)
        provider = self._providers.get(key)
        if provider is None:
            provider = self._providers[key] = Provider(discovery, verify_tls, timeout_s)
            self._pending.append(provider)
            wake(self._wakeup)
        return provider

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every provider (each within its timeout), report started, keep refreshing."""
        async with trio.open_nursery() as nursery:
            await self._start_pending(nursery)
            task_status.started()
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                await self._start_pending(nursery)

    async def _start_pending(self, nursery: trio.Nursery) -> None:
        pending, self._pending = self._pending, []
        # The first load of each, concurrently: a provider that is down costs its timeout
        # once, and requests answer 503 until it comes back.
        async with trio.open_nursery() as first:
            for provider in pending:
                first.start_soon(_first_load, provider)
        for provider in pending:
            nursery.start_soon(_refresh_later, provider)


async def _first_load(provider: Provider) -> None:
    try:
        await provider.refresh()
    except ProviderUnavailable as exc:
        log.warning("identity provider %s not loaded: %s", provider.discovery, exc)


async def _refresh_later(provider: Provider) -> None:
    await trio.sleep(KEY_REFRESH_S if provider.metadata is not None else RETRY_LOAD_MIN_S)
    await provider.run_refresh()
