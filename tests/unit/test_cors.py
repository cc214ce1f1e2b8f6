"""cors's origin rule: which origin a request's Origin is allowed as (APISIX's cases)."""

from __future__ import annotations

import pytest

from gateway.plugins.cors import OriginRule

LIST = "https://a.example,https://b.example:8443"


@pytest.mark.parametrize(
    ("origins", "regexes", "origin", "allowed"),
    [
        ("*", None, b"https://x.example", b"*"),
        ("*", None, None, b"*"),
        ("**", None, b"https://x.example", b"https://x.example"),
        ("**", None, None, b"*"),
        ("**", None, b"https://a.example,https://b.example", None),
        ("null", None, b"null", b"null"),
        ("null", None, b"https://x.example", None),
        ("https://a.example", None, b"https://a.example", b"https://a.example"),
        ("https://a.example", None, b"https://A.example", None),
        ("https://a.example", None, None, None),
        (LIST, None, b"https://b.example:8443", b"https://b.example:8443"),
        (LIST, None, b"https://b.example", None),
        (LIST, None, None, None),
        # A regex list replaces the origins; a search, as ngx.re.find, unless anchored.
        ("*", [r"\.a\.example"], b"https://x.a.example", b"https://x.a.example"),
        ("*", [r"\.a\.example"], b"https://x.a.example.evil", b"https://x.a.example.evil"),
        ("*", [r"\.a\.example$"], b"https://x.a.example.evil", None),
        ("*", [r"^https://b", r"^https://c"], b"https://c.example", b"https://c.example"),
        ("*", [r"."], None, None),
    ],
)
def test_allowed_origin(
    origins: str, regexes: list[str] | None, origin: bytes | None, allowed: bytes | None
) -> None:
    assert OriginRule(origins, regexes).allowed(origin) == allowed
