"""batch-requests through public-api: several requests in one POST, each served as the
client's own (routes, authentication, its address), their answers in one JSON array."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import Received, Upstream, config_for, connect, request, start_gateway

BATCH = "/apisix/batch-requests"


async def hang(req: Received) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    await trio.sleep_forever()
    raise AssertionError


@pytest.fixture
async def slow(nursery: trio.Nursery) -> Upstream:
    return await nursery.start(Upstream(responder=hang).serve)


def routes(upstream: Upstream, slow: Upstream) -> list[dict[str, Any]]:
    node = {"nodes": {upstream.address: 1}}
    return [
        {"id": "batch", "uri": BATCH, "plugins": {"public-api": {}}},
        {"id": "open", "uri": "/open/*", "upstream": node},
        {"id": "keyed", "uri": "/keyed", "plugins": {"key-auth": {}}, "upstream": node},
        {"id": "slow", "uri": "/slow", "upstream": {"nodes": {slow.address: 1}}},
        {"id": "no-02", "uri": "/no-02", "upstream": node,
         "plugins": {"ip-restriction": {"blacklist": ["127.0.0.2"]}}},
    ]  # fmt: skip


CONSUMERS = [{"username": "bot", "plugins": {"key-auth": {"key": "bot-key"}}}]


async def gateway(nursery: trio.Nursery, upstream: Upstream, slow: Upstream, **top: Any) -> str:
    config = config_for(routes(upstream, slow), consumers=CONSUMERS, **top)
    _, address = await start_gateway(nursery, config)
    return address


async def batch(gw: str, doc: Any, *headers: tuple[str, str], source: str | None = None) -> Any:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    resp = await request(
        gw, "POST", BATCH, headers=[("Content-Type", "application/json"), *headers],
        body=body, source=source,
    )  # fmt: skip
    return resp.status, resp.json()


async def test_each_sub_request_is_served_as_the_clients(
    nursery: trio.Nursery, upstream: Upstream, slow: Upstream
) -> None:
    gw = await gateway(nursery, upstream, slow)
    doc = {
        "headers": {"X-Common": "batch", "X-Both": "batch"},
        "query": {"common": "1", "flag": True, "off": False},
        "pipeline": [
            {"path": "/open/a", "query": {"x": "1 2"}, "headers": {"X-Both": "item"}},
            {"method": "POST", "path": "/open/b", "body": "hello body"},
            {"method": "HEAD", "path": "/open/c"},
            {"path": "/keyed"},
            {"path": "/keyed", "headers": {"apikey": "wrong"}},
            {"path": "/nowhere"},
        ],
    }
    status, answers = await batch(gw, doc, ("apikey", "bot-key"), ("X-Outer", "o"))
    assert status == 200
    assert [a["status"] for a in answers] == [200, 200, 200, 200, 401, 404]
    assert answers[0]["reason"] == "OK"
    assert json.loads(answers[0]["body"])["target"] == "/open/a?common=1&flag&x=1%202"
    assert "body" not in answers[2]  # a HEAD's answer has none
    assert json.loads(answers[4]["body"]) == {"message": "Invalid API key in request"}
    assert json.loads(answers[5]["body"]) == {"error_msg": "404 Route Not Found"}
    assert answers[5]["headers"]["content-type"] == "application/json"

    get, post, head, keyed = upstream.received[-4:]
    assert (get.method, post.method, head.method) == (b"GET", b"POST", b"HEAD")
    # The item's header beats the batch's, which comes to every item; the batch request's
    # own headers too, but its Content-* ones.
    assert get.header(b"x-both") == b"item"
    assert post.header(b"x-both") == b"batch"
    assert get.header(b"x-common") == b"batch"
    assert get.header(b"x-outer") == b"o"
    assert get.header(b"content-type") is None
    assert post.body == b"hello body"
    assert post.target == b"/open/b?common=1&flag"
    # Authenticated as the batch request's key, a consumer like any other.
    assert keyed.header(b"x-consumer-username") == b"bot"


async def test_sub_requests_come_from_the_clients_address(
    nursery: trio.Nursery, upstream: Upstream, slow: Upstream
) -> None:
    gw = await gateway(nursery, upstream, slow)
    doc = {"pipeline": [{"path": "/open/x"}, {"path": "/no-02"}]}
    status, answers = await batch(gw, doc, source="127.0.0.2")
    assert status == 200
    assert [a["status"] for a in answers] == [200, 403]
    assert upstream.received[-1].header(b"x-real-ip") == b"127.0.0.2"
    # From another address the restricted route answers.
    status, answers = await batch(gw, doc)
    assert [a["status"] for a in answers] == [200, 200]


async def test_a_slow_item_times_out_and_the_rest_go_on(
    nursery: trio.Nursery, upstream: Upstream, slow: Upstream
) -> None:
    gw = await gateway(nursery, upstream, slow)
    doc = {"timeout": 300, "pipeline": [{"path": "/slow"}, {"path": "/open/after"}]}
    status, answers = await batch(gw, doc)
    assert status == 200
    assert answers[0] == {"status": 504, "reason": "upstream timeout"}
    assert answers[1]["status"] == 200
    assert upstream.received[-1].target == b"/open/after"


async def test_refusals(nursery: trio.Nursery, upstream: Upstream, slow: Upstream) -> None:
    metadata = [{"id": "batch-requests", "max_body_size": 400, "max_pipeline_items": 2}]
    gw = await gateway(nursery, upstream, slow, plugin_metadata=metadata)
    before = len(upstream.received)
    assert (await request(gw, target=BATCH)).status == 404
    assert await batch(gw, b"") == (
        400,
        {"error_msg": "no request body, you should give at least one pipeline setting"},
    )
    status, body = await batch(gw, b"{not json")
    assert (status, body["error_msg"][:21]) == (400, "invalid request body:")
    for doc in [{}, {"pipeline": []}, {"pipeline": [{"method": "BREW", "path": "/"}]}]:
        status, body = await batch(gw, doc)
        assert (status, body["error_msg"][:17]) == (400, "bad request body:"), doc
    # A header that would split the request, a path no request line can carry: nothing of
    # the batch runs, not even the items before.
    for bad in [{"headers": {"X-A": "1\r\nX-Injected: 1"}}, {"path": "/a b"}]:
        doc = {"pipeline": [{"path": "/open/ok"}, {"path": "/open/x", **bad}]}
        status, body = await batch(gw, doc)
        assert status == 400
        assert body["error_msg"].startswith("bad request body: pipeline[1]:"), body
    status, body = await batch(gw, {"pipeline": [{"path": "/open/x"}] * 3})
    assert (status, body) == (400, {"error_msg": "bad request body: 3 pipeline items, at most 2"})
    status, body = await batch(gw, {"pipeline": [{"path": "/open/" + "x" * 500}]})
    assert status == 413
    assert body["error_msg"].endswith("is greater than the maximum size 400 allowed")
    assert len(upstream.received) == before


async def test_items_after_the_client_left_are_not_sent(
    nursery: trio.Nursery, upstream: Upstream, slow: Upstream, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gw = await gateway(nursery, upstream, slow, server={"access_log": str(log)})
    doc = {"timeout": 300, "pipeline": [{"path": "/slow"}, {"path": "/open/never"}]}
    body = json.dumps(doc).encode()
    stream = await connect(gw)
    await stream.send_all(
        b"POST " + BATCH.encode() + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    # The first item is on its way (its upstream holds it): the client leaves.
    with trio.fail_after(10):
        while not slow.received:  # noqa: ASYNC110 (the upstream records, no event)
            await trio.sleep(0.01)
    await stream.aclose()
    # The item times out; the batch's own line is the last one written for it.
    with trio.fail_after(10):
        while '"route_id":"batch"' not in read(log):  # noqa: ASYNC110 (a file, no event)
            await trio.sleep(0.02)
    assert not any(r.target.startswith(b"/open/never") for r in upstream.received)


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def test_an_item_refused_before_it_was_read_gets_its_answer(
    nursery: trio.Nursery, upstream: Upstream, slow: Upstream
) -> None:
    """A sub-request whose head the gateway refuses (too large) while it is still being
    written: its record is that refusal, and the next item runs."""
    metadata = [{"id": "batch-requests", "max_body_size": 8 << 20}]
    gw = await gateway(nursery, upstream, slow, plugin_metadata=metadata)
    big = {"path": "/open/big", "headers": {"X-Big": "x" * (4 << 20)}}
    status, answers = await batch(gw, {"pipeline": [big, {"path": "/open/next"}]})
    assert status == 200
    assert answers[0]["status"] == 431
    assert answers[1]["status"] == 200
    assert upstream.received[-1].target == b"/open/next"
    assert not any(r.target == b"/open/big" for r in upstream.received)
