"""Prometheus metrics as APISIX's prometheus plugin exports them, in the text format.

The plugin's log hook feeds `Metrics.observe` once per request of a route it is on; the
export server renders `Metrics` with the server's own figures (`ServerStats`). Names,
labels and latency buckets (milliseconds) are APISIX's, so its dashboards and alerts keep
working. One `Metrics` lives as long as the process: a reload keeps the counts. With
several workers each one's counts travel as a `snapshot` and the supervisor renders their
sum (`merged`).

Pure: no IO, no clock.
"""

from __future__ import annotations

import bisect
import glob
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec

log = logging.getLogger("gateway")

# Where a worker writes its snapshot: the supervisor sets it for each worker it starts.
METRICS_FILE_ENV = "GATEWAY_METRICS_FILE"

# APISIX's default `apisix_http_latency` buckets, in milliseconds.
BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)
_INF = len(BUCKETS)  # a histogram row: a count per bucket, one above them all, sum, count
_SUM = _INF + 1
_COUNT = _INF + 2

_STATUS_LABELS = ("code", "route", "matched_uri", "matched_host", "service", "consumer", "node")
_BASE_LABELS = ("type", "route", "service", "consumer", "node")


class ServerStats(NamedTuple):
    """The server's own figures at the time of a scrape (nginx's stub_status)."""

    accepted: int
    active: int
    waiting: int
    requests: int
    hostname: str


