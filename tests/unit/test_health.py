"""Upstream health rules (lua-resty-healthcheck's), without IO."""

from __future__ import annotations

from gateway.upstream.balancer import ConsistentHash, Node, RoundRobin
from gateway.upstream.health import HTTP_FAILURE, SUCCESS, TCP_FAILURE, TIMEOUT, Health, Limits

A, B = Node("a", 1, 1), Node("b", 1, 1)


def limits(successes: int = 2, http: int = 3, tcp: int = 2, timeouts: int = 2) -> Limits:
    return Limits((200, 302), (500, 503), successes, http, tcp, timeouts)


def setup() -> tuple[RoundRobin, Health, Limits]:
    rr = RoundRobin([A, B])
    rules = limits()
    return rr, Health("u", (A, B), rr, rules, None), rules


def picks(rr: RoundRobin, n: int = 6) -> set[str]:
    return {rr.pick(0.0).host for _ in range(n)}


def test_failures_in_a_row_take_a_node_out_and_successes_bring_it_back() -> None:
    rr, health, rules = setup()
    health.report_status(A, 500, rules)
    health.report_status(A, 500, rules)
    assert health.healthy(A)
    health.report_status(A, 500, rules)
    assert not health.healthy(A)
    assert picks(rr) == {"b"}
    health.report_status(A, 200, rules)
    assert not health.healthy(A)
    health.report_status(A, 302, rules)
    assert health.healthy(A)
    assert picks(rr) == {"a", "b"}


def test_a_success_resets_the_failures_and_other_statuses_count_for_nothing() -> None:
    _, health, rules = setup()
    for status in (500, 500, 200, 500, 500, 404, 418):
        health.report_status(A, status, rules)
    assert health.healthy(A)
    health.report_status(A, 503, rules)
    assert not health.healthy(A)
    for status in (200, 500, 200):
        health.report_status(A, status, rules)
    assert not health.healthy(A)  # the 500 broke the run of successes


def test_each_kind_of_failure_has_its_own_limit() -> None:
    _, health, rules = setup()
    health.report(A, TCP_FAILURE, rules)
    health.report(A, TIMEOUT, rules)
    health.report(A, HTTP_FAILURE, rules)
    assert health.healthy(A)
    health.report(A, TIMEOUT, rules)
    assert not health.healthy(A)
    health.report(B, TCP_FAILURE, rules)
    health.report(B, TCP_FAILURE, rules)
    assert not health.healthy(B)


def test_a_limit_of_zero_never_applies_and_each_source_has_its_own_limits() -> None:
    rr = RoundRobin([A, B])
    active, passive = limits(), limits(http=0, successes=1)
    health = Health("u", (A, B), rr, active, passive)
    for _ in range(10):
        health.report_status(A, 500, passive)
    assert health.healthy(A)
    for _ in range(3):
        health.report_status(A, 500, active)
    assert not health.healthy(A)
    health.report(A, SUCCESS, passive)
    assert health.healthy(A)


def test_when_no_node_is_healthy_every_node_is_picked() -> None:
    rr, health, rules = setup()
    for node in (A, B):
        for _ in range(3):
            health.report_status(node, 500, rules)
    assert picks(rr) == {"a", "b"}


def test_an_unhealthy_node_stays_out_past_the_connect_failure_timeout() -> None:
    rr, health, rules = setup()
    for _ in range(3):
        health.report_status(A, 500, rules)
    rr.mark_failed(A, 0.0)
    assert {rr.pick(1e6).host for _ in range(6)} == {"b"}


def test_consistent_hash_passes_an_unhealthy_nodes_keys_on() -> None:
    ring = ConsistentHash([A, B])
    health = Health("u", (A, B), ring, limits(), None)
    keys = [f"k{i}" for i in range(200)]
    on_a = [k for k in keys if ring.pick(0.0, k) is A]
    assert on_a
    for _ in range(3):
        health.report_status(A, 500, health.active)
    assert all(ring.pick(0.0, k) is B for k in on_a)


def test_carry_over_takes_state_by_address() -> None:
    _, health, rules = setup()
    for _ in range(3):
        health.report_status(A, 500, rules)
    health.report_status(B, 500, rules)
    health.report_status(B, 500, rules)
    a2, b2, c2 = Node("a", 1, 1), Node("b", 1, 1), Node("c", 1, 1)
    rr2 = RoundRobin([a2, b2, c2])
    health2 = Health("u", (a2, b2, c2), rr2, rules, None)
    health2.carry_over(health)
    assert not health2.healthy(a2)
    assert {rr2.pick(0.0).host for _ in range(6)} == {"b", "c"}
    health2.report_status(b2, 500, rules)  # the third failure in a row, two of them before
    assert not health2.healthy(b2)
    assert health2.healthy(c2)
