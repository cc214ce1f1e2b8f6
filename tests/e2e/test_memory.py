"""The compiled config and the cyclic garbage collector (server.settle_memory)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import trio

from gateway.config.load import load, parse
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config
from gateway.server import Gateway
from tests.helpers import Upstream, config_for, request


async def test_config_kept_out_of_full_collections_and_reloads_free_the_old_one(
    nursery: trio.Nursery, upstream: Upstream, tmp_path: Path
) -> None:
    config = config_for(
        [
            {
                "id": "r",
                "uri": "/*",
                "upstream": {"nodes": {upstream.address: 1}},
                "plugins": {"key-auth": {}},
            }
        ],
        consumers=[
            {"username": f"user{i}", "plugins": {"key-auth": {"key": f"key-{i}"}}}
            for i in range(300)
        ],
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    registry = LimitRegistry()
    gateway = Gateway(str(path), compile_config(load(str(path)), limits=registry), registry)
    gw = (await nursery.start(gateway.serve))[0]
    # Frozen: full collections under traffic no longer walk the config's objects.
    assert gc.get_freeze_count() > 0
    # Reloads free the old config, reference cycles included (consumers and their
    # credentials point at each other), with no collection by the test itself.
    tracemalloc.start()
    try:
        for _ in range(5):
            assert await gateway.reload()
        settled, _ = tracemalloc.get_traced_memory()
        for _ in range(15):
            assert await gateway.reload()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - settled < 512 * 1024, f"{(after - settled) / 1024:.0f} KiB kept by 15 reloads"
    assert (await request(gw, headers=[("apikey", "key-7")])).status == 200
    assert (await request(gw)).status == 401


def test_consumers_hold_no_reference_cycles() -> None:
    """A reload frees the old config's consumers by reference counting alone (the full
    collection after it then walks only the new config): no consumer, credential or
    policy plugin of a dropped runtime is left for the cyclic collector."""
    redis = {"policy": "redis", "redis_host": "127.0.0.1"}  # (compiled, never connected)
    consumers = [
        {
            "username": f"user{i}",
            "plugins": {
                "limit-count": {"count": 5, "time_window": 60, **(redis if i % 2 else {})},
                "limit-req": {
                    "rate": 5,
                    "burst": 1,
                    "key": "consumer_name",
                    **(redis if i % 3 else {"nodelay": bool(i % 2)}),
                },
            },
            "credentials": [
                {"id": f"k{i}", "plugins": {"key-auth": {"key": f"key-{i}"}}},
                {"id": f"j{i}", "plugins": {"jwt-auth": {"key": f"j{i}", "secret": "s" * 32}}},
                {"id": f"b{i}", "plugins": {"basic-auth": {"username": f"u{i}", "password": "p"}}},
            ],
        }
        for i in range(50)
    ]
    limit = {"count": 9, "time_window": 9}
    route = {"id": "r", "uri": "/*", "upstream": {"nodes": {"127.0.0.1:1": 1}},
             "plugins": {"key-auth": {}, "jwt-auth": {}, "limit-count": limit,
                         "request-id": {}}}  # fmt: skip
    data = json.dumps(config_for([route], consumers=consumers))
    gc.collect()
    runtime = compile_config(parse(data.encode()), limits=LimitRegistry())
    del runtime
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        left = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    kept = {"Consumer", "Credential", "ConsumerTable", "PluginEnv", "RequestId"}
    assert not [n for n in left if n in kept or "Limit" in n or "Redis" in n], left
