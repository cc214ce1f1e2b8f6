"""request-id's generators: shape and uniqueness."""

from __future__ import annotations

import re
import time

from gateway.plugins.request_id import BASE62, KSUID_EPOCH, _ksuid, _nanoid, _uuid


def test_shapes_and_uniqueness() -> None:
    for generate, pattern in (
        (_uuid, rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"),
        (_nanoid, rb"[A-Za-z0-9_-]{21}"),
        (lambda: _ksuid(time.time()), rb"[0-9A-Za-z]{27}"),
    ):
        ids = {generate() for _ in range(1000)}
        assert len(ids) == 1000
        assert all(re.fullmatch(pattern, i) for i in ids)


def test_ksuid_starts_with_the_time() -> None:
    value = 0
    for char in _ksuid(time.time()).decode():
        value = value * 62 + BASE62.index(char)
    seconds = (value >> 128) + KSUID_EPOCH
    assert abs(seconds - time.time()) < 60
