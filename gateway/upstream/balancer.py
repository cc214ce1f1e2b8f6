"""Node choice for an upstream: weighted round robin (nginx's smooth variant), consistent
hashing on a request key (APISIX's `chash`), the fewest requests in flight
(`least_conn`) or the fastest answers lately (`ewma`).

Round robin: each pick adds every node's weight to its running score, takes the highest,
and subtracts the total from it: weights 5/1/1 give a a b a c a a, not a a a a a b c. Nodes
of weight 0 are never picked.

A node that could not be connected to is left out of the picks for `FAIL_TIMEOUT_S`, as
nginx does by default (`max_fails=1 fail_timeout=10s`), so that a dead or unreachable node
costs one failed attempt per ten seconds instead of every other request (APISIX without
health checks keeps picking it). An upstream of one node never leaves it out, and when every
node failed lately they are all picked again rather than answering 502 unasked. A node
that health checks (`upstream.health`) find unhealthy is left out until they find it
healthy, by the same rule.
Consistent hashing: each node holds points on a ring in proportion to its weight; a key
goes to the node of the first point at or after its hash, so one key keeps its node and
taking a node out moves only that node's keys. A node left out passes its keys to the next
points' nodes until it is back.

EWMA (APISIX's, after ingress-nginx's): each node keeps an exponentially weighted moving
average of its answer times, an old value weighing exp(-age / `DECAY_S`) against a new
answer; a pick draws two nodes at random (of those not left out) and takes the one whose
average, faded the same way to the pick's time, is lower. Weights are not used.

Pure: no IO; the caller passes the time, the key and the answer times.
"""

from __future__ import annotations

import bisect
import math
import random
import zlib
from collections.abc import Sequence
from typing import Final

FAIL_TIMEOUT_S: Final = 10.0
DECAY_S: Final = 10.0  # APISIX's ewma DECAY_TIME
PICK_SET: Final = 2


class Node:
    """One upstream server: address, weight, and the pool key derived from them."""

    __slots__ = ("address", "host", "host_header", "label", "port", "priority", "weight")

    def __init__(self, host: str, port: int, weight: int, priority: int = 0) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.priority = priority
        self.address = (host, port)
        shown = f"[{host}]" if ":" in host else host
        self.label = f"{shown}:{port}"  # for logs, built once
        self.host_header = (shown if port == 80 else f"{shown}:{port}").encode("latin-1")

    def __repr__(self) -> str:
        return f"Node({self.host}:{self.port}, weight={self.weight})"


class Balancer:
    """The nodes of weight above 0 and the time until which each is left out."""

    __slots__ = ("_down_until", "_index", "_keep_alone", "_nodes", "_single", "_weights")

    def __init__(self, nodes: Sequence[Node], *, keep_alone: bool = True) -> None:
        live = [n for n in nodes if n.weight > 0]
        if not live:
            raise ValueError("an upstream needs a node with a weight above 0")
        self._nodes = tuple(live)
        self._weights = tuple(n.weight for n in live)
        self._down_until = [0.0] * len(live)  # the time until which each node is left out
        self._index = {node: i for i, node in enumerate(live)}
        self._single = live[0] if len(live) == 1 else None
        # A node alone is never left out, unless other priority levels can stand in.
        self._keep_alone = keep_alone and self._single is not None

    def available(self, now: float) -> bool:
        """Whether some node is not left out at `now`."""
        return any(until <= now for until in self._down_until)

    def available_node(self, node: Node, now: float) -> bool:
        return self._down_until[self._index[node]] <= now

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self._nodes

    def pick(self, now: float, key: str = "") -> Node:
        raise NotImplementedError

    def release(self, node: Node, answer_s: float | None = None, now: float = 0.0) -> None:
        """The request `pick` gave `node` is over (least_conn counts them), after
        `answer_s` seconds with the upstream when it got that far (ewma learns them)."""

    def mark_failed(self, node: Node, now: float) -> None:
        """Leave `node` out of the picks for `FAIL_TIMEOUT_S` after `now` (a failed connect)."""
        if not self._keep_alone:
            index = self._index[node]
            if self._down_until[index] != math.inf:
                self._down_until[index] = now + FAIL_TIMEOUT_S

    def set_healthy(self, node: Node, healthy: bool) -> None:
        """Health checks' verdict: an unhealthy node is left out until it is healthy again."""
        index = self._index.get(node)
        if index is not None:
            self._down_until[index] = 0.0 if healthy else math.inf

    def pick_untried(self, tried: Sequence[Node], now: float, key: str = "") -> Node | None:
        """The next pick not in `tried` (a heavy node may keep winning the picks: then the
        first untried node in order, one not left out first), or None when every node has
        been tried."""
        for _ in range(len(self._nodes)):
            node = self.pick(now, key)
            if node not in tried:
                return node
        untried = [node for node in self._nodes if node not in tried]
        for node in untried:
            if self._down_until[self._index[node]] <= now:
                return node
        return untried[0] if untried else None


