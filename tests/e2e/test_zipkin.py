"""zipkin: B3 context to the upstream and Zipkin v2 spans to the collector, as APISIX's
plugin sends them."""

from __future__ import annotations

import json
from typing import Any

import trio

from tests.helpers import Arrivals, Received, Upstream, config_for, request, start_gateway

TRACE = "463ac35c9f6413ad48485a3953bb6124"
CLIENT_SPAN = "a2fb4a1d1a96d312"


class ZipkinCollector:
    def __init__(self) -> None:
        self.server = Upstream(responder=self._respond, name="zipkin")
        self.spans: list[dict[str, Any]] = []
        self.arrivals = Arrivals()

    async def _respond(self, req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        assert req.target == b"/api/v2/spans"
        assert req.header(b"content-type") == b"application/json"
        self.spans.extend(json.loads(req.body))
        self.arrivals.arrived()
        return 202, [], b""

    async def wait_spans(self, count: int) -> list[dict[str, Any]]:
        await self.arrivals.wait_for(lambda: len(self.spans) >= count)
        return self.spans


async def test_b3_and_spans(nursery: trio.Nursery, upstream: Upstream) -> None:
    zipkin = ZipkinCollector()
    await nursery.start(zipkin.server.serve)
    endpoint = f"http://{zipkin.server.address}/api/v2/spans"
    node = {"nodes": {upstream.address: 1}}
    routes = [
        {"id": "all", "uri": "/all", "upstream": node,
         "plugins": {"zipkin": {"endpoint": endpoint, "sample_ratio": 1,
                                "service_name": "shop", "server_addr": "10.0.0.1"}}},
        {"id": "few", "uri": "/few", "upstream": node,
         "plugins": {"zipkin": {"endpoint": endpoint, "sample_ratio": 0.00001}}},
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    # The client's trace (multi-header B3) goes on: its span is the request span's parent.
    client = [("X-B3-TraceId", TRACE), ("X-B3-SpanId", CLIENT_SPAN), ("X-B3-Sampled", "1")]
    assert (await request(gw, target="/all?q=1", headers=client)).status == 200
    seen = upstream.received[-1]
    assert seen.header(b"x-b3-traceid") == TRACE.encode()
    assert seen.header(b"x-b3-sampled") == b"1"
    proxy_id = (seen.header(b"x-b3-spanid") or b"").decode()
    request_id = (seen.header(b"x-b3-parentspanid") or b"").decode()
    assert len(proxy_id) == len(request_id) == 16
    assert CLIENT_SPAN not in (proxy_id, request_id)
    spans = {s["name"]: s for s in await zipkin.wait_spans(3)}
    assert set(spans) == {"apisix.request", "apisix.proxy", "apisix.response_span"}
    main = spans["apisix.request"]
    assert (main["traceId"], main["id"], main["parentId"]) == (TRACE, request_id, CLIENT_SPAN)
    assert main["kind"] == "SERVER"
    assert main["localEndpoint"]["serviceName"] == "shop"
    assert main["localEndpoint"]["ipv4"] == "10.0.0.1"
    assert main["tags"]["http.method"] == "GET"
    assert main["tags"]["http.url"] == "/all?q=1"
    assert main["tags"]["peer.ipv4"] == "127.0.0.1"
    assert main["tags"]["http.status_code"] == "200"
    assert main["tags"]["component"] == "apisix"
    assert spans["apisix.proxy"]["id"] == proxy_id
    for child in ("apisix.proxy", "apisix.response_span"):
        assert spans[child]["parentId"] == request_id
        assert spans[child]["traceId"] == TRACE
        assert spans[child]["timestamp"] >= main["timestamp"]
        assert spans[child]["duration"] <= main["duration"]

    # The single `b3` header, not passed on; a new trace when the client has none.
    b3 = f"{TRACE}-{CLIENT_SPAN}-1"
    assert (await request(gw, target="/all", headers=[("b3", b3)])).status == 200
    assert upstream.received[-1].header(b"b3") is None
    assert upstream.received[-1].header(b"x-b3-traceid") == TRACE.encode()
    assert (await request(gw, target="/all")).status == 200
    fresh = upstream.received[-1].header(b"x-b3-traceid") or b""
    assert len(fresh) == 32
    assert fresh != TRACE.encode()
    assert len(await zipkin.wait_spans(9)) == 9

    # An invalid b3 header: 400, nothing upstream.
    before = len(upstream.received)
    assert (await request(gw, target="/all", headers=[("b3", "not-b3")])).status == 400
    assert len(upstream.received) == before

    # The client's "not sampled" holds even at ratio 1; its ids go on untouched.
    no = [("X-B3-TraceId", TRACE), ("X-B3-SpanId", CLIENT_SPAN), ("X-B3-Sampled", "0")]
    assert (await request(gw, target="/all", headers=no)).status == 200
    assert upstream.received[-1].header(b"x-b3-sampled") == b"0"
    assert upstream.received[-1].header(b"x-b3-spanid") == CLIENT_SPAN.encode()
    # A tiny ratio samples (almost) nothing, unless the client asks (debug flag).
    assert (await request(gw, target="/few")).status == 200
    assert upstream.received[-1].header(b"x-b3-sampled") == b"0"
    assert (await request(gw, target="/few", headers=[("X-B3-Flags", "1")])).status == 200
    assert upstream.received[-1].header(b"x-b3-sampled") == b"1"
    spans = await zipkin.wait_spans(12)
    assert len(spans) == 12  # the last sampled request only
