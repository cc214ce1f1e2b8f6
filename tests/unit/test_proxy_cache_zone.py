"""proxy-cache's zones: least recently used entries go first, within the byte budget."""

from __future__ import annotations

from gateway.cache import Entry, Zone


def entry(size: int) -> Entry:
    return Entry(200, [], b"x" * size, expires=1e9)


def test_budget_and_recency() -> None:
    zone = Zone(budget=300)
    for key in (b"a", b"b", b"c"):
        zone.put(key, entry(100))
    assert zone.get(b"a") is not None  # now the most recent
    zone.put(b"d", entry(100))
    assert zone.get(b"b") is None  # the least recently used went
    assert [k for k in zone.entries] == [b"c", b"a", b"d"]
    assert zone.used == 300
    zone.put(b"a", entry(50))  # replaced, not added
    assert zone.used == 250
    zone.drop(b"c")
    assert zone.used == 150
    zone.put(b"big", entry(300))
    assert list(zone.entries) == [b"big"]
    assert zone.used == 300
