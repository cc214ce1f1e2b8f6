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


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/user/42", "param"),
        (b"/user/:id", "param"),
        (b"/user/", None),
        (b"/user/42/", None),
        (b"/user/42/posts", None),
        (b"/user/42/posts/7", "two"),
        (b"/user/42/posts/7/x", None),
        (b"/files/a/b/c.txt", "rest"),
        (b"/files/", "rest"),
        (b"/files", None),
        (b"/name/bob/anything/at/all", "named-rest"),
        (b"/name/bob/", "named-rest"),
        (b"/name/bob", None),
        (b"/v1.0/x", "dot"),
        (b"/v1x0/x", None),
    ],
)
def test_parameters_in_uris_match_as_in_apisix(path: bytes, expected: str | None) -> None:
    """APISIX's radixtree: `:name` matches one non-empty segment, a `*name` segment the rest
    of the path (empty too); the rest of such a uri matches as written."""
    router = build(
        RouteSpec("param", ["/user/:id"]),
        RouteSpec("two", ["/user/:id/posts/:post"]),
        RouteSpec("rest", ["/files/*path"]),
        RouteSpec("named-rest", ["/name/:who/*"]),
        RouteSpec("dot", ["/v1.0/:x"]),
    )
    assert router.match(b"GET", path, b"") == expected


def test_parameter_routes_rank_as_prefixes_of_the_path_before_the_parameter() -> None:
    """A parameter route sits at the literal path before its first parameter: an exact uri
    beats it, a longer prefix beats it, and with the same literal part `priority` then
    config order decide; a route whose parameters do not fit lets the next one try."""
    router = build(
        RouteSpec("star", ["/user/*"]),
        RouteSpec("param", ["/user/:id"], priority=1),
        RouteSpec("exact", ["/user/me"]),
        RouteSpec("longer", ["/user/4*"]),
    )
    assert router.match(b"GET", b"/user/me", b"") == "exact"
    assert router.match(b"GET", b"/user/42", b"") == "longer"
    assert router.match(b"GET", b"/user/7", b"") == "param"
    assert router.match(b"GET", b"/user/7/x", b"") == "star"
    router = build(RouteSpec("star", ["/user/*"]), RouteSpec("param", ["/user/:id"]))
    assert router.match(b"GET", b"/user/7", b"") == "star"
    router = build(
        RouteSpec("post", ["/user/:id"], methods=["POST"]), RouteSpec("star", ["/user/*"])
    )
    assert router.match(b"GET", b"/user/7", b"") == "star"
    assert router.match(b"POST", b"/user/7", b"") == "post"


def test_remote_addrs_by_address_or_network() -> None:
    """APISIX's route `remote_addrs`: the client's address, or a network holding it (an
    IPv4-mapped IPv6 peer counts as its IPv4 address); otherwise the next route is tried."""
    router = build(
        RouteSpec("lan", ["/a"], remote_addrs=["10.0.0.0/8", "fe80::/10"], priority=2),
        RouteSpec("one", ["/a"], remote_addrs=["192.0.2.7"], priority=1),
        RouteSpec("any", ["/a"]),
    )
    assert router.match(b"GET", b"/a", b"", "10.1.2.3") == "lan"
    assert router.match(b"GET", b"/a", b"", "::ffff:10.9.9.9") == "lan"
    assert router.match(b"GET", b"/a", b"", "fe80::1") == "lan"
    assert router.match(b"GET", b"/a", b"", "192.0.2.7") == "one"
    assert router.match(b"GET", b"/a", b"", "192.0.2.8") == "any"
    assert router.match(b"GET", b"/a", b"", "127.0.0.1") == "any"
    only = build(RouteSpec("lan", ["/*"], remote_addrs=["10.0.0.0/8"]))
    assert only.match(b"GET", b"/x", b"", "127.0.0.1") is None
    assert only.match(b"GET", b"/x", b"", "10.0.0.1") == "lan"
