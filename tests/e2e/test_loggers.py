"""file-logger and http-logger: APISIX's log entries (or a `log_format`) per request, with
credentials never written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from tests.helpers import Upstream, config_for, request, start_gateway

KEY = "s3cret-key-value"


def logged_config(upstream: Upstream, **loggers: dict[str, Any]) -> dict[str, Any]:
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": rid, "uri": f"/{rid}", "upstream": node, "plugins": {"key-auth": {}, rid: conf}}
        for rid, conf in loggers.items()
    ]
    consumers = [{"username": "jack", "plugins": {"key-auth": {"key": KEY}}}]
    return config_for(routes, consumers=consumers)


async def test_file_logger_writes_apisix_entries(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    full, custom = tmp_path / "full.log", tmp_path / "custom.log"
    fmt = {"client": "$remote_addr", "status": "$status", "key": "$http_apikey",
           "uri": "$request_uri", "team": "api", "took": "$request_time"}  # fmt: skip
    routes = [
        {"id": "full", "uri": "/full", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"key-auth": {}, "file-logger": {"path": str(full)}}},
        {"id": "custom", "uri": "/custom", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"key-auth": {},
                     "file-logger": {"path": str(custom), "log_format": fmt,
                                     "match": [["arg_skip", "~=", "1"]]}}},
    ]  # fmt: skip
    consumers = [{"username": "jack", "plugins": {"key-auth": {"key": KEY}}}]
    _, gw = await start_gateway(nursery, config_for(routes, consumers=consumers))

    assert (await request(gw, target="/full?a=1", headers=[("apikey", KEY)])).status == 200
    assert (await request(gw, target=f"/full?apikey={KEY}&b=2")).status == 200
    assert (await request(gw, target="/full", headers=[("apikey", "wrong")])).status == 401
    for target in (f"/custom?apikey={KEY}", f"/custom?apikey={KEY}&skip=1"):
        await request(gw, target=target)

    text = full.read_text()
    assert KEY not in text
    first, second, refused = (json.loads(line) for line in text.splitlines())
    assert first["route_id"] == "full"
    assert first["consumer"] == {"username": "jack"}
    assert first["request"]["method"] == "GET"
    assert first["request"]["uri"] == "/full?a=1"
    assert first["request"]["headers"]["apikey"] == "[redacted]"
    assert first["request"]["querystring"] == {"a": "1"}
    assert first["request"]["size"] > 0
    assert first["response"]["status"] == 200
    assert first["response"]["size"] > 0
    assert first["response"]["headers"]["content-type"] == "application/json"
    assert first["upstream"] == upstream.address
    assert first["client_ip"] == "127.0.0.1"
    assert first["latency"] >= first["upstream_latency"] >= 0
    assert second["request"]["uri"] == "/full?apikey=[redacted]&b=2"
    assert second["request"]["querystring"] == {"apikey": "[redacted]", "b": "2"}
    assert refused["response"]["status"] == 401
    assert "consumer" not in refused
    assert "upstream_latency" not in refused

    (line,) = custom.read_text().splitlines()  # `match` left the second one out
    entry = json.loads(line)
    assert entry["client"] == "127.0.0.1"
    assert entry["status"] == "200"
    assert entry["key"] is None  # no apikey header; the query's is redacted below
    assert entry["uri"] == "/custom?apikey=[redacted]"
    assert entry["team"] == "api"
    assert float(entry["took"]) >= 0
