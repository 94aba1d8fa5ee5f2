"""glibc allocator settings for the long-running processes (up, collector, pipeline, api).

Measured in bench/RESULTS.md (pipeline, 30k records/s, five minutes): with glibc's defaults the
pipeline's private memory went 296 -> 477 MB, with these two settings 248 -> 432 MB (~130 MB less
at the same point of a run; the rest of the growth is inside the embedded engine). Two defaults
cause the difference:
- one malloc arena per thread, up to 8 per core: chdb's engine threads and Python's each
  keep freed memory in their own arena; two arenas bound that;
- a dynamic mmap threshold that rises after the first large buffer is freed: Kafka messages
  (~200 KB) and insert blocks then come from the heap, where they fragment it; fixing the
  threshold at 128 KiB keeps every such buffer in its own mapping, returned when freed.
An operator's MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ environment wins; other C libraries are
left alone. pyarrow (Parquet exports) is pointed at the same system allocator instead of its
bundled mimalloc, whose peak was ~70 MB higher in a 10M-row export (ARROW_DEFAULT_MEMORY_POOL,
read when pyarrow first allocates; an operator's value wins).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
_M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 128 * 1024


def tune_allocator() -> dict[str, int]:
    """Apply the settings (before the engine starts its threads); returns what was set."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    name = ctypes.util.find_library("c")
    if name is None:
        return {}
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  # present only in glibc
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied: dict[str, int] = {}
    if "MALLOC_ARENA_MAX" not in os.environ and mallopt(_M_ARENA_MAX, ARENAS) == 1:
        applied["arena_max"] = ARENAS
    if (
        "MALLOC_MMAP_THRESHOLD_" not in os.environ
        and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ):
        applied["mmap_threshold"] = MMAP_THRESHOLD
    log.debug("allocator: %s", applied)
    return applied
