"""real-ip's address parsing: what a proxy's header may hold."""

from __future__ import annotations

import pytest

from gateway.plugins.real_ip import parse_address


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("198.51.100.1", ("198.51.100.1", None)),
        (" 198.51.100.1 ", ("198.51.100.1", None)),
        ("198.51.100.1:8080", ("198.51.100.1", 8080)),
        ("2001:db8::1", ("2001:db8::1", None)),
        ("2001:DB8:0::1", ("2001:db8::1", None)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("[198.51.100.1]:443", None),
        ("198.51.100.1:0", None),
        ("198.51.100.1:65536", None),
        ("198.51.100.1:http", None),
        ("198.51.100.256", None),
        ("unknown", None),
        ("", None),
    ],
)
def test_parse_address(text: str, parsed: tuple[str, int | None] | None) -> None:
    assert parse_address(text) == parsed
