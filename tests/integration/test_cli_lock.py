"""While `tracker up` holds the embedded store, a state-changing command refuses with exit
code 2 and says why, instead of a trace (chdb: one process per data directory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.ports import tracker_up


def test_gateway_add_refuses_while_up_holds_the_store(tmp_path: Path) -> None:
    with tracker_up(tmp_path):
        add = subprocess.run(
            [sys.executable, "-m", "tracker", "gateway", "add", "gw-x", "--agency", "in-sbi",
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert add.returncode == 2
        assert "held by another process" in add.stderr
        assert "Traceback" not in add.stderr
        # The engine's own lock error is not shown beside the plain line (found in review).
        assert "Cannot lock file" not in add.stderr, add.stderr
