"""proxy-cache's zones: answers kept in memory by key, within a byte budget, least recently
used first out. One `CacheZones` per server process, kept across reloads (as APISIX's
shared dicts are). Pure: no IO, no clock (expiry times are the caller's)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

Header = tuple[bytes, bytes]

ZONE_BYTES: Final = 50 * 1024 * 1024


class Entry:
    __slots__ = ("body", "expires", "headers", "size", "status")

    def __init__(self, status: int, headers: list[Header], body: bytes, expires: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.expires = expires
        self.size = len(body) + sum(len(n) + len(v) for n, v in headers)


class Zone:
    """One cache zone: entries by key, least recently used first, within a byte budget."""

    def __init__(self, budget: int = ZONE_BYTES) -> None:
        self.budget = budget
        self.used = 0
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()

    def get(self, key: bytes) -> Entry | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def drop(self, key: bytes) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.used -= entry.size

    def put(self, key: bytes, entry: Entry) -> None:
        self.drop(key)
        while self.entries and self.used + entry.size > self.budget:
            _, old = self.entries.popitem(last=False)
            self.used -= old.size
        self.entries[key] = entry
        self.used += entry.size


class CacheZones:
    """Every zone the configs name, by name."""

    def __init__(self) -> None:
        self._zones: dict[str, Zone] = {}

    def zone(self, name: str) -> Zone:
        found = self._zones.get(name)
        if found is None:
            found = self._zones[name] = Zone()
        return found
