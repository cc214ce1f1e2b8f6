from __future__ import annotations

import pytest

from gateway.http.path import (
    PathError,
    absolute_form,
    host_without_port,
    normalize,
    normalized_target,
)


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
        (b"/a/...;x/b", b"/a/...;x/b"),
        (b"/a..%2Fb/c", b"/a..%2Fb/c"),  # `a..` is no dot segment
        (b"/a/b/..", b"/a/"),
        (b"/a/.", b"/a/"),
        (b"/a/b/", b"/a/b/"),
        (b"/%20x", b"/%20x"),
    ],
)
def test_normalize(raw: bytes, expected: bytes) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/..",
        b"/a/../..",
        b"/%2e%2e/etc/passwd",
        b"/a%2",
        b"/a%zz",
        b"relative",
        # `..` beside an encoded slash: an upstream that decodes %2F would climb there.
        b"/public/..%2Fadmin",
        b"/public%2F..%2Fadmin",
        b"/public/%2e%2e%2fadmin",
        b"/a/%2F..",
        b"/a%00b",
        b"/a/..;/admin",
        b"/a/%2e%2e;jsessionid=1/admin",
    ],
)
def test_refused(raw: bytes) -> None:
    with pytest.raises(PathError):
        normalize(raw)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/a/./b/../c?x=/../y", b"/a/c?x=/../y"),  # the query is not a path
        (b"*", b"*"),
        (b"/plain", b"/plain"),
        (b"/a/./b#frag/../x", b"/a/b"),  # a fragment is dropped before anything else
        (b"/a?x=1#frag", b"/a?x=1"),
    ],
)
def test_normalized_target(target: bytes, expected: bytes) -> None:
    assert normalized_target(target) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"http://example.com/a//b?q", (b"example.com", b"/a//b?q")),
        (b"http://example.com", (b"example.com", b"/")),
        (b"https://Example.com:8443?q=/x", (b"Example.com:8443", b"/?q=/x")),
        (b"HTTP://[::1]:9080/a", (b"[::1]:9080", b"/a")),
        (b"http://a.test:/", (b"a.test:", b"/")),
        (b"/http://a.test/", None),  # origin-form
        (b"*", None),
        (b"ftp://a.test/", None),
    ],
)
def test_absolute_form(target: bytes, expected: tuple[bytes, bytes] | None) -> None:
    assert absolute_form(target) == expected


@pytest.mark.parametrize(
    "target",
    [b"http://user@a.test/", b"http://user:pw@a.test/", b"http:///a", b"http://:80/",
     b"http://a.test:8o/", b"http://[::1/", b"http://a\\b/"],
)  # fmt: skip
def test_absolute_form_refused(target: bytes) -> None:
    with pytest.raises(PathError):
        absolute_form(target)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"API.Example.com:8080", b"api.example.com"),
        (b"example.com", b"example.com"),
        (b"[::1]:9080", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"api.example.com.:80", b"api.example.com"),
        (b"my_service:", b"my_service"),
        (b"A.", b"a"),
    ],
)
def test_host_without_port(host: bytes, expected: bytes) -> None:
    assert host_without_port(host) == expected


@pytest.mark.parametrize(
    "host",
    [b"[::1", b"a/b", b"user@evil", b"a b", b"a:8o", b"a:80:80", b"\\x", b":80", b".", b"a.."],
)
def test_host_refused(host: bytes) -> None:
    with pytest.raises(PathError):
        host_without_port(host)
