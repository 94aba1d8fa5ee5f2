"""The allocator settings of long-running processes (tracker/memory.py)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

CODE = "import json; from tracker.memory import tune_allocator; print(json.dumps(tune_allocator()))"


def applied(**env: str) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", CODE], env={**clean, **env}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    result: dict[str, int] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_both_settings_applied_on_glibc() -> None:
    assert applied() == {"arena_max": 2, "mmap_threshold": 128 * 1024}


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_operator_environment_wins() -> None:
    assert applied(MALLOC_ARENA_MAX="4") == {"mmap_threshold": 128 * 1024}
    assert applied(MALLOC_ARENA_MAX="4", MALLOC_MMAP_THRESHOLD_="65536") == {}
