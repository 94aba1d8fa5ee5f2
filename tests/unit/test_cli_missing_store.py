"""Commands that only read the store refuse one that does not exist, rather than create it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracker.cli import app


@pytest.mark.parametrize(
    "command",
    [
        ["key", "list"],
        ["gateway", "list"],
        ["registry", "history"],
        ["registry", "show"],
        ["share", "--from", "2026-01-01"],
    ],
)
def test_a_mistyped_data_dir_is_refused_not_created(command: list[str], tmp_path: Path) -> None:
    """Found in review: `key list --data-dir <typo>` printed nothing, exit 0, and left a new
    empty store there (so did the other commands that only read)."""
    typo = tmp_path / "typo"
    result = CliRunner().invoke(app, [*command, "--data-dir", str(typo)],
                                env={"TRACKER_CLICKHOUSE_DSN": ""})  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"no store at {typo / 'chdb'}" in result.output and "--data-dir" in result.output
    assert not typo.exists()
