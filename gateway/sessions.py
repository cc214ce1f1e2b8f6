"""Sessions kept in the browser: a JSON object sealed (AES-256-GCM) into cookies.

The gateway keeps no session state, so any worker (or machine) with the same secret reads
any session, and a restart loses none. The key is derived from the configured secret
(HKDF-SHA256); the cookie's name is bound into the seal, so a value cannot be moved to
another cookie; the object carries its own expiry, checked on open. A sealed value longer
than a browser keeps in one cookie (4 KiB with the name) is split over `name`, `name_2`,
... (as lua-resty-session does); the first piece says how many there are.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.http.replies import Header

PIECE: Final = 3800  # base64 characters per cookie, with room for the name and attributes
MAX_PIECES: Final = 8
_NONCE: Final = 12
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class SessionCookies:
    """Seal and open one kind of session cookie (`name`) with a key from `secret`."""

    def __init__(self, secret: str, name: str, info: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            secret.encode()
        )
        self._aead = AESGCM(key)
        self.name = name
        self._aad = name.encode()

    def open(self, cookies: dict[str, str], now: float) -> dict[str, Any] | None:
        """The session the request's cookies hold, or None (none, forged, or expired)."""
        first = cookies.get(self.name)
        if not first:
            return None
        count, dot, value = first.partition(".")
        if not dot or not count.isdigit() or not 1 <= int(count) <= MAX_PIECES:
            return None
        pieces = [value]
        for i in range(2, int(count) + 1):
            piece = cookies.get(f"{self.name}_{i}")
            if piece is None:
                return None
            pieces.append(piece)
        try:
            sealed = base64.urlsafe_b64decode("".join(pieces) + "==")
            plain = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], self._aad)
            session = _decode(plain)
        except (binascii.Error, ValueError, InvalidTag, msgspec.DecodeError):
            return None
        expires = session.get("expires")
        if not isinstance(expires, (int, float)) or expires <= now:
            return None
        return session

    def seal(self, session: dict[str, Any], secure: bool, previous: dict[str, str]) -> list[Header]:
        """Set-Cookie headers holding `session` (which must carry its `expires`), and
        clearing pieces left over from a longer one in `previous` (the request's cookies)."""
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, _encode(session), self._aad)
        value = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
        pieces = [value[i : i + PIECE] for i in range(0, len(value), PIECE)]
        if len(pieces) > MAX_PIECES:
            raise ValueError("the session does not fit in its cookies")
        attributes = self._attributes(secure)
        headers = [self._set(self.name, f"{len(pieces)}.{pieces[0]}", attributes)]
        for i, piece in enumerate(pieces[1:], start=2):
            headers.append(self._set(f"{self.name}_{i}", piece, attributes))
        for i in range(len(pieces) + 1, MAX_PIECES + 1):
            if f"{self.name}_{i}" in previous:
                headers.append(self._set(f"{self.name}_{i}", "", attributes + b"; Max-Age=0"))
        return headers

    def clear(self, secure: bool, previous: dict[str, str]) -> list[Header]:
        """Set-Cookie headers that remove the session."""
        attributes = self._attributes(secure) + b"; Max-Age=0"
        names = [self.name] + [f"{self.name}_{i}" for i in range(2, MAX_PIECES + 1)]
        return [self._set(n, "", attributes) for n in names if n == self.name or n in previous]

    @staticmethod
    def _attributes(secure: bool) -> bytes:
        return b"; Path=/; HttpOnly; SameSite=Lax" + (b"; Secure" if secure else b"")

    @staticmethod
    def _set(name: str, value: str, attributes: bytes) -> Header:
        return (b"set-cookie", f"{name}={value}".encode() + attributes)
