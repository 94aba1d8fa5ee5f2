"""A process-wide counter of changes to what the read API reports.

Bumped after every landed batch (pipeline/writer.py), every recorded registry version and every
re-classification run. With the embedded store (chdb: one process per data directory) every
write happens in this process, so an answer cached under the current value is exact: it is
recomputed after the next change, never served stale (api/cache.py).
"""

from __future__ import annotations

import itertools
import threading

_lock = threading.Lock()
_counter = itertools.count(1)
_current = 0


def bump() -> None:
    global _current
    with _lock:
        _current = next(_counter)


def current() -> int:
    return _current
