"""Route matching: exact, prefix and parameter URIs, methods, hosts, client addresses.

Built once per config. Rules (APISIX's radixtree): an exact URI beats a prefix; a longer
prefix beats a shorter one; among routes with the same URI, higher `priority` first, then
config order. A candidate whose method or host does not match is skipped and the next one
tried. `/petstore/*` matches `/petstore/` and `/petstore/a`, not `/petstore`.

A URI with parameters (`/user/:id`, `/files/*path`, `/user/:id/*`) ranks as the prefix
before its first parameter and must then match whole: a `:name` segment is one non-empty
segment, a `*name` segment (or a `*` not at the end) the rest of the path, empty too.
A route's `vars` (compiled by `gateway.expr`) is one more condition, read from the request.

Pure: no IO. A match costs one dict lookup for exact paths plus one per distinct prefix
length, and one pattern match per parameter route tried.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from gateway.addresses import NetworkSet

T = TypeVar("T")


def split_uri(uri: str) -> tuple[bytes, bool, re.Pattern[bytes] | None]:
    """(literal part, is a prefix, pattern the whole path must match) of a route's uri."""
    colon = uri.find(":")
    star = uri.find("*")
    if colon < 0 and star in (-1, len(uri) - 1):
        return (uri[:-1].encode(), True, None) if star >= 0 else (uri.encode(), False, None)
    first = min(at for at in (colon, star) if at >= 0)
    parts = []
    for segment in uri.split("/"):
        if segment.startswith(":"):
            parts.append("[^/]+")
        elif segment.startswith("*"):
            parts.append(".*")
        else:
            parts.append(re.escape(segment))
    pattern = re.compile("/".join(parts).encode(), re.DOTALL)
    return uri[:first].encode(), True, pattern


def uri_label(uris: Sequence[str], normal: Sequence[str]) -> Callable[[bytes], str]:
    """Which of a route's `uris` (as configured; `normal` as routed) a path the route
    matched came in by, most specific first: APISIX's `matched_uri` metric label."""
    if len(uris) == 1:
        only = uris[0]
        return lambda path: only
    tests = sorted(
        ((uri, *split_uri(n)) for uri, n in zip(uris, normal, strict=True)),
        key=lambda t: (t[2], -len(t[1])),
    )

    def label(path: bytes) -> str:
        for uri, literal, is_prefix, pattern in tests:
            if not is_prefix:
                if path == literal:
                    return uri
            elif path.startswith(literal) and (pattern is None or pattern.fullmatch(path)):
                return uri
        return ""

    return label


def host_label(hosts: Sequence[str]) -> Callable[[bytes], str]:
    """Which of a route's `hosts` a request's host (lower-case) matched: APISIX's
    `matched_host` metric label ("" for a route without hosts)."""
    if len(hosts) <= 1:
        only = hosts[0] if hosts else ""
        return lambda host: only
    exact = {h.lower().encode(): h for h in hosts if not h.startswith("*")}
    wildcards = [(h[1:].lower().encode(), h) for h in hosts if h.startswith("*")]

    def label(host: bytes) -> str:
        found = exact.get(host)
        if found is not None:
            return found
        for suffix, h in wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                return h
        return ""

    return label


class _Candidate(Generic[T]):
    __slots__ = (
        "any_host",
        "exact_hosts",
        "methods",
        "networks",
        "order",
        "pattern",
        "priority",
        "value",
        "vars",
        "wildcard_hosts",
    )

    def __init__(
        self,
        value: T,
        methods: frozenset[bytes] | None,
        hosts: Sequence[str],
        priority: int,
        order: int,
        pattern: re.Pattern[bytes] | None = None,
        remote_addrs: Sequence[str] = (),
        vars: Callable[[Any], bool] | None = None,
    ) -> None:
        self.value = value
        self.pattern = pattern
        self.vars = vars
        self.methods = methods
        self.exact_hosts = frozenset(h.lower().encode() for h in hosts if not h.startswith("*"))
        # "*.example.com" -> b".example.com"; a bare "*" matches every host.
        self.wildcard_hosts = tuple(h[1:].lower().encode() for h in hosts if h.startswith("*"))
        self.any_host = not hosts
        self.networks = NetworkSet(remote_addrs)
        self.priority = priority
        self.order = order

    def accepts(self, method: bytes, path: bytes, host: bytes, remote: str, request: Any) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if not self.any_host and not self._host_matches(host):
            return False
        if self.networks and remote not in self.networks:
            return False
        if self.vars is not None and not self.vars(request):
            return False
        return self.pattern is None or self.pattern.fullmatch(path) is not None

    def _host_matches(self, host: bytes) -> bool:
        if host in self.exact_hosts:
            return True
        return any(
            host.endswith(suffix) and len(host) > len(suffix) for suffix in self.wildcard_hosts
        )


class RouteSpec(Generic[T]):
    """What the router needs to know of one route."""

    __slots__ = ("hosts", "methods", "priority", "remote_addrs", "uris", "value", "vars")

    def __init__(
        self,
        value: T,
        uris: Sequence[str],
        methods: Sequence[str] | None = None,
        hosts: Sequence[str] = (),
        priority: int = 0,
        remote_addrs: Sequence[str] = (),
        vars: Callable[[Any], bool] | None = None,
    ) -> None:
        self.value = value
        self.uris = uris
        self.vars = vars
        self.methods = methods
        self.hosts = hosts
        self.priority = priority
        self.remote_addrs = remote_addrs


class Router(Generic[T]):
    """Maps (method, path, host, client address) to the best matching route's value."""

    def __init__(self, specs: Iterable[RouteSpec[T]]) -> None:
        exact: dict[bytes, list[_Candidate[T]]] = {}
        prefix: dict[bytes, list[_Candidate[T]]] = {}
        for order, spec in enumerate(specs):
            methods = frozenset(m.encode() for m in spec.methods) if spec.methods else None
            for uri in spec.uris:
                literal, is_prefix, pattern = split_uri(uri)
                candidate = _Candidate(
                    spec.value,
                    methods,
                    spec.hosts,
                    spec.priority,
                    order,
                    pattern,
                    spec.remote_addrs,
                    spec.vars,
                )
                (prefix if is_prefix else exact).setdefault(literal, []).append(candidate)

        def ranked(cands: list[_Candidate[T]]) -> tuple[_Candidate[T], ...]:
            return tuple(sorted(cands, key=lambda c: (-c.priority, c.order)))

        self._exact = {path: ranked(c) for path, c in exact.items()}
        by_length: dict[int, dict[bytes, tuple[_Candidate[T], ...]]] = {}
        for p, cands in prefix.items():
            by_length.setdefault(len(p), {})[p] = ranked(cands)
        # Longest prefix first.
        self._prefixes = tuple(sorted(by_length.items(), key=lambda kv: -kv[0]))

    def match(
        self, method: bytes, path: bytes, host: bytes, remote: str = "", request: Any = None
    ) -> T | None:
        """The best route for a request; `path` without the query, `host` lower-case, no port,
        `remote` the client's address, `request` what routes' `vars` checks read."""
        cands = self._exact.get(path)
        if cands is not None:
            for c in cands:
                if c.accepts(method, path, host, remote, request):
                    return c.value
        n = len(path)
        for length, table in self._prefixes:
            if length > n:
                continue
            cands = table.get(path[:length])
            if cands is not None:
                for c in cands:
                    if c.accepts(method, path, host, remote, request):
                        return c.value
        return None
