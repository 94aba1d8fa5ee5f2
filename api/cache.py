"""A small cache for public headline answers.

The headline is read far more often than it changes, and a public page can draw many readers at
once. Two modes:
- exact (the embedded store, chdb): every write to the rollups happens in this process and
  bumps tracker.data_version, so an answer is reused only while nothing has landed since it was
  computed: never stale. On by default there.
- time-to-live (a ClickHouse server shared with a separate pipeline): this process cannot see
  the landings, so an answer is reused for TRACKER_PUBLIC_CACHE_SECONDS (off by default).
Keyed callers (audited) always read through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

_MAX_ENTRIES = 10_000


class TtlCache(Generic[T]):
    def __init__(self, ttl_seconds: float, version: Callable[[], int] | None = None) -> None:
        self.ttl = ttl_seconds
        self.version = version
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, T]] = {}
        self._seen: int | None = None

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if self.version is not None:
            return self._exact(key, compute)
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

    def _exact(self, key: Hashable, compute: Callable[[], T]) -> T:
        assert self.version is not None
        before = self.version()
        with self._lock:
            if before != self._seen:  # something landed: every answer may have changed
                self._entries.clear()
                self._seen = before
            hit = self._entries.get(key)
        if hit is not None:
            return hit[1]
        value = compute()
        with self._lock:
            # Kept only if nothing landed while it was computed (else it may be half-old).
            if self.version() == before == self._seen:
                if len(self._entries) >= _MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (0.0, value)
        return value
