"""api-breaker: after an upstream's failures a URI is answered by the gateway for a while
(2, 4, 8... seconds, at most `max_breaker_sec`), then tried again; successes close the
breaker, as APISIX's plugin does."""

from __future__ import annotations

import trio

from tests.helpers import Received, Upstream, config_for, request, start_gateway


async def test_the_breaker_opens_waits_and_closes(nursery: trio.Nursery) -> None:
    status = {"code": 500}

    async def respond(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return status["code"], [], b"upstream"

    upstream = await nursery.start(Upstream(responder=respond).serve)
    breaker = {
        "break_response_code": 503,
        "break_response_body": "breaker open\n",
        "break_response_headers": [{"key": "X-Breaker", "value": "$uri"}],
        "unhealthy": {"http_statuses": [500, 503], "failures": 2},
        "healthy": {"successes": 2},
        "max_breaker_sec": 3,
    }
    routes = [
        {"id": "r", "uri": "/*", "upstream": {"nodes": {upstream.address: 1}},
         "plugins": {"api-breaker": breaker}},
    ]  # fmt: skip
    _, gw = await start_gateway(nursery, config_for(routes))

    # Two failures of /a open its breaker: the gateway answers, the upstream is spared.
    assert [(await request(gw, target="/a")).status for _ in range(2)] == [500, 500]
    opened = trio.current_time()
    seen = len(upstream.received)
    resp = await request(gw, target="/a")
    assert (resp.status, resp.body, resp.header(b"x-breaker")) == (503, b"breaker open\n", b"/a")
    assert len(upstream.received) == seen
    # Another URI has its own breaker, still closed.
    assert (await request(gw, target="/b")).status == 500

    async def wait_tried() -> tuple[int, float]:
        """Requests until one is let through; its status and when it was sent."""
        with trio.fail_after(20):
            while True:
                sent = trio.current_time()
                resp = await request(gw, target="/a")
                if resp.status != 503:
                    return resp.status, sent
                await trio.sleep(0.05)

    # After 2 s (2 ** 1 for the first `failures` failures) /a is tried again, and fails
    # (the 3rd failure): the breaker's time is now 2 ** 2 s, capped by max_breaker_sec at
    # 3, from when it opened.
    code, tried = await wait_tried()
    assert (code, tried - opened >= 1.5) == (500, True)
    # Tried again after 3 s: the 4th failure opens it anew, for 3 s from now.
    code, tried = await wait_tried()
    assert (code, tried - opened >= 2.5) == (500, True)
    reopened = tried

    # The upstream recovers: once tried, two successes close the breaker.
    status["code"] = 200
    code, tried = await wait_tried()
    assert (code, tried - reopened >= 2.5) == (200, True)
    assert (await request(gw, target="/a")).status == 200
    # Closed: counting starts over, `failures` failures open it again.
    status["code"] = 500
    assert [(await request(gw, target="/a")).status for _ in range(3)] == [500, 500, 503]