class RoundRobin(Balancer):
    """Smooth weighted round robin; `pick` returns the next node."""

    __slots__ = ("_current",)

    def __init__(self, nodes: Sequence[Node], *, keep_alone: bool = True) -> None:
        super().__init__(nodes, keep_alone=keep_alone)
        self._current = [0] * len(self._nodes)

    def pick(self, now: float, key: str = "") -> Node:
        """The next node among those not left out at `now` (or among all, when every one is)."""
        if self._single is not None:
            return self._single
        best = self._smooth(now)
        if best < 0:
            best = self._smooth(math.inf)
        return self._nodes[best]

    def _smooth(self, now: float) -> int:
        """One step of nginx's smooth weighted round robin over the nodes not left out at
        `now`; the chosen index, or -1 when every node is left out."""
        current = self._current
        down_until = self._down_until
        best = -1
        total = 0
        for i, weight in enumerate(self._weights):
            if down_until[i] > now:
                continue
            current[i] += weight
            total += weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best >= 0:
            current[best] -= total
        return best


POINTS_PER_WEIGHT: Final = 160  # ketama's


def _hash(data: bytes) -> int:
    """CRC-32 spread by MurmurHash3's finaliser: CRC-32 alone maps keys that differ in a
    character or two (`u1`, `u2`, ...) to related values, which crowd onto one node."""
    h = zlib.crc32(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


MAX_POINTS: Final = 40_000


class ConsistentHash(Balancer):
    """A ring of points, each node's share as its weight's; `pick` maps a key to a node."""

    __slots__ = ("_owners", "_points")

    def __init__(self, nodes: Sequence[Node], *, keep_alone: bool = True) -> None:
        super().__init__(nodes, keep_alone=keep_alone)
        common = math.gcd(*self._weights)
        units = [weight // common for weight in self._weights]
        per_unit = max(1, min(POINTS_PER_WEIGHT, MAX_POINTS // sum(units)))
        ring = sorted(
            (_hash(f"{node.label}-{i}".encode()), index)
            for index, (node, unit) in enumerate(zip(self._nodes, units, strict=True))
            for i in range(unit * per_unit)
        )
        self._points = [point for point, _ in ring]
        self._owners = [index for _, index in ring]

    def pick(self, now: float, key: str = "") -> Node:
        """The node for `key`: the owner of the first point at or after its hash whose node
        is not left out at `now` (the first owner, when every node is)."""
        if self._single is not None:
            return self._single
        at = bisect.bisect_left(self._points, _hash(key.encode()))
        owners = self._owners
        count = len(owners)
        down_until = self._down_until
        for step in range(count):
            owner = owners[(at + step) % count]
            if down_until[owner] <= now:
                return self._nodes[owner]
        return self._nodes[owners[at % count]]


class Scored(Balancer):
    """A balancer that chooses by the nodes' state (`_best`) among those not left out at
    the pick's time, or among all of them when every one is."""

    __slots__ = ()

    def _best(self, now: float, excluded: Sequence[int]) -> int:
        """The chosen index among the nodes not left out at `now` nor `excluded` (-1:
        none)."""
        raise NotImplementedError

    def _taken(self, index: int) -> None:
        """The node at `index` was picked."""

    def pick(self, now: float, key: str = "") -> Node:
        best = self._best(now, ())
        if best < 0:
            best = self._best(math.inf, ())
        self._taken(best)
        return self._nodes[best]

    def pick_untried(self, tried: Sequence[Node], now: float, key: str = "") -> Node | None:
        excluded = tuple(self._index[node] for node in tried if node in self._index)
        best = self._best(now, excluded)
        if best < 0:
            best = self._best(math.inf, excluded)
        if best < 0:
            return None
        self._taken(best)
        return self._nodes[best]


class LeastConn(Scored):
    """APISIX's `least_conn`: the node with the fewest requests in flight for its weight,
    (in flight + 1) / weight, the first in order on a tie; counted as busy until
    `release`."""

    __slots__ = ("_active",)

    def __init__(self, nodes: Sequence[Node], *, keep_alone: bool = True) -> None:
        super().__init__(nodes, keep_alone=keep_alone)
        self._active = [0] * len(self._nodes)

    def _taken(self, index: int) -> None:
        self._active[index] += 1

    def release(self, node: Node, answer_s: float | None = None, now: float = 0.0) -> None:
        index = self._index.get(node)
        if index is not None and self._active[index] > 0:
            self._active[index] -= 1

    def _best(self, now: float, excluded: Sequence[int]) -> int:
        best = -1
        best_score = math.inf
        for i, weight in enumerate(self._weights):
            if self._down_until[i] > now or i in excluded:
                continue
            score = (self._active[i] + 1) / weight
            if score < best_score:
                best, best_score = i, score
        return best


class Ewma(Scored):
    """APISIX's `ewma`: the lower faded average of two nodes drawn at random (see the
    module docstring)."""

    __slots__ = ("_average", "_touched")

    def __init__(self, nodes: Sequence[Node], *, keep_alone: bool = True) -> None:
        super().__init__(nodes, keep_alone=keep_alone)
        self._average = [0.0] * len(self._nodes)
        self._touched = [-math.inf] * len(self._nodes)

    def _score(self, index: int, now: float) -> float:
        return self._average[index] * math.exp(-max(now - self._touched[index], 0.0) / DECAY_S)

    def _best(self, now: float, excluded: Sequence[int]) -> int:
        """The pick among the nodes not left out at `now` and not `excluded` (-1: none)."""
        candidates = [
            i for i, until in enumerate(self._down_until) if until <= now and i not in excluded
        ]
        if len(candidates) <= 1:
            return candidates[0] if candidates else -1
        drawn = random.sample(candidates, PICK_SET)
        return min(drawn, key=lambda i: self._score(i, now))

    def release(self, node: Node, answer_s: float | None = None, now: float = 0.0) -> None:
        index = self._index.get(node)
        if index is None or answer_s is None:
            return
        weight = math.exp(-max(now - self._touched[index], 0.0) / DECAY_S)
        self._average[index] = self._average[index] * weight + answer_s * (1.0 - weight)
        self._touched[index] = now


class Prioritized(Balancer):
    """APISIX's node `priority`: the nodes of the highest priority that has one not left
    out take the requests, balanced among themselves by `kind`; lower ones stand in while
    every higher node is left out (a failed connect, a health check)."""

    __slots__ = ("_level_of", "_levels")

    def __init__(self, nodes: Sequence[Node], kind: type[Balancer]) -> None:
        super().__init__(nodes)
        by_priority: dict[int, list[Node]] = {}
        for node in self._nodes:
            by_priority.setdefault(node.priority, []).append(node)
        self._levels = tuple(
            kind(level, keep_alone=False)
            for _, level in sorted(by_priority.items(), key=lambda item: -item[0])
        )
        self._level_of = {node: level for level in self._levels for node in level.nodes}

    def pick(self, now: float, key: str = "") -> Node:
        for level in self._levels:
            if level.available(now):
                return level.pick(now, key)
        return self._levels[0].pick(now, key)  # every node is out: the first level's

    def pick_untried(self, tried: Sequence[Node], now: float, key: str = "") -> Node | None:
        for level in self._levels:
            untried_up = any(
                node not in tried and level.available_node(node, now) for node in level.nodes
            )
            if untried_up:
                return level.pick_untried(tried, now, key)
        for level in self._levels:
            node = level.pick_untried(tried, now, key)
            if node is not None:
                return node
        return None

    def release(self, node: Node, answer_s: float | None = None, now: float = 0.0) -> None:
        self._level_of[node].release(node, answer_s, now)

    def mark_failed(self, node: Node, now: float) -> None:
        self._level_of[node].mark_failed(node, now)

    def set_healthy(self, node: Node, healthy: bool) -> None:
        self._level_of[node].set_healthy(node, healthy)
