"""The compiled config and the cyclic garbage collector (server.settle_memory)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

import trio

from gateway.config.load import load
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
            assert gateway.reload()
        settled, _ = tracemalloc.get_traced_memory()
        for _ in range(15):
            assert gateway.reload()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - settled < 512 * 1024, f"{(after - settled) / 1024:.0f} KiB kept by 15 reloads"
    assert (await request(gw, headers=[("apikey", "key-7")])).status == 200
    assert (await request(gw)).status == 401
