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


def test_exact_mode_reuses_until_the_version_moves() -> None:
    version = [1]
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    cache: TtlCache[int] = TtlCache(0, version=lambda: version[0])
    assert [cache.get("k", compute) for _ in range(3)] == [1, 1, 1]  # no TTL needed
    assert cache.get("other", compute) == 2
    version[0] = 2  # a batch landed
    assert cache.get("k", compute) == 3
    assert cache.get("other", compute) == 4
    assert cache.get("k", compute) == 3


def test_exact_mode_does_not_keep_an_answer_computed_across_a_landing() -> None:
    version = [1]
    calls: list[int] = []

    def compute_while_landing() -> int:
        calls.append(1)
        version[0] += 1  # a batch lands while the answer is being computed
        return len(calls)

    cache: TtlCache[int] = TtlCache(0, version=lambda: version[0])
    assert cache.get("k", compute_while_landing) == 1
    assert cache.get("k", lambda: 99) == 99  # recomputed: the first answer was not kept


def test_embedded_writer_landing_moves_the_version() -> None:
    from tracker import data_version

    before = data_version.current()
    data_version.bump()
    assert data_version.current() != before
