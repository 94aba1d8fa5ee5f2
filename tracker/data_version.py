"""A process-wide counter of changes to what the read API reports.

Bumped after every landed batch (pipeline/writer.py) and the daily rollup's backfill: the writes
to the rollups that "as classified then" answers read. With the embedded store (chdb: one
process per data directory) every such write happens in this process, so an answer cached under
the current value is exact: recomputed after the next landing, never served stale
(api/cache.py). Registry changes do not bump it; "as classified now" answers are not cached.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_current = 0


def bump() -> None:
    global _current
    with _lock:
        _current += 1


def current() -> int:
    return _current
