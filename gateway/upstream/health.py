"""Upstream health, by APISIX's `checks` (lua-resty-healthcheck's rules).

Every node starts healthy. Outcomes are reported by the active prober (`upstream.prober`)
and, with `checks.passive`, by the proxy for the requests it sends. A success resets a
node's failure counts, a failure its success count. A healthy node turns unhealthy when
one kind of failure (HTTP status, TCP, timeout) reaches its limit in a row; an unhealthy
node turns healthy after `successes` in a row. Each source counts against its own limits
(`active` or `passive`); a limit of 0 never applies. A status in neither list counts for
nothing. The balancer leaves unhealthy nodes out of its picks (all of them are picked
again when none is healthy).

Pure: no IO, no clock.
"""

from __future__ import annotations

import logging

from gateway.upstream.balancer import Balancer, Node

log = logging.getLogger("gateway.health")

SUCCESS = 0
HTTP_FAILURE = 1
TCP_FAILURE = 2
TIMEOUT = 3


class Limits:
    """One source's rules: which statuses count how, and the limits of each outcome."""

    __slots__ = ("healthy_statuses", "limits", "unhealthy_statuses")

    def __init__(
        self,
        healthy_statuses: tuple[int, ...],
        unhealthy_statuses: tuple[int, ...],
        successes: int,
        http_failures: int,
        tcp_failures: int,
        timeouts: int,
    ) -> None:
        self.healthy_statuses = frozenset(healthy_statuses)
        self.unhealthy_statuses = frozenset(unhealthy_statuses)
        # Indexed by outcome: SUCCESS, HTTP_FAILURE, TCP_FAILURE, TIMEOUT.
        self.limits = (successes, http_failures, tcp_failures, timeouts)

    def outcome_of(self, status: int) -> int | None:
        if status in self.healthy_statuses:
            return SUCCESS
        if status in self.unhealthy_statuses:
            return HTTP_FAILURE
        return None


class Health:
    """The health of one upstream's nodes; transitions go to its balancer."""

    __slots__ = ("_balancer", "_counts", "_healthy", "active", "key", "passive", "upstream_id")

    def __init__(
        self,
        upstream_id: str,
        nodes: tuple[Node, ...],
        balancer: Balancer,
        active: Limits,
        passive: Limits | None,
        key: bytes = b"",
    ) -> None:
        self.upstream_id = upstream_id
        # Equal for the same upstream with the same checks in two configs (see carry_over).
        self.key = key
        self._balancer = balancer
        self.active = active
        self.passive = passive
        self._healthy = dict.fromkeys(nodes, True)
        # Per node, the outcomes in a row of each kind.
        self._counts = {node: [0, 0, 0, 0] for node in nodes}

    def healthy(self, node: Node) -> bool:
        return self._healthy[node]

    def carry_over(self, old: Health) -> None:
        """Take over what `old` (the previous config's) knows of the nodes both have, by
        address: a reload does not send requests to a node already found unhealthy."""
        by_address = {node.address: node for node in old._healthy}
        for node in self._healthy:
            before = by_address.get(node.address)
            if before is None:
                continue
            self._counts[node][:] = old._counts[before]
            if not old._healthy[before]:
                self._healthy[node] = False
                self._balancer.set_healthy(node, False)

    def report_status(self, node: Node, status: int, limits: Limits) -> None:
        outcome = limits.outcome_of(status)
        if outcome is not None:
            self.report(node, outcome, limits)

    def report(self, node: Node, outcome: int, limits: Limits) -> None:
        counts = self._counts.get(node)
        if counts is None:
            return  # a node of an older config
        if outcome == SUCCESS:
            counts[HTTP_FAILURE] = counts[TCP_FAILURE] = counts[TIMEOUT] = 0
        else:
            counts[SUCCESS] = 0
        counts[outcome] += 1
        limit = limits.limits[outcome]
        healthy = self._healthy[node]
        if limit == 0 or counts[outcome] < limit or healthy is (outcome == SUCCESS):
            return
        self._healthy[node] = not healthy
        counts[:] = [0, 0, 0, 0]
        self._balancer.set_healthy(node, not healthy)
        log.warning(
            "upstream %s node %s is now %s",
            self.upstream_id,
            node.label,
            "healthy" if not healthy else "unhealthy",
        )
