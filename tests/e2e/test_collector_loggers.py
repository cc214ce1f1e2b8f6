"""loki-logger, elasticsearch-logger, splunk-hec-logging and clickhouse-logger: each
request's entry in the document its store takes, posted in batches to a real collector
started by the test."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import pytest
import trio

from gateway.plugins.collector_loggers import ElasticsearchLoggerConf
from tests.e2e.test_loggers import Collector
from tests.helpers import LogLine, Upstream, config_for, request, start_gateway

SECRET = "collector-s3cret"


def logged(upstream: Upstream, plugin: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Routes `a` and `b` of one service holding the logger (one queue, as in APISIX, where
    each conf of a logger batches on its own)."""
    service = {"id": "s", "upstream": {"nodes": {upstream.address: 1}}, "plugins": {plugin: conf}}
    routes = [{"id": rid, "uri": f"/{rid}", "service_id": "s"} for rid in ("a", "b")]
    return config_for(routes, services=[service])


async def test_loki_logger(nursery: trio.Nursery, upstream: Upstream) -> None:
    """Labels read per request: entries of two routes go as two streams of one push."""
    collector = Collector()
    await nursery.start(collector.server.serve)
    conf = {
        "endpoint_addrs": [f"http://{collector.server.address}"],
        "tenant_id": "team-a",
        "log_labels": {"job": "gateway", "route": "$route_id", "missing": "$arg_nope"},
        "log_format": {"uri": "$uri", "status": "$status"},
        "batch_max_size": 3,
    }
    _, gw = await start_gateway(nursery, logged(upstream, "loki-logger", conf))
    before = time.time_ns()
    for target in ("/a?x=1", "/b", "/a"):
        assert (await request(gw, target=target)).status == 200
    (post,) = await collector.wait_posts(1)
    assert post.target == b"/loki/api/v1/push"
    assert post.header(b"x-scope-orgid") == b"team-a"
    assert post.header(b"content-type") == b"application/json"
    streams = json.loads(post.body)["streams"]
    assert [s["stream"] for s in streams] == [
        {"job": "gateway", "route": "a", "missing": "$arg_nope"},
        {"job": "gateway", "route": "b", "missing": "$arg_nope"},
    ]
    values = streams[0]["values"] + streams[1]["values"]
    # As APISIX: an entry without `route_id` (a log_format's) gets "no-matched".
    assert [json.loads(line) for _, line in values] == [
        {"uri": "/a", "status": "200", "route_id": "no-matched"},
        {"uri": "/a", "status": "200", "route_id": "no-matched"},
        {"uri": "/b", "status": "200", "route_id": "no-matched"},
    ]
    for when, _ in values:
        assert before - 10**9 <= int(when) <= time.time_ns()


async def test_elasticsearch_logger(
    nursery: trio.Nursery, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    """A `_bulk` NDJSON post with HTTP Basic; an answer other than 200 fails the batch,
    and the error line names the logger, never the password."""
    collector = Collector(201)
    await nursery.start(collector.server.serve)
    conf = {
        "endpoint_addrs": [f"http://{collector.server.address}"],
        "field": {"index": "gateway-logs", "type": "_doc"},
        "auth": {"username": "elastic", "password": SECRET},
        "batch_max_size": 2,
    }
    _, gw = await start_gateway(nursery, logged(upstream, "elasticsearch-logger", conf))
    failed = LogLine("a batch of 2 entries dropped")
    logging.getLogger("gateway").addHandler(failed)
    try:
        with caplog.at_level(logging.ERROR, logger="gateway"):
            for target in ("/a", "/b", "/a", "/b"):
                assert (await request(gw, target=target)).status == 200
            first, second = await collector.wait_posts(2)
            with trio.fail_after(10):
                await failed.seen.wait()
    finally:
        logging.getLogger("gateway").removeHandler(failed)
    assert SECRET not in caplog.text
    assert "elasticsearch-logger 'elasticsearch-logger'" in caplog.text
    assert first.target == b"/_bulk"
    assert first.header(b"content-type") == b"application/x-ndjson"
    expected = base64.b64encode(f"elastic:{SECRET}".encode())
    assert first.header(b"authorization") == b"Basic " + expected
    lines = second.body.decode().split("\n")
    assert lines[-1] == ""  # every line ends with a newline
    action = {"create": {"_index": "gateway-logs", "_type": "_doc"}}
    assert [json.loads(line) for line in lines[0:4:2]] == [action, action]
    entries = [json.loads(line) for line in lines[1:4:2]]
    assert [e["route_id"] for e in entries] == ["a", "b"]
    assert entries[0]["response"]["status"] == 200
    assert SECRET not in repr(ElasticsearchLoggerConf(**conf))  # type: ignore[arg-type]


async def test_splunk_hec_logging(nursery: trio.Nursery, upstream: Upstream) -> None:
    collector = Collector()
    await nursery.start(collector.server.serve)
    conf = {
        "endpoint": {
            "uri": f"http://{collector.server.address}/services/collector",
            "token": SECRET,
            "channel": "gw-channel",
        },
        "batch_max_size": 2,
    }
    _, gw = await start_gateway(nursery, logged(upstream, "splunk-hec-logging", conf))
    before = time.time()
    for target in ("/a", "/b"):
        assert (await request(gw, target=target)).status == 200
    (post,) = await collector.wait_posts(1)
    assert post.target == b"/services/collector"
    assert post.header(b"authorization") == f"Splunk {SECRET}".encode()
    assert post.header(b"x-splunk-request-channel") == b"gw-channel"
    events, text, at = [], post.body.decode(), 0
    decoder = json.JSONDecoder()
    while at < len(text):  # HEC events go back to back
        event, at = decoder.raw_decode(text, at)
        events.append(event)
    assert [e["event"]["route_id"] for e in events] == ["a", "b"]
    for event in events:
        assert event["source"] == "apache-apisix-splunk-hec-logging"
        assert event["sourcetype"] == "_json"
        assert before - 1 <= event["time"] <= time.time()


async def test_clickhouse_logger(nursery: trio.Nursery, upstream: Upstream) -> None:
    collector = Collector()
    await nursery.start(collector.server.serve)
    conf = {
        "endpoint_addr": f"http://{collector.server.address}",
        "user": "logger",
        "password": SECRET,
        "database": "gateway",
        "logtable": "access_log",
        "log_format": {"route": "$route_id", "host": "$host"},
        "batch_max_size": 2,
    }
    _, gw = await start_gateway(nursery, logged(upstream, "clickhouse-logger", conf))
    for target in ("/a", "/b"):
        assert (await request(gw, target=target)).status == 200
    (post,) = await collector.wait_posts(1)
    assert post.target == b"/"
    assert post.header(b"x-clickhouse-user") == b"logger"
    assert post.header(b"x-clickhouse-key") == SECRET.encode()
    assert post.header(b"x-clickhouse-database") == b"gateway"
    prefix = b"INSERT INTO access_log FORMAT JSONEachRow "
    assert post.body.startswith(prefix)
    rows = post.body[len(prefix) :].split(b" ")
    assert [json.loads(row) for row in rows] == [
        {"route": "a", "host": "gateway.test"},
        {"route": "b", "host": "gateway.test"},
    ]
