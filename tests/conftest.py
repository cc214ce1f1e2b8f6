from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.helpers import GatewayProcess, Upstream
from tests.redis_server import RedisServer


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> Upstream:
    """A recording echo upstream on a free loopback port."""
    return await nursery.start(Upstream().serve)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    """Gateway subprocesses started by a test; killed at teardown if still running."""
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
async def second_upstream(nursery: trio.Nursery) -> Upstream:
    """Another recording echo upstream, for balancing and reload tests."""
    return await nursery.start(Upstream(name="second").serve)


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_session: RedisServer) -> RedisServer:
    """The shared test redis-server, emptied for this test."""
    redis_session.flush()
    return redis_session