_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder(dict[str, Any]).decode


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(names: tuple[str, ...], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"  # the exposition format's
DEFAULT_EXPORT_URI = "/apisix/prometheus/metrics"


class Metrics:
    """Request counts by status, latency histograms and bytes, by APISIX's labels."""

    __slots__ = ("bandwidth", "latency", "status", "totals")

    def __init__(self) -> None:
        self.status: dict[tuple[str, ...], int] = {}
        self.latency: dict[tuple[str, ...], list[float]] = {}
        self.bandwidth: dict[tuple[str, ...], int] = {}
        # Every worker's counts and server figures, summed (as last shared), for a
        # public-api route; set by the server.
        self.totals: Callable[[], tuple[Metrics, ServerStats]] | None = None

    def observe(
        self,
        status_labels: tuple[str, str, str, str, str, str, str],
        request_ms: float,
        upstream_ms: float | None,
        ingress: int,
        egress: int,
    ) -> None:
        """One request: `status_labels` as `_STATUS_LABELS` orders them."""
        self.status[status_labels] = self.status.get(status_labels, 0) + 1
        _, route, _, _, service, consumer, node = status_labels
        self._observe(("request", route, service, consumer, node), request_ms)
        apisix_ms = request_ms
        if upstream_ms is not None:
            self._observe(("upstream", route, service, consumer, node), upstream_ms)
            apisix_ms = max(0.0, request_ms - upstream_ms)
        self._observe(("apisix", route, service, consumer, node), apisix_ms)
        key = ("ingress", route, service, consumer, node)
        self.bandwidth[key] = self.bandwidth.get(key, 0) + ingress
        key = ("egress", route, service, consumer, node)
        self.bandwidth[key] = self.bandwidth.get(key, 0) + egress

    def _observe(self, key: tuple[str, ...], ms: float) -> None:
        row = self.latency.get(key)
        if row is None:
            row = self.latency[key] = [0] * (_COUNT + 1)
        row[bisect.bisect_left(BUCKETS, ms)] += 1  # `le`: a bound counts what equals it
        row[_SUM] += ms
        row[_COUNT] += 1

    def snapshot(self, stats: ServerStats) -> bytes:
        """Every count and `stats`, for `absorb` and `merged` in another process."""
        return _ENCODE(
            {
                "status": [[*k, v] for k, v in self.status.items()],
                "latency": [[*k, *row] for k, row in self.latency.items()],
                "bandwidth": [[*k, v] for k, v in self.bandwidth.items()],
                "stats": list(stats),
            }
        )

    def absorb(self, data: bytes) -> ServerStats:
        """Add a snapshot's counts to these; its server figures. Raises ValueError for
        bytes that are not a snapshot."""
        try:
            snap = _DECODE(data)
            for *key, count in snap["status"]:
                k = tuple(key)
                self.status[k] = self.status.get(k, 0) + count
            for item in snap["latency"]:
                k, values = tuple(item[:5]), item[5:]
                row = self.latency.get(k)
                if row is None:
                    row = self.latency[k] = [0] * (_COUNT + 1)
                for i, value in enumerate(values):
                    row[i] += value
            for *key, count in snap["bandwidth"]:
                k = tuple(key)
                self.bandwidth[k] = self.bandwidth.get(k, 0) + count
            return ServerStats(*snap["stats"])
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not a metrics snapshot: {exc}") from None

    @classmethod
    def merged(cls, snapshots: Iterable[bytes], hostname: str) -> tuple[Metrics, ServerStats]:
        """The sum of several processes' snapshots, and of their server figures."""
        total = cls()
        accepted = active = waiting = requests = 0
        for data in snapshots:
            stats = total.absorb(data)
            accepted += stats.accepted
            active += stats.active
            waiting += stats.waiting
            requests += stats.requests
        return total, ServerStats(accepted, active, waiting, requests, hostname)

    def render(self, prefix: str, stats: ServerStats) -> bytes:
        """The text exposition format (version 0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, text: str) -> str:
            out.append(f"# HELP {prefix}{name} {text}\n# TYPE {prefix}{name} {kind}\n")
            return prefix + name

        name = family("bandwidth", "counter", "Total bandwidth in bytes consumed per service")
        for key, value in sorted(self.bandwidth.items()):
            out.append(f"{name}{{{_labels(_BASE_LABELS, key)}}} {value}\n")
        name = family(
            "http_latency", "histogram", "HTTP request latency in milliseconds per service"
        )
        for key, row in sorted(self.latency.items()):
            labels = _labels(_BASE_LABELS, key)
            total = 0.0
            for bound, count in zip(BUCKETS, row, strict=False):
                total += count
                out.append(f'{name}_bucket{{{labels},le="{bound:.0f}"}} {_number(total)}\n')
            out.append(f'{name}_bucket{{{labels},le="+Inf"}} {_number(row[_COUNT])}\n')
            out.append(f"{name}_sum{{{labels}}} {_number(row[_SUM])}\n")
            out.append(f"{name}_count{{{labels}}} {_number(row[_COUNT])}\n")
        name = family(
            "http_requests_total", "gauge", "The total number of client requests since start"
        )
        out.append(f"{name} {stats.requests}\n")
        name = family("http_status", "counter", "HTTP status codes per service")
        for key, count in sorted(self.status.items()):
            out.append(f"{name}{{{_labels(_STATUS_LABELS, key)}}} {count}\n")
        name = family("nginx_http_current_connections", "gauge", "Number of HTTP connections")
        for state, value in (
            ("accepted", stats.accepted),
            ("active", stats.active),
            ("handled", stats.accepted),
            ("reading", 0),
            ("waiting", stats.waiting),
            ("writing", stats.active - stats.waiting),
        ):
            out.append(f'{name}{{state="{state}"}} {value}\n')
        name = family("node_info", "gauge", "Info of the gateway node")
        out.append(f'{name}{{hostname="{_escape(stats.hostname)}"}} 1\n')
        return "".join(out).encode()


def shared_snapshots(directory: str, skip: str | None = None) -> list[bytes]:
    """The snapshots the workers of a supervisor shared in `directory` (one file each,
    `metrics-<n>.bin`), but `skip`'s."""
    snapshots = []
    for path in sorted(glob.glob(os.path.join(directory, "metrics-*.bin"))):
        if path == skip:
            continue
        try:
            with open(path, "rb") as f:
                snapshots.append(f.read())
        except OSError:
            continue
    return snapshots


def merged_or_none(snapshots: list[bytes], hostname: str) -> tuple[Metrics, ServerStats]:
    """Several processes' snapshots summed (none when one is unreadable: the error is
    logged)."""
    try:
        return Metrics.merged(snapshots, hostname)
    except ValueError as exc:
        log.error("metrics not served: %s", exc)
        return Metrics.merged([], hostname)
