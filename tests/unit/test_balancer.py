from __future__ import annotations

from collections import Counter

import pytest

from gateway.upstream.balancer import (
    DECAY_S,
    FAIL_TIMEOUT_S,
    ConsistentHash,
    Ewma,
    LeastConn,
    Node,
    Prioritized,
    RoundRobin,
)


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


# --- consistent hashing (APISIX's `type: chash`) -----------------------------------------

KEYS = [f"user-{i}" for i in range(2000)]


def test_chash_sends_one_key_to_one_node_and_spreads_keys_by_weight() -> None:
    ring = ConsistentHash([Node("a", 1, 1), Node("b", 1, 1), Node("c", 1, 2)])
    first = {key: ring.pick(0.0, key).host for key in KEYS}
    assert all(ring.pick(0.0, key).host == host for key, host in first.items())
    counts = Counter(first.values())
    assert set(counts) == {"a", "b", "c"}
    share = {host: n / len(KEYS) for host, n in counts.items()}
    assert 0.15 < share["a"] < 0.35
    assert 0.15 < share["b"] < 0.35
    assert 0.4 < share["c"] < 0.6


@pytest.mark.parametrize(
    ("ports", "prefix"),
    [((45403, 43231, 59552), "u"), ((48806, 38170, 30429), "key"), ((47863, 33017, 40238), "key")],
)
def test_chash_spreads_keys_that_differ_in_a_character(ports: tuple[int, ...], prefix: str) -> None:
    """Node labels and keys alike differ in a character or two (ports, `u1`, `u2`): with
    CRC-32 alone these twelve keys all fell on one node."""
    ring = ConsistentHash([Node("127.0.0.1", port, 1) for port in ports])
    assert len({ring.pick(0.0, f"{prefix}{i}").port for i in range(12)}) > 1


def test_chash_moves_only_the_keys_of_a_removed_node() -> None:
    nodes = [Node("a", 1, 1), Node("b", 1, 1), Node("c", 1, 1)]
    before = ConsistentHash(nodes)
    after = ConsistentHash(nodes[:2])
    moved = [k for k in KEYS if before.pick(0.0, k).host != after.pick(0.0, k).host]
    assert all(before.pick(0.0, k).host == "c" for k in moved)
    assert len(moved) == sum(before.pick(0.0, k).host == "c" for k in KEYS)


def test_chash_passes_over_a_failed_node_and_comes_back_to_it() -> None:
    a, b, c = Node("a", 1, 1), Node("b", 1, 1), Node("c", 1, 1)
    ring = ConsistentHash([a, b, c])
    on_a = [k for k in KEYS if ring.pick(0.0, k) is a]
    others = {k: ring.pick(0.0, k) for k in KEYS if k not in on_a}
    ring.mark_failed(a, 100.0)
    assert all(ring.pick(101.0, k) is not a for k in on_a)
    assert all(ring.pick(101.0, k) is node for k, node in others.items())
    assert all(ring.pick(100.0 + FAIL_TIMEOUT_S + 1, k) is a for k in on_a)
    assert ring.pick_untried([a], 101.0, on_a[0]) in (b, c)
    assert ring.pick_untried([a, b, c], 101.0, on_a[0]) is None


def test_chash_leaves_out_zero_weights_and_keeps_a_single_node() -> None:
    only = Node("only", 1, 1)
    ring = ConsistentHash([only, Node("zero", 1, 0)])
    ring.mark_failed(only, 0.0)
    assert all(ring.pick(1.0, k) is only for k in KEYS[:50])


# --- least_conn ---------------------------------------------------------------------------


def test_least_conn_picks_the_node_with_fewest_requests_in_flight_for_its_weight() -> None:
    a, b = Node("a", 1, 2), Node("b", 1, 1)
    lc = LeastConn([a, b])
    # (in flight + 1) / weight: a 0.5, b 1 -> a; a 1, b 1 -> a (first); a 1.5, b 1 -> b ...
    held = [lc.pick(0.0) for _ in range(6)]
    assert [n.host for n in held] == ["a", "a", "b", "a", "a", "b"]
    for node in held[:4]:
        if node is a:
            lc.release(node)
    assert lc.pick(0.0) is a
    lc.release(a)


