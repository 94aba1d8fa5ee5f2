"""Python's cyclic garbage collector, paced by the consumer loop instead of by allocation counts.

A batch in hand is up to 50k rows plus the validated records they came from: hundreds of
thousands of tracked objects, all alive until the batch lands. The automatic collector runs
every 700 allocations; it scanned them again and again as they piled up, and promoted them so
that full collections, which scan everything, followed. That was ~1.5 us of the pipeline's
~12 us of Python per record (bench/RESULTS.md). Nothing in the loop needs a cycle collected
mid-batch: rows and records are freed by reference counting once their batch lands.

So while the loop runs, automatic collection is off. The loop collects the young generations
right after a batch lands, when almost nothing young is alive, or after `young_every` seconds
without a landing (an idle or stalled loop, whose other threads still allocate); and it collects
everything every `full_every` seconds. Cyclic garbage, which only the collector frees, is
therefore held for at most a few seconds, as before.
"""

from __future__ import annotations

import gc
import time
from types import TracebackType


class CollectionPacer:
    def __init__(self, *, young_every: float = 5.0, full_every: float = 60.0) -> None:
        self.young_every = young_every
        self.full_every = full_every
        self._was_enabled = True
        now = time.monotonic()
        self._last_young = now
        self._last_full = now
        self.collections = {"young": 0, "full": 0}

    def __enter__(self) -> CollectionPacer:
        self._was_enabled = gc.isenabled()
        gc.disable()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._was_enabled:
            gc.enable()

    def collect(self, *, landed: bool, now: float | None = None) -> None:
        """Called once per loop turn; `landed`: a batch landed in this turn."""
        now = time.monotonic() if now is None else now
        if now - self._last_full >= self.full_every:
            gc.collect()
            self._last_full = self._last_young = now
            self.collections["full"] += 1
        elif landed or now - self._last_young >= self.young_every:
            gc.collect(1)
            self._last_young = now
            self.collections["young"] += 1
