"""Weighted round robin over an upstream's nodes, nginx's smooth variant.

Each pick adds every node's weight to its running score, takes the highest, and subtracts
the total from it: weights 5/1/1 give a a b a c a a, not a a a a a b c. Nodes of weight 0 are
never picked. Pure: no IO, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence


class Node:
    """One upstream server: address, weight, and the pool key derived from them."""

    __slots__ = ("address", "host", "host_header", "label", "port", "weight")

    def __init__(self, host: str, port: int, weight: int) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.address = (host, port)
        shown = f"[{host}]" if ":" in host else host
        self.label = f"{shown}:{port}"  # for logs, built once
        self.host_header = (shown if port == 80 else f"{shown}:{port}").encode("latin-1")

    def __repr__(self) -> str:
        return f"Node({self.host}:{self.port}, weight={self.weight})"


class RoundRobin:
    """Smooth weighted round robin; `pick` returns the next node."""

    __slots__ = ("_current", "_nodes", "_single", "_total", "_weights")

    def __init__(self, nodes: Sequence[Node]) -> None:
        live = [n for n in nodes if n.weight > 0]
        if not live:
            raise ValueError("an upstream needs a node with a weight above 0")
        self._nodes = tuple(live)
        self._weights = tuple(n.weight for n in live)
        self._current = [0] * len(live)
        self._total = sum(self._weights)
        self._single = live[0] if len(live) == 1 else None

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self._nodes

    def pick(self) -> Node:
        if self._single is not None:
            return self._single
        current = self._current
        best = 0
        for i, weight in enumerate(self._weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return self._nodes[best]

    def pick_untried(self, tried: Sequence[Node]) -> Node | None:
        """The next pick not in `tried` (a heavy node may keep winning the picks: then the
        first untried node in order), or None when every node has been tried."""
        for _ in range(len(self._nodes)):
            node = self.pick()
            if node not in tried:
                return node
        for node in self._nodes:
            if node not in tried:
                return node
        return None
