"""opentelemetry: W3C trace context goes on to the upstream, and sampled requests' server
spans reach an OTLP/HTTP collector, as with APISIX's plugin."""

from __future__ import annotations

import json
import re
from typing import Any

import trio

from tests.helpers import Arrivals, Received, Upstream, config_for, request, start_gateway

TRACEPARENT = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")
INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Collector:
    """An OTLP/HTTP receiver: every span posted to /v1/traces, with its resource."""

    def __init__(self) -> None:
        self.server = Upstream(responder=self._respond, name="collector")
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.posts: list[Received] = []
        self.arrivals = Arrivals()

    async def _respond(self, req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.posts.append(req)
        doc = json.loads(req.body)
        for resource_spans in doc["resourceSpans"]:
            self.resources.append(resource_spans["resource"])
            for scope_spans in resource_spans["scopeSpans"]:
                self.spans.extend(scope_spans["spans"])
        self.arrivals.arrived()
        return 200, [(b"content-type", b"application/json")], b"{}"

    async def wait_spans(self, count: int) -> list[dict[str, Any]]:
        await self.arrivals.wait_for(lambda: len(self.spans) >= count)
        return self.spans


def attrs(holder: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a span or resource, by key."""
    return {a["key"]: next(iter(a["value"].values())) for a in holder["attributes"]}


async def status_answer(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return (503 if req.target.startswith(b"/fail") else 200), [], b"ok"


async def test_spans_and_trace_context(nursery: trio.Nursery) -> None:
    upstream = await nursery.start(Upstream(responder=status_answer).serve)
    collector = Collector()
    await nursery.start(collector.server.serve)
    node = {"nodes": {upstream.address: 1}}

    def route(rid: str, uri: str, sampler: dict[str, Any], **more: Any) -> dict[str, Any]:
        conf = {"sampler": sampler, **more}
        return {"id": rid, "name": f"{rid}-name", "uri": uri, "upstream": node,
                "plugins": {"opentelemetry": conf}}  # fmt: skip

    routes = [
        route("on", "/on/*", {"name": "always_on"},
              additional_attributes=["remote_addr", "arg_user"],
              additional_header_prefix_attributes=["x-tenant-*", "x-exact"]),
        route("off", "/off", {}),
        route("parent", "/parent", {"name": "parent_base",
                                    "options": {"root": {"name": "always_off"}}}),
        route("fail", "/fail", {"name": "always_on"}),
    ]  # fmt: skip
    attr = {
        "resource": {"service.name": "shop", "deployment.environment": "test"},
        "collector": {"address": collector.server.address, "request_headers": {"X-Token": "t"}},
        "batch_span_processor": {"inactive_timeout": 0.05, "batch_timeout": 0.2},
    }
    config = config_for(routes, plugin_attr={"opentelemetry": attr})
    _, gw = await start_gateway(nursery, config)

    # A trace that starts here: the upstream gets this span's id, sampled.
    resp = await request(
        gw,
        target="/on/items?user=ann",
        headers=[("User-Agent", "probe/1"), ("X-Tenant-Id", "7"), ("X-Exact", "e"),
                 ("X-Other", "no")],
    )  # fmt: skip
    assert resp.status == 200
    sent = upstream.received[-1].header(b"traceparent")
    match = TRACEPARENT.match(sent or b"")
    assert match is not None, sent
    trace_id, span_id, flags = (g.decode() for g in match.groups())
    assert flags == "01"
    (span,) = await collector.wait_spans(1)
    assert (span["traceId"], span["spanId"]) == (trace_id, span_id)
    assert "parentSpanId" not in span
    assert span["name"] == "GET /on/*"
    assert span["kind"] == 2
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0
    got = attrs(span)
    assert got["http.method"] == "GET"
    assert got["http.target"] == "/on/items?user=ann"
    assert got["http.user_agent"] == "probe/1"
    assert got["apisix.route_id"] == "on"
    assert got["apisix.route_name"] == "on-name"
    assert got["http.route"] == "/on/*"
    assert got["http.status_code"] == "200"
    assert got["remote_addr"] == "127.0.0.1"
    assert got["arg_user"] == "ann"
    assert (got["x-tenant-id"], got["x-exact"]) == ("7", "e")
    assert "x-other" not in got
    assert "status" not in span
    resource = attrs(collector.resources[0])
    assert resource["service.name"] == "shop"
    assert resource["deployment.environment"] == "test"
    assert resource["hostname"]
    post = collector.posts[0]
    assert post.target == b"/v1/traces"
    assert post.header(b"content-type") == b"application/json"
    assert post.header(b"x-token") == b"t"

    # The client's trace goes on: same trace, its span as the parent, tracestate kept.
    context = [("traceparent", INCOMING), ("tracestate", "vendor=1")]
    assert (await request(gw, target="/on/x", headers=context)).status == 200
    seen = upstream.received[-1]
    match = TRACEPARENT.match(seen.header(b"traceparent") or b"")
    assert match is not None
    assert match.group(1) == INCOMING.split("-")[1].encode()
    assert match.group(2) != INCOMING.split("-")[2].encode()
    assert seen.header(b"tracestate") == b"vendor=1"
    assert [v for n, v in seen.headers if n == b"traceparent"] == [seen.header(b"traceparent")]
    span = (await collector.wait_spans(2))[1]
    assert span["traceId"] == INCOMING.split("-")[1]
    assert span["parentSpanId"] == INCOMING.split("-")[2]
    assert span["spanId"] == match.group(2).decode()

    # always_off (the default): context still goes on, marked not sampled; no span.
    assert (await request(gw, target="/off", headers=context)).status == 200
    match = TRACEPARENT.match(upstream.received[-1].header(b"traceparent") or b"")
    assert match is not None
    assert (match.group(1), match.group(3)) == (INCOMING.split("-")[1].encode(), b"00")

    # parent_base: the parent's flag decides; without a parent, the root (always_off).
    assert (await request(gw, target="/parent", headers=context)).status == 200
    unsampled = [("traceparent", INCOMING[:-2] + "00")]
    assert (await request(gw, target="/parent", headers=unsampled)).status == 200
    assert (await request(gw, target="/parent")).status == 200
    # A malformed traceparent starts a new trace.
    bad = [("traceparent", "00-" + "0" * 32 + "-b7ad6b7169203331-01")]
    assert (await request(gw, target="/on/y", headers=bad)).status == 200
    fresh = TRACEPARENT.match(upstream.received[-1].header(b"traceparent") or b"")
    assert fresh is not None
    assert fresh.group(1) != b"0" * 32

    # An upstream error marks the span.
    assert (await request(gw, target="/fail")).status == 503
    spans = await collector.wait_spans(5)
    by_route = [attrs(s)["apisix.route_id"] for s in spans]
    assert by_route == ["on", "on", "parent", "on", "fail"]
    assert spans[2]["parentSpanId"] == INCOMING.split("-")[2]
    assert spans[4]["status"] == {"code": 2, "message": "upstream response status: 503"}
    assert attrs(spans[4])["http.status_code"] == "503"


async def test_trace_id_from_request_id(nursery: trio.Nursery, upstream: Upstream) -> None:
    collector = Collector()
    await nursery.start(collector.server.serve)
    routes = [{"id": "r", "uri": "/r", "upstream": {"nodes": {upstream.address: 1}},
               "plugins": {"opentelemetry": {"sampler": {"name": "always_on"}}}}]  # fmt: skip
    attr = {
        "trace_id_source": "x-request-id",
        "collector": {"address": f"http://{collector.server.address}"},
        "batch_span_processor": {"inactive_timeout": 0.05},
    }
    _, gw = await start_gateway(nursery, config_for(routes, plugin_attr={"opentelemetry": attr}))
    request_id = "6f1c8a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    assert (await request(gw, target="/r", headers=[("X-Request-Id", request_id)])).status == 200
    (span,) = await collector.wait_spans(1)
    assert span["traceId"] == request_id.replace("-", "")
    resource = attrs(collector.resources[0])
    assert resource["service.name"] == "APISIX"
