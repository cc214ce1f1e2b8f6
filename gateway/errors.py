"""The gateway's own exceptions: each answers who is at fault and which status follows.

Code above the IO boundary sees only these; trio, h11 and OSError exceptions are
translated where they are raised (see `upstream/connection.py` and `downstream.py`), an
h11 error's text through `protocol_fault`, which keeps the bytes it quotes out of the log.
Expected outcomes (a failed login, a rate-limited request) are `Reply` values, not exceptions.
"""

from __future__ import annotations

import enum
import re

# Where h11's error messages start quoting the bytes at fault ("illegal header line:
# bytearray(b'apikey : ...')", "Illegal header name b'...'").
_QUOTED = re.compile(r"(?::\s*|\s+)(?:bytearray\(|b?['\"])")


def protocol_fault(exc: Exception) -> str:
    """A parser error's description without the bytes it quotes: a header line or a chunk
    can hold a key, and these descriptions are logged."""
    return _QUOTED.split(str(exc), maxsplit=1)[0].strip() or type(exc).__name__


class GatewayError(Exception):
    """Base of every exception the gateway raises on purpose."""


class DownstreamError(GatewayError):
    """The client broke the protocol; answer `status` (when still possible) and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UpstreamPhase(enum.Enum):
    CONNECT = "connect"
    SEND = "send"
    READ = "read"


class UpstreamError(GatewayError):
    """The upstream failed: 504 on a timeout, 502 otherwise.

    `reused` tells whether the connection came from the pool, and `responded` whether any
    byte of a response had arrived: a reused connection that failed before responding may
    be retried once on a fresh one, for idempotent requests.
    """

    def __init__(
        self,
        phase: UpstreamPhase,
        reason: str,
        *,
        timeout: bool = False,
        reused: bool = False,
        responded: bool = False,
    ) -> None:
        super().__init__(f"{phase.value}: {reason}")
        self.phase = phase
        self.reason = reason
        self.timeout = timeout
        self.reused = reused
        self.responded = responded

    @property
    def status(self) -> int:
        return 504 if self.timeout else 502


class ConfigError(GatewayError):
    """One problem in a config file, in msgspec's form: ``message - at `$.path` ``."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{message} - at `{path}`")
        self.message = message
        self.path = path


class ConfigErrors(GatewayError):
    """Every problem found in one config file, one line each."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
