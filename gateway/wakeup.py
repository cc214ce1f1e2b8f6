"""Waking a registry's runner task, from wherever new work was handed to it.

The registries (logship's queues, identity providers, Redis clients) keep new work in a
list and set a trio Event for their runner. A reload compiles the new config on a worker
thread (with 100,000 consumers that takes seconds, which the trio thread would otherwise
spend not serving), and trio objects must not be touched from there: inside `deferred`,
`wake` leaves the Event alone, and the reload wakes every registry from the trio thread
once the config is back (`wake_pending`). Nothing else wakes them meanwhile, so their
runners never take the lists while the worker adds to them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")
_local = threading.local()


def wake(event: trio.Event) -> None:
    """Set `event`, unless this thread is compiling a config for a reload."""
    if not getattr(_local, "deferred", False):
        event.set()


def deferred(build: Callable[[], T]) -> T:
    """`build()` with wakeups left to the caller (for a worker thread)."""
    _local.deferred = True
    try:
        return build()
    finally:
        _local.deferred = False
