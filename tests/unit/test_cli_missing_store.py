"""Commands that read the store, or change what must already be in it, refuse one that does not
exist rather than create it (the commands that add to it: tests/integration/test_cli_new_store.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracker.cli import app

NO_DSN = {"TRACKER_CLICKHOUSE_DSN": ""}


@pytest.mark.parametrize(
    "command",
    [
        ["key", "list"],
        ["gateway", "list"],
        ["registry", "history"],
        ["registry", "show"],
        ["share", "--from", "2026-01-01"],
        # Found in review (2026-11-26): these made a store to say it held no such gateway or
        # key, or re-classified the nothing in a store they had just made.
        ["gateway", "revoke", "gw-x"],
        ["gateway", "rotate", "gw-x"],
        ["key", "revoke", "k-x"],
        ["reclassify", "--from", "2026-01", "--to", "2026-02", "--author", "a"],
        # Found in review (2026-11-26): it listed every migration as pending and left a store.
        ["migrate", "--check"],
    ],
)
def test_a_mistyped_data_dir_is_refused_not_created(command: list[str], tmp_path: Path) -> None:
    """Found in review: `key list --data-dir <typo>` printed nothing, exit 0, and left a new
    empty store there (so did the other commands that only read)."""
    typo = tmp_path / "typo"
    result = CliRunner().invoke(app, [*command, "--data-dir", str(typo)], env=NO_DSN)
    assert result.exit_code == 2, result.output
    assert f"no store at {typo / 'chdb'}" in result.output and "--data-dir" in result.output
    assert not typo.exists()


def test_a_data_dir_that_is_a_file_is_named_so(tmp_path: Path) -> None:
    """Found in review (2026-11-26): `--data-dir` naming a file answered "cannot open
    ClickHouse at ...: [Errno 17] File exists". (A process of its own: the command's error
    handling is in `tracker.cli.main`; the engine is never opened.)"""
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "migrate", "--data-dir", str(afile)],
        env={**os.environ, **NO_DSN}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{afile} is a file, not a directory" in done.stderr, done.stderr
    assert "Errno" not in done.stderr and "Traceback" not in done.stderr
    assert afile.read_text() == "not a directory"
    # A file further up: named, not the path being made (found in review).
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "migrate", "--data-dir", str(afile / "sub")],
        env={**os.environ, **NO_DSN}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f": {afile} is a file, not a directory" in done.stderr, done.stderr


def test_a_registry_date_out_of_range_names_the_reason(tmp_path: Path) -> None:
    """Found in review (2026-11-26): `registry show --at 2026-13-01` said the value did not
    match the date formats; it does, its month is out of range."""
    result = CliRunner().invoke(
        app, ["registry", "show", "--at", "2026-13-01", "--data-dir", str(tmp_path / "x")],
        env={**NO_DSN, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "month must be in 1..12" in result.output, result.output
    assert "does not match the formats" not in result.output
    # Found in review of that fix: a reading that took a string of digits for Unix time.
    result = CliRunner().invoke(
        app, ["registry", "show", "--at", "1767225600", "--data-dir", str(tmp_path / "x")],
        env={**NO_DSN, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2 and "give a date or a date-time" in result.output, result.output
    # What the earlier formats read is still read (past the date: no store there).
    for given in ("2026-1-1", "2026-01-01T09:30:00+05:30", "2026-01-01T00:00:00Z", "2026-01-01"):
        result = CliRunner().invoke(
            app, ["registry", "show", "--at", given, "--data-dir", str(tmp_path / "x")],
            env=NO_DSN,
        )  # fmt: skip
        assert result.exit_code == 2 and "no store at" in result.output, (given, result.output)
