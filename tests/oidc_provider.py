"""A real OpenID Connect provider for the tests: `oidc-provider-mock` (PyPI) in its own
process on a free port, and its real authorization-code flow to obtain tokens."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.helpers import free_port

REDIRECT = "http://client.test/callback"


class OidcProvider:
    def __init__(self, workdir: Path, token_max_age: int = 300) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.token_max_age = token_max_age
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery(self) -> str:
        return f"{self.base}/.well-known/openid-configuration"

    def start(self) -> None:
        """Start (or restart: a new process has a new signing key)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "provider.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "oidc_provider_mock",
                    "--port",
                    str(self.port),
                    "--host",
                    "127.0.0.1",
                    "--token-max-age",
                    str(self.token_max_age),
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.discovery, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("oidc-provider-mock did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def tokens(
        self, sub: str, client_id: str = "gateway", scope: str = "openid email"
    ) -> dict[str, Any]:
        """Log `sub` in through the authorization-code flow; the token response."""
        with httpx.Client(base_url=self.base, timeout=10) as client:
            authorize = client.post(
                "/oauth2/authorize",
                params={
                    "client_id": client_id,
                    "redirect_uri": REDIRECT,
                    "response_type": "code",
                    "scope": scope,
                    "state": "state",
                },
                data={"sub": sub},
            )
            assert authorize.status_code == 302, authorize.text
            code = parse_qs(urlsplit(authorize.headers["location"]).query)["code"][0]
            token = client.post(
                "/oauth2/token",
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
                auth=(client_id, "client-secret"),
            )
            assert token.status_code == 200, token.text
            result: dict[str, Any] = token.json()
            return result

    def userinfo_ok(self, access_token: str) -> bool:
        """What the provider says of an access token: valid for its userinfo endpoint."""
        response = httpx.get(
            f"{self.base}/userinfo", headers={"authorization": f"Bearer {access_token}"}, timeout=10
        )
        return response.status_code == 200
