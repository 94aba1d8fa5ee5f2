"""The public headline cache: reuse within the TTL, read-through when off."""

from __future__ import annotations

import time

from api.cache import TtlCache


def test_reuses_within_ttl_and_recomputes_after() -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    cache: TtlCache[int] = TtlCache(0.2)
    assert cache.get("k", compute) == 1
    assert cache.get("k", compute) == 1
    assert cache.get("other", compute) == 2
    time.sleep(0.25)
    assert cache.get("k", compute) == 3


def test_off_reads_through() -> None:
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    cache: TtlCache[int] = TtlCache(0)
    assert [cache.get("k", compute) for _ in range(3)] == [1, 2, 3]
