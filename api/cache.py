"""A small time-to-live cache for public aggregate answers.

The headline is read far more often than it changes (hourly resolution), and a public page can
draw many readers at once: a few seconds of reuse turns N identical ClickHouse queries into one.
Off unless TRACKER_PUBLIC_CACHE_SECONDS > 0, so an answer right after an ingest is fresh by
default; keyed callers (audited) always read through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

_MAX_ENTRIES = 10_000


class TtlCache(Generic[T]):
    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, T]] = {}

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if self.ttl <= 0:
            return compute()
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if now - v[0] < self.ttl}
                if len(self._entries) >= _MAX_ENTRIES:  # all fresh: bound memory regardless
                    self._entries.clear()
            self._entries[key] = (now, value)
        return value
