from __future__ import annotations

from collections import Counter

import pytest

from gateway.upstream.balancer import FAIL_TIMEOUT_S, Node, RoundRobin


def test_smooth_weighted_sequence_matches_nginx() -> None:
    rr = RoundRobin([Node("a", 1, 5), Node("b", 1, 1), Node("c", 1, 1)])
    assert "".join(rr.pick(0.0).host for _ in range(7)) == "aabacaa"


def test_weights_are_honoured_over_many_picks() -> None:
    rr = RoundRobin([Node("a", 1, 3), Node("b", 1, 1), Node("zero", 1, 0)])
    counts = Counter(rr.pick(0.0).host for _ in range(400))
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
    assert rr.pick_untried([a], 0.0) in (b, c)
    assert rr.pick_untried([a, b], 0.0) is c
    assert rr.pick_untried([a, b, c], 0.0) is None


def test_a_failed_node_is_left_out_for_the_fail_timeout() -> None:
    a, b, c = Node("a", 1, 1), Node("b", 1, 1), Node("c", 1, 2)
    rr = RoundRobin([a, b, c])
    rr.mark_failed(a, 100.0)
    during = Counter(rr.pick(100.0 + t / 10).host for t in range(99))
    assert during == {"c": 66, "b": 33}  # the others keep their 2:1 weights
    after = Counter(rr.pick(100.0 + FAIL_TIMEOUT_S).host for _ in range(400))
    assert after == {"c": 200, "a": 100, "b": 100}


def test_every_node_failed_lately_picks_them_all_again() -> None:
    a, b = Node("a", 1, 1), Node("b", 1, 1)
    rr = RoundRobin([a, b])
    rr.mark_failed(a, 0.0)
    rr.mark_failed(b, 0.0)
    assert {rr.pick(1.0).host for _ in range(4)} == {"a", "b"}


def test_a_single_node_is_never_left_out() -> None:
    a = Node("a", 1, 1)
    rr = RoundRobin([a])
    rr.mark_failed(a, 0.0)
    assert rr.pick(1.0) is a


def test_pick_untried_prefers_a_node_not_left_out() -> None:
    a, b, c = Node("a", 1, 50), Node("b", 1, 1), Node("c", 1, 1)
    rr = RoundRobin([a, b, c])
    rr.mark_failed(a, 0.0)
    rr.mark_failed(b, 0.0)
    assert rr.pick_untried([a], 1.0) is c
    assert rr.pick_untried([a, c], 1.0) is b  # left out, but the only one not tried