def test_least_conn_counts_what_is_released_and_passes_over_failed_nodes() -> None:
    a, b = Node("a", 1, 1), Node("b", 1, 1)
    lc = LeastConn([a, b])
    first = lc.pick(0.0)
    assert first is a
    assert lc.pick(0.0) is b
    lc.release(b)
    assert lc.pick(0.0) is b  # a still has one in flight
    lc.release(a)
    lc.release(b)
    lc.mark_failed(a, 0.0)
    assert lc.pick(1.0) is b
    assert lc.pick_untried([b], 1.0) is a  # only a is left, out or not
    assert lc.pick_untried([a, b], 1.0) is None


# --- node priority --------------------------------------------------------------------------


def test_priority_levels_stand_in_for_each_other_in_order() -> None:
    a, b = Node("a", 1, 1, priority=10), Node("b", 1, 1, priority=10)
    c, d = Node("c", 1, 1, priority=0), Node("d", 1, 1, priority=-5)
    lb = Prioritized([c, a, d, b], RoundRobin)
    assert {lb.pick(0.0).host for _ in range(6)} == {"a", "b"}
    lb.mark_failed(a, 0.0)
    assert {lb.pick(1.0).host for _ in range(4)} == {"b"}
    lb.mark_failed(b, 0.0)
    assert {lb.pick(1.0).host for _ in range(4)} == {"c"}
    lb.mark_failed(c, 0.0)  # the last node of a level is left out too
    assert lb.pick(1.0) is d
    lb.mark_failed(d, 0.0)
    assert lb.pick(1.0) in (a, b)  # every node is out: the first level's
    assert lb.pick(FAIL_TIMEOUT_S + 1) in (a, b)


def test_priority_retries_go_down_the_levels_and_health_reaches_the_level() -> None:
    a, b = Node("a", 1, 1, priority=1), Node("b", 1, 1)
    lb = Prioritized([a, b], LeastConn)
    first = lb.pick(0.0)
    assert first is a
    lb.mark_failed(a, 0.0)
    assert lb.pick_untried([a], 0.0) is b
    assert lb.pick_untried([a, b], 0.0) is None
    lb.release(a)
    lb.release(b)
    lb.set_healthy(b, False)
    assert lb.pick(1.0) is a  # both out: the first level's
    lb.set_healthy(a, True)
    assert lb.pick(1.0) is a


def test_ewma_picks_the_faster_node_and_forgets_with_time() -> None:
    """APISIX's `ewma`: of two nodes picked at random, the one with the lower decayed
    moving average of its answer times; an old average weighs less against a new answer
    the longer ago it was (`DECAY_S`)."""
    fast, slow = Node("fast", 1, 1), Node("slow", 1, 1)
    lb = Ewma([fast, slow])
    assert {lb.pick(0.0).host for _ in range(200)} == {"fast", "slow"}  # no answers yet
    now = 100.0
    lb.release(slow, 0.5, now)
    lb.release(fast, 0.01, now)
    assert all(lb.pick(now + 1) is fast for _ in range(50))
    # A moment later one slow answer of `fast` barely moves its average...
    lb.release(fast, 0.5, now + 0.1)
    assert all(lb.pick(now + 1) is fast for _ in range(50))
    # ...long after, the new answers are nearly all there is: the order turns.
    later = now + 10 * DECAY_S
    lb.release(fast, 1.0, later)
    lb.release(slow, 0.01, later)
    assert all(lb.pick(later + 1) is slow for _ in range(50))
    # A node left out is not picked; tried nodes are skipped.
    lb.mark_failed(slow, later + 2)
    assert all(lb.pick(later + 3) is fast for _ in range(20))
    assert lb.pick_untried([fast], later + 3) is slow  # every other one tried or out


def test_ewma_with_many_nodes_compares_two() -> None:
    nodes = [Node(f"n{i}", 1, 1) for i in range(5)]
    lb = Ewma(nodes)
    for node in nodes[:4]:
        lb.release(node, 1.0, 10.0)
    # Only n4 is fast; with two compared at random it wins whenever it is drawn.
    counts = {n.host: 0 for n in nodes}
    for _ in range(1000):
        counts[lb.pick(10.5).host] += 1
    assert counts["n4"] > 300  # drawn in 2 of 5 comparisons on average: about 400
    assert all(counts[f"n{i}"] < counts["n4"] for i in range(4))
