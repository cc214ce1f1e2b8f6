"""W3C trace context and samplers (gateway/tracing.py)."""

from __future__ import annotations

import pytest

from gateway.tracing import parent_based, parse_traceparent, ratio_sampler, trace_id_from

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (f"00-{TRACE}-{SPAN}-01", True),
        (f"00-{TRACE}-{SPAN}-00", True),
        (f" 00-{TRACE}-{SPAN}-01 ", True),
        (f"01-{TRACE}-{SPAN}-01-future", True),  # a later version may add fields
        (f"00-{TRACE}-{SPAN}-01-extra", False),  # version 00 may not
        (f"ff-{TRACE}-{SPAN}-01", False),
        (f"00-{'0' * 32}-{SPAN}-01", False),
        (f"00-{TRACE}-{'0' * 16}-01", False),
        (f"00-{TRACE.upper()}-{SPAN}-01", False),
        (f"00-{TRACE}-{SPAN}", False),
        ("", False),
    ],
)
def test_traceparent(value: str, valid: bool) -> None:
    parent = parse_traceparent(value.encode(), b"k=v")
    assert (parent is not None) is valid
    if parent is not None:
        assert (parent.trace_id, parent.span_id, parent.tracestate) == (TRACE, SPAN, b"k=v")


def test_sampled_flag() -> None:
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03".encode(), None).sampled  # type: ignore[union-attr]
    assert not parse_traceparent(f"00-{TRACE}-{SPAN}-02".encode(), None).sampled  # type: ignore[union-attr]


def test_ratio_sampler() -> None:
    ids = [f"{i:032x}" for i in range(0, 1 << 64, (1 << 64) // 1000)][:1000]
    assert not any(ratio_sampler(0)(t, None) for t in ids)
    assert all(ratio_sampler(1)(t, None) for t in ids)
    taken = sum(ratio_sampler(0.25)(t, None) for t in ids)
    assert 230 <= taken <= 270
    # parent_base: the parent's flag first.
    parent = parse_traceparent(f"00-{TRACE}-{SPAN}-01".encode(), None)
    assert parent_based(ratio_sampler(0))(TRACE, parent)


@pytest.mark.parametrize(
    ("request_id", "trace_id"),
    [
        (b"6f1c8a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "6f1c8a2e3b4d4e5f8a9b0c1d2e3f4a5b"),
        (b"6F1C8A2E3B4D4E5F8A9B0C1D2E3F4A5B", "6f1c8a2e3b4d4e5f8a9b0c1d2e3f4a5b"),
        (b"short", None),
        (b"0" * 32, None),
        (b"g" * 32, None),
        (None, None),
    ],
)
def test_trace_id_from_request_id(request_id: bytes | None, trace_id: str | None) -> None:
    assert trace_id_from(request_id) == trace_id
