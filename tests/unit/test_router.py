from __future__ import annotations

import pytest

from gateway.router import Router, RouteSpec


def build(*specs: RouteSpec[str]) -> Router[str]:
    return Router(specs)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/petstore/", "prefix"),
        (b"/petstore/a/b", "prefix"),
        (b"/petstore", None),
        (b"/petstorex", None),
        (b"/petstore/pets", "exact"),
        (b"/petstore/pets/1", "longer"),
        (b"/other", "root"),
    ],
)
def test_exact_beats_prefix_and_longest_prefix_wins(path: bytes, expected: str | None) -> None:
    router = build(
        RouteSpec("prefix", ["/petstore/*"]),
        RouteSpec("exact", ["/petstore/pets"]),
        RouteSpec("longer", ["/petstore/pets/*"]),
        RouteSpec("root", ["/o*"]),
    )
    assert router.match(b"GET", path, b"") == expected


def test_priority_breaks_ties_then_config_order() -> None:
    router = build(
        RouteSpec("low", ["/a"], priority=0),
        RouteSpec("high", ["/a"], priority=10),
        RouteSpec("also-low", ["/a"], priority=0),
    )
    assert router.match(b"GET", b"/a", b"") == "high"
    router = build(RouteSpec("first", ["/a"]), RouteSpec("second", ["/a"]))
    assert router.match(b"GET", b"/a", b"") == "first"


def test_method_mismatch_falls_through_to_next_candidate() -> None:
    router = build(
        RouteSpec("get", ["/api/users"], methods=["GET"]),
        RouteSpec("any", ["/api/*"]),
    )
    assert router.match(b"GET", b"/api/users", b"") == "get"
    assert router.match(b"DELETE", b"/api/users", b"") == "any"
    router = build(RouteSpec("get", ["/x"], methods=["GET"]))
    assert router.match(b"POST", b"/x", b"") is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"api.example.com", "wild"),
        (b"a.b.example.com", "wild"),
        (b"example.com", "exact"),
        (b"evil-example.com", None),
        (b"other.org", None),
    ],
)
def test_hosts_with_wildcards(host: bytes, expected: str | None) -> None:
    router = build(
        RouteSpec("wild", ["/"], hosts=["*.example.com"]),
        RouteSpec("exact", ["/"], hosts=["Example.com"]),
    )
    assert router.match(b"GET", b"/", host) == expected


def test_uris_list_and_catch_all() -> None:
    router = build(RouteSpec("multi", ["/a", "/b/*"]), RouteSpec("all", ["/*"]))
    assert router.match(b"GET", b"/a", b"") == "multi"
    assert router.match(b"GET", b"/b/c", b"") == "multi"
    assert router.match(b"GET", b"/c", b"") == "all"
