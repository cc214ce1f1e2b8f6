from __future__ import annotations

import ast
from pathlib import Path

import trio

from gateway.consumers import ConsumerTable
from gateway.context import RequestContext
from gateway.http.replies import Reply
from gateway.pipeline import Chain, Conf, Plugin, PluginEnv, run_request_phases

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


class Recorder(Plugin):
    Conf = Conf

    def __init__(self, name: str, priority: int, log: list[str], stop: bool = False) -> None:
        super().__init__(None, PluginEnv(ConsumerTable(), lambda: 0.0))
        self.name = name  # type: ignore[misc]
        self.priority = priority  # type: ignore[misc]
        self.trace = log
        self.stop = stop

    def rewrite(self, ctx: RequestContext) -> Reply | None:
        self.trace.append(f"rewrite:{self.name}")
        return Reply(401, []) if self.stop else None

    def access(self, ctx: RequestContext) -> None:
        self.trace.append(f"access:{self.name}")


class AsyncRecorder(Recorder):
    async def access(self, ctx: RequestContext) -> None:  # type: ignore[override]
        await trio.lowlevel.checkpoint()
        self.trace.append(f"async-access:{self.name}")


def ctx() -> RequestContext:
    return RequestContext(b"GET", b"/", [], b"1.1", "127.0.0.1", 1, 2, 0.0)


async def test_phases_run_in_priority_order_and_async_hooks_are_awaited() -> None:
    trace: list[str] = []
    chain = Chain(
        [Recorder("low", 1, trace), AsyncRecorder("high", 9, trace), Recorder("mid", 5, trace)]
    )
    assert await run_request_phases(chain, ctx()) is None
    assert trace == [
        "rewrite:high",
        "rewrite:mid",
        "rewrite:low",
        "async-access:high",
        "access:mid",
        "access:low",
    ]


async def test_a_reply_ends_the_request() -> None:
    trace: list[str] = []
    chain = Chain([Recorder("first", 9, trace, stop=True), Recorder("later", 1, trace)])
    reply = await run_request_phases(chain, ctx())
    assert reply is not None
    assert reply.status == 401
    assert trace == ["rewrite:first"]


PURE = [
    "router.py",
    "http",
    "upstream/balancer.py",
    "upstream/health.py",
    "expr.py",
    "addresses.py",
    "variables.py",
    "config",
    "plugins",
    "context.py",
    "pipeline.py",
    "template.py",
    "metrics.py",
    "logentry.py",
    "cache.py",
    "tlshello.py",
]


def test_pure_modules_never_import_trio_or_sockets() -> None:
    files: list[Path] = []
    for entry in PURE:
        path = GATEWAY / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    assert files
    for file in files:
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                root = mod.split(".")[0]
                assert root not in {"trio", "socket", "select", "time", "asyncio"}, f"{file}: {mod}"
