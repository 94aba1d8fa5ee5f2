"""Commands that add to the store create it when it does not exist, and say so. Run as
processes: the embedded engine opens one store per process, and this one has its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _tracker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker", *args], capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TRACKER_CLICKHOUSE_DSN": ""})  # fmt: skip


def test_a_command_that_adds_says_when_it_creates_the_store(tmp_path: Path) -> None:
    """`gateway add` before the first `tracker up` is how an installation begins, so it creates
    the store; a mistyped --data-dir is then seen at once, not when the key it issued is refused
    by the real store's servers (found in review: it said nothing)."""
    new = tmp_path / "new"
    first = _tracker("gateway", "add", "gw-a", "--agency", "in-sbi", "--data-dir", str(new))
    assert first.returncode == 0, first.stderr
    said = f"no store at {new / 'chdb'} yet (--data-dir / TRACKER_DATA_DIR): creating one"
    assert said in first.stderr
    second = _tracker("key", "add", "k-a", "--role", "auditor", "--data-dir", str(new))
    assert second.returncode == 0, second.stderr
    assert "creating one" not in second.stderr and "key (shown once" in second.stdout
