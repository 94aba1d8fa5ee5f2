"""What a kill -9 can leave inside the embedded engine, and the repair that survives it.

The engine records a part's deduplication token in its log before it makes the part visible
(MergeTreeSink: deduplication_log->addPart, then renameTempPartAndAdd). A crash between the two
leaves the token on disk and the part in a temporary directory that the next start-up deletes.
This test builds that state for real: a process lands batch B's rollup steps and dies before the
ledger; with no engine running, two of B's part directories are removed (what start-up does to
an uncommitted temporary part); a new process then finds the tokens without their parts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


def phase(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.engine_store", *args],
        cwd=ROOT, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def month(rows: list[list[int]], m: int) -> int:
    return next((n for mm, n, _ in rows if mm == m), 0)


def test_a_rollup_part_lost_with_its_token_kept_is_restored_by_the_repair(tmp_path: Path) -> None:
    """With another member's batch in flight in the month that lost its part, so the check
    must tell the two apart."""
    landed = phase("land", str(tmp_path))
    batch = landed["batch"]
    store = tmp_path / "chdb"
    for lost in landed["lost"]:
        parts = lost["parts"]
        assert len(parts) == 2, parts  # A's part, then B's
        part_dir = Path(lost["path"]) / parts[-1]
        if not part_dir.is_absolute():
            part_dir = store / part_dir
        assert part_dir.is_dir(), part_dir
        shutil.rmtree(part_dir)

    healed = phase("repair", str(tmp_path), str(batch))
    # The engine's side: B's March rows stay missing from usage_hourly after the same-token
    # re-run (A's 32 March records and C's 10; B has 62 there), and B's daily rows are all
    # missing (C's daily step has not run).
    before = landed["by_month"]
    raw = before["raw"]
    assert month(healed["after_rerun"]["hourly"], 202503) == 32 + 10
    assert month(raw, 202503) == 32 + 62 + 10
    assert sum(n for _, n, _ in healed["after_rerun"]["daily"]) == 150  # A's only

    # The repair (B's and C's batches): every month of both rollups equals usage_raw again.
    assert healed["repaired"] == 2
    assert healed["healed"]["raw"] == raw
    assert healed["healed"]["hourly"] == raw
    assert healed["healed"]["daily"] == raw
    assert sum(n for _, n, _ in raw) == 310
    assert healed["again"] == 0
    assert healed["redelivered"] == [0, 150]  # B's records, read again after the restart
    assert healed["final"] == healed["healed"]
