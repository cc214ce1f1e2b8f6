from __future__ import annotations

import pytest

from gateway.http.path import PathError, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", b"/"),
        (b"/a/b", b"/a/b"),
        (b"//admin", b"/admin"),
        (b"/a//b///c", b"/a/b/c"),
        (b"/a/./b", b"/a/b"),
        (b"/a/../b", b"/b"),
        (b"/public/../admin/x", b"/admin/x"),
        (b"/public/%2e%2e/admin", b"/admin"),
        (b"/public/%2E./admin", b"/admin"),
        (b"/%61dmin", b"/admin"),
        (b"/a%7eb%2Dc", b"/a~b-c"),
        (b"/a%2fb", b"/a%2Fb"),
        (b"/public/..%2Fadmin", b"/public/..%2Fadmin"),
        (b"/a/b/..", b"/a/"),
        (b"/a/.", b"/a/"),
        (b"/a/b/", b"/a/b/"),
        (b"/%20x", b"/%20x"),
    ],
)
def test_normalize(raw: bytes, expected: bytes) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw", [b"/..", b"/a/../..", b"/%2e%2e/etc/passwd", b"/a%2", b"/a%zz", b"relative"]
)
def test_refused(raw: bytes) -> None:
    with pytest.raises(PathError):
        normalize(raw)
