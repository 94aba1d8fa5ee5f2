"""Commands that read the store, or change what must already be in it, refuse one that does not
exist rather than create it (the commands that add to it: tests/integration/test_cli_new_store.py).
"""

from __future__ import annotations

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
