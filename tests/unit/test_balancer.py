from __future__ import annotations

from collections import Counter

import pytest

from gateway.upstream.balancer import Node, RoundRobin


def test_smooth_weighted_sequence_matches_nginx() -> None:
    rr = RoundRobin([Node("a", 1, 5), Node("b", 1, 1), Node("c", 1, 1)])
    assert "".join(rr.pick().host for _ in range(7)) == "aabacaa"


def test_weights_are_honoured_over_many_picks() -> None:
    rr = RoundRobin([Node("a", 1, 3), Node("b", 1, 1), Node("zero", 1, 0)])
    counts = Counter(rr.pick().host for _ in range(400))
    assert counts == {"a": 300, "b": 100}


def test_all_zero_weights_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        RoundRobin([Node("a", 1, 0)])


def test_host_header_omits_default_port_and_brackets_ipv6() -> None:
    assert Node("svc", 80, 1).host_header == b"svc"
    assert Node("svc", 8080, 1).host_header == b"svc:8080"
    assert Node("::1", 8080, 1).host_header == b"[::1]:8080"


def test_pick_untried_skips_tried_nodes_however_heavy() -> None:
    a, b, c = Node("a", 1, 50), Node("b", 1, 1), Node("c", 1, 1)
    rr = RoundRobin([a, b, c])
    assert rr.pick_untried([a]) in (b, c)
    assert rr.pick_untried([a, b]) is c
    assert rr.pick_untried([a, b, c]) is None
