"""Waking a registry's runner task, from wherever new work was handed to it.

The registries (logship's queues, identity providers, Redis clients) keep new work in a
list and set a trio Event for their runner. A reload compiles the new config on a worker
thread (with 100,000 consumers that takes seconds, which the trio thread would otherwise
spend not serving), and trio objects must not be touched from there: inside `deferred`,
`wake` only notes the Event, and the reload sets the noted ones from the trio thread once
the config is back. Nothing else wakes the registries meanwhile, so their runners never
take the lists while the worker adds to them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")
_local = threading.local()


def wake(event: trio.Event) -> None:
    """Set `event`, or note it when this thread is compiling a config for a reload."""
    noted: list[trio.Event] | None = getattr(_local, "noted", None)
    if noted is None:
        event.set()
    else:
        noted.append(event)


def deferred(build: Callable[[], T]) -> tuple[T, list[trio.Event]]:
    """`build()` (on a worker thread) and the Events it would have set, for the trio
    thread to set."""
    noted: list[trio.Event] = []
    _local.noted = noted
    try:
        return build(), noted
    finally:
        _local.noted = None
