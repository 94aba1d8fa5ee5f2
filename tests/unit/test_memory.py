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


PIPELINE_PROCESS = """
import json, sys, tempfile
from tracker.cli.wiring import open_core, run_pipeline  # noqa: F401 (what it imports)
from tracker.settings import CommonSettings
core = open_core(CommonSettings(data_dir=tempfile.mkdtemp()))  # migrations insert rows
core.pool.get().insert("landed_batches", [[1, 0]], column_names=["batch_id", "rows"])
print(json.dumps(sorted(m for m in ("pandas", "fastapi", "starlette", "api.app", "collector.app")
                        if m in sys.modules)))
"""


def test_the_pipeline_process_loads_neither_pandas_nor_the_web_apps() -> None:
    """What `tracker pipeline` imports and opens: pandas (clickhouse-connect looks for it on
    every insert) and the API and collector apps (FastAPI, pyarrow) would add ~60 MB to it."""
    out = subprocess.run(
        [sys.executable, "-c", PIPELINE_PROCESS], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
