"""limit-count micro-benchmark: µs per decision (the plugin's access hook, local policy),
fixed and sliding windows, with 1 and with 1,000,000 distinct keys; and the memory the
counters hold after 1,000,000 distinct keys. Prints JSON.

    python bench/micro/limit_count.py [--keys 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

from gateway.config.load import parse
from gateway.context import RequestContext
from gateway.runtime import compile_config


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hook(window_type: str) -> Any:
    # Quota headers off: they belong to each request, and the benchmark keeps its requests
    # alive, so they would be counted as counter memory.
    conf = {
        "count": 10**9,
        "time_window": 60,
        "window_type": window_type,
        "key": "http_x_key",
        "show_limit_quota_header": False,
    }
    route = {"id": "r", "uri": "/", "upstream": {"nodes": {"127.0.0.1:1": 1}},
             "plugins": {"limit-count": conf}}  # fmt: skip
    runtime = compile_config(parse(json.dumps({"routes": [route]}).encode()))
    compiled = runtime.router.match(b"GET", b"/", b"")
    assert compiled is not None
    return compiled.chain.access[0][0], compiled


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.keys
    results: dict[str, float] = {}
    for window_type in ("fixed", "sliding"):
        access, route = hook(window_type)
        contexts = []
        for i in range(n):
            ctx = RequestContext(
                b"GET", b"/", [(b"x-key", b"k%d" % i)], b"1.1", "10.0.0.1", 1, 9080, 0.0
            )
            ctx.route = route
            contexts.append(ctx)
        one = contexts[0]
        start = time.perf_counter()
        for _ in range(n):
            access(one)
        results[f"{window_type} 1 key us"] = round((time.perf_counter() - start) / n * 1e6, 3)
        gc.collect()
        before = rss_kb()
        start = time.perf_counter()
        for ctx in contexts:
            access(ctx)
        results[f"{window_type} {n} keys us"] = round((time.perf_counter() - start) / n * 1e6, 3)
        gc.collect()
        results[f"{window_type} MiB for {n} keys"] = round((rss_kb() - before) / 1024, 1)
        del contexts
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
