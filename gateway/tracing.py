"""Trace context and spans for the opentelemetry plugin: W3C `traceparent` in and out,
OpenTelemetry's samplers, and spans exported as OTLP/HTTP JSON batches.

A request's server span continues the client's trace when it sends a valid `traceparent`
(its span is the parent, its `tracestate` goes on unchanged); otherwise a trace starts
here. Either way the upstream gets a `traceparent` naming this span, sampled or not, so
that the trace stays whole across services that do sample.

Spans go to the collector (`plugin_attr.opentelemetry.collector`: POST `/v1/traces`,
`Content-Type: application/json`, ids as hex as OTLP's JSON encoding has them) through
`logship`'s batch processor, with the batch span processor's fields. Pure but for the
queue's sending.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from gateway.logship import BatchQueue

_TRACEPARENT: Final = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
SPAN_KIND_SERVER: Final = 2
STATUS_ERROR: Final = 2
_encode = msgspec.json.Encoder().encode


class Parent:
    """A valid incoming trace context."""

    __slots__ = ("sampled", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: str, span_id: str, sampled: bool, tracestate: bytes | None):
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.tracestate = tracestate


def parse_traceparent(value: bytes | None, tracestate: bytes | None) -> Parent | None:
    """The trace context of a `traceparent` value, or None when it is not a valid one
    (W3C Trace Context level 1: version ff, an all-zero id, or more fields in version 00
    make it invalid)."""
    if value is None:
        return None
    value = value.strip()
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if len(value) != 55 and (version == b"00" or value[55:56] != b"-"):
        return None
    return Parent(trace_id.decode(), span_id.decode(), bool(int(flags, 16) & 1), tracestate)


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def trace_id_from(request_id: bytes | None) -> str | None:
    """A request id usable as a trace id (32 hex digits once dashes go, not all zero)."""
    if not request_id:
        return None
    candidate = request_id.replace(b"-", b"").lower()
    if len(candidate) != 32 or candidate == _ZERO_TRACE:
        return None
    try:
        int(candidate, 16)
    except ValueError:
        return None
    return candidate.decode()


def traceparent(trace_id: str, span_id: str, sampled: bool) -> bytes:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}".encode()


Sampler = Callable[[str, Parent | None], bool]


def ratio_sampler(fraction: float) -> Sampler:
    """OpenTelemetry's TraceIdRatioBased: the trace id's last 8 bytes against the bound."""
    bound = int(max(0.0, min(1.0, fraction)) * (1 << 63))

    def sample(trace_id: str, parent: Parent | None) -> bool:
        return (int(trace_id[16:], 16) >> 1) < bound

    return sample


def fixed_sampler(on: bool) -> Sampler:
    return lambda trace_id, parent: on


def parent_based(root: Sampler) -> Sampler:
    """A parent's decision when there is one; `root`'s for a trace that starts here."""

    def sample(trace_id: str, parent: Parent | None) -> bool:
        return parent.sampled if parent is not None else root(trace_id, parent)

    return sample


def attribute(key: str, value: Any) -> dict[str, Any]:
    """One OTLP key-value, typed as OTLP's JSON encoding wants it."""
    if isinstance(value, bool):
        typed: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        typed = {"intValue": str(value)}
    elif isinstance(value, float):
        typed = {"doubleValue": value}
    else:
        typed = {"stringValue": str(value)}
    return {"key": key, "value": typed}


class SpanExport(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how spans go: what `logship`'s batch processor reads of a conf, from
    `plugin_attr.opentelemetry`."""

    name: str = "opentelemetry"
    uri: str
    headers: list[tuple[str, str]]
    timeout: int
    resource_attributes: list[dict[str, Any]]
    batch_max_size: int
    inactive_timeout: float
    buffer_duration: float
    max_queue_size: int
    max_retry_count: int = 0
    retry_delay: int = 1
    ssl_verify: bool = False

    def __repr__(self) -> str:  # the collector's request headers may be credentials
        return f"SpanExport(uri={self.uri!r})"


def span_export(attr: Any, hostname: str) -> SpanExport:
    """The export settings of a `config.model.OpenTelemetryAttr`."""
    collector, batch = attr.collector, attr.batch_span_processor
    address = collector.address.rstrip("/")
    if not address.startswith(("http://", "https://")):
        address = "http://" + address
    resource = [attribute("hostname", hostname)]
    given = attr.resource or {}
    if "service.name" not in given:
        resource.append(attribute("service.name", "APISIX"))
    resource += [attribute(key, value) for key, value in given.items()]
    headers = [
        (name.lower(), str(value).lower() if isinstance(value, bool) else str(value))
        for name, value in (collector.request_headers or {}).items()
    ]
    return SpanExport(
        uri=address + "/v1/traces",
        headers=headers,
        timeout=collector.request_timeout,
        resource_attributes=resource,
        batch_max_size=batch.max_export_batch_size,
        inactive_timeout=batch.inactive_timeout,
        buffer_duration=batch.batch_timeout,
        max_queue_size=batch.max_queue_size,
    )


class SpanQueue(BatchQueue):
    """Finished spans (OTLP span objects) waiting for the collector; a batch goes as one
    `resourceSpans` document."""

    def __init__(self, conf: Any) -> None:
        super().__init__(conf)
        self.label = "opentelemetry"
        self.max_buffered = conf.max_queue_size
        self.resource = {"attributes": conf.resource_attributes}
        self.scope = {"name": "opentelemetry-lua"}

    def body(self, batch: list[Any]) -> bytes:
        return _encode(
            {
                "resourceSpans": [
                    {
                        "resource": self.resource,
                        "scopeSpans": [{"scope": self.scope, "spans": batch}],
                    }
                ]
            }
        )

    def request_headers(self) -> list[tuple[str, str]]:
        return [("content-type", "application/json"), *self.conf.headers]
