"""The prometheus plugin's counts in the text format: cumulative `le` buckets (a bound
counts what equals it), escaped label values, the server's own figures."""

from __future__ import annotations

import pytest

from gateway.metrics import Metrics, ServerStats

STATS = ServerStats(accepted=5, active=3, waiting=1, requests=9, hostname="gw-1")


def lines(metrics: Metrics, prefix: str = "apisix_") -> list[str]:
    return metrics.render(prefix, STATS).decode().splitlines()


def test_latency_buckets_are_cumulative() -> None:
    m = Metrics()
    labels = ("200", "r", "/r", "", "", "", "10.0.0.1")
    for ms in (0.5, 1.0, 1.5, 70_000.0):
        m.observe(labels, ms, None, 10, 20)
    out = lines(m)
    base = (
        'apisix_http_latency_bucket{type="request",route="r",service="",consumer="",node="10.0.0.1"'
    )
    assert f'{base},le="1"}} 2' in out
    assert f'{base},le="2"}} 3' in out
    assert f'{base},le="60000"}} 3' in out
    assert f'{base},le="+Inf"}} 4' in out
    where = 'route="r",service="",consumer="",node="10.0.0.1"'
    assert f'apisix_http_latency_count{{type="request",{where}}} 4' in out
    # No upstream time: no upstream histogram; the gateway's own time is the whole.
    assert not any('type="upstream"' in line for line in out)
    assert f'apisix_http_latency_sum{{type="apisix",{where}}} 70003' in out
    assert (
        'apisix_bandwidth{type="ingress",route="r",service="",consumer="",node="10.0.0.1"} 40'
        in out
    )
    status = 'code="200",route="r",matched_uri="/r",matched_host="",service="",consumer=""'
    assert f'apisix_http_status{{{status},node="10.0.0.1"}} 4' in out


def test_gateway_time_is_what_the_upstream_did_not_take() -> None:
    m = Metrics()
    m.observe(("200", "r", "/r", "", "", "", "n"), 30.0, 25.0, 0, 0)
    m.observe(("200", "r", "/r", "", "", "", "n"), 30.0, 31.0, 0, 0)  # clocks apart: 0
    out = lines(m)
    assert (
        'apisix_http_latency_sum{type="upstream",route="r",service="",consumer="",node="n"} 56'
        in out
    )
    assert (
        'apisix_http_latency_sum{type="apisix",route="r",service="",consumer="",node="n"} 5' in out
    )


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe(("200", 'a"b\\c\nd', "/", "", "", "", ""), 1.0, None, 0, 0)
    assert any('route="a\\"b\\\\c\\nd"' in line for line in lines(m))


def test_server_figures_and_prefix() -> None:
    out = lines(Metrics(), "gw_")
    assert "gw_http_requests_total 9" in out
    assert 'gw_nginx_http_current_connections{state="active"} 3' in out
    assert 'gw_nginx_http_current_connections{state="waiting"} 1' in out
    assert 'gw_nginx_http_current_connections{state="writing"} 2' in out
    assert 'gw_node_info{hostname="gw-1"} 1' in out
    assert "# TYPE gw_http_latency histogram" in out


def test_snapshots_add_up() -> None:
    """Workers' snapshots merged: every count and server figure summed, the hostname the
    supervisor's."""
    a, b = Metrics(), Metrics()
    labels = ("200", "r", "/r", "", "", "jack", "n")
    a.observe(labels, 3.0, 1.0, 10, 20)
    b.observe(labels, 700.0, None, 5, 6)
    b.observe(("500", "r", "/r", "", "", "", "n"), 1.0, 1.0, 1, 1)
    merged, stats = Metrics.merged([a.snapshot(STATS), b.snapshot(STATS)], "host")
    assert stats == ServerStats(accepted=10, active=6, waiting=2, requests=18, hostname="host")
    out = lines(merged)
    where = 'route="r",service="",consumer="jack",node="n"'
    assert f'apisix_http_latency_count{{type="request",{where}}} 2' in out
    assert f'apisix_http_latency_sum{{type="request",{where}}} 703' in out
    assert f'apisix_http_latency_bucket{{type="request",{where},le="5"}} 1' in out
    assert f'apisix_http_latency_count{{type="upstream",{where}}} 1' in out
    assert f'apisix_bandwidth{{type="egress",{where}}} 26' in out
    assert any(line.startswith('apisix_http_status{code="500"') for line in out)


def test_a_bad_snapshot_is_refused() -> None:
    with pytest.raises(ValueError, match="not a metrics snapshot"):
        Metrics().absorb(b"\x93garbage")
