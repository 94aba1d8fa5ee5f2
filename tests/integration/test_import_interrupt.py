"""Ctrl-C during `tracker import`: what the file being read had sent before (its checkpoint is
past those lines) is reported and counted, one-shot and `--watch`, against the embedded app
served by uvicorn. Found in review: the report was dropped, so the refusals of batches already
checkpointed were never shown, and the watch exited 0 after them."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from collector.adapters.common import Context
from collector.imports import Checkpoints, Importer, ImportInterrupted, Sender
from tests.integration.test_collector_support import (
    SINGLE_AGENCY,
    Keys,
    raw_count,
)
from tracker.cli import app as cli
from tracker.clickhouse import ClientPool

pytestmark = pytest.mark.integration


def _line(rid: str, tokens: int = 1) -> str:
    return json.dumps({"request_id": rid, "created": int(time.time()) - 3600, "model": "gpt-4o",
                       "usage": {"prompt_tokens": tokens, "completion_tokens": 1}}) + "\n"  # fmt: skip


def _log(directory: Path, prefix: str) -> Path:
    """Six lines, the second refused by the server (negative tokens), dated as finished."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "a.jsonl"
    path.write_text(_line(f"{prefix}-0") + _line(f"{prefix}-1", tokens=-5)
                    + "".join(_line(f"{prefix}-{i}") for i in range(2, 6)))  # fmt: skip
    when = time.time() - 60
    os.utime(path, (when, when))
    return path


@pytest.fixture()
def ctrl_c_on_second_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the second batch is on the wire (the first landed and is checkpointed);
    `monkeypatch.undo()` ends it."""
    _ctrl_c_on_second_send(monkeypatch)


def _ctrl_c_on_second_send(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Sender.send
    calls = 0

    def send(self: Sender, records: list[bytes]) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return real(self, records)

    monkeypatch.setattr(Sender, "send", send)


def _import(url: str, keys: Keys, state: Path, *target: str) -> Result:
    return CliRunner().invoke(cli, ["import", "--url", url, "--key", keys.single, "--data-dir",
                                    str(state), "--batch-size", "2", *target])  # fmt: skip


def test_import_file_carries_its_report_through_ctrl_c(
    url: str, keys: Keys, tmp_path: Path, ctrl_c_on_second_send: None
) -> None:
    log = _log(tmp_path, "int-api")
    sender = Sender(url, keys.single)
    importer = Importer(sender, Checkpoints(tmp_path / "cp.json"),
                        Context(default_agency=SINGLE_AGENCY), batch_size=2)  # fmt: skip
    try:
        with pytest.raises(ImportInterrupted) as interrupted:
            importer.import_file(log)
    finally:
        sender.close()
    assert isinstance(interrupted.value, KeyboardInterrupt)  # still stops whatever ignores it
    report = interrupted.value.report
    assert (report.accepted, report.rejected) == (1, 1)
    assert [(e.line, e.field) for e in report.errors] == [(2, "input_tokens")]


def test_a_one_shot_import_reports_what_it_sent_before_ctrl_c(
    url: str,
    keys: Keys,
    pool: ClientPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ctrl_c_on_second_send: None,
) -> None:
    log = _log(tmp_path / "logs", "int-one")
    state = tmp_path / "state"
    stopped = _import(url, keys, state, str(log))
    # Exit 130 as any interrupted command; the refusal is shown (its line is past the checkpoint).
    assert stopped.exit_code == 130, stopped.output
    assert f"{log}:2: input_tokens:" in stopped.output, stopped.output
    assert f"{log}: 1 imported, 1 refused" in stopped.output
    assert "interrupted" in stopped.output
    monkeypatch.undo()

    # The next run resumes past the refused line: it never mentions it again.
    rest = _import(url, keys, state, str(log))
    assert rest.exit_code == 0, rest.output
    assert "4 imported, 0 refused" in rest.output and ":2:" not in rest.output
    assert raw_count(pool, keys.single_id, "startsWith(record_id, 'int-one-')") == 5


def test_a_watch_stopped_mid_send_counts_what_it_sent(
    url: str, keys: Keys, tmp_path: Path, ctrl_c_on_second_send: None
) -> None:
    logs = tmp_path / "logs"
    log = _log(logs, "int-watch")
    stopped = _import(url, keys, tmp_path / "state", "--watch", str(logs), "--interval", "0.2")
    # As a watch stopped between reads: 1, a line was refused.
    assert stopped.exit_code == 1, stopped.output
    assert f"{log}:2: input_tokens:" in stopped.output, stopped.output
    assert f"{log}: 1 imported, 1 refused" in stopped.output


def test_ctrl_c_while_a_truncated_logs_copy_is_read_reports_what_the_copy_sent(
    url: str, keys: Keys, pool: ClientPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log truncated in place (copytruncate) since the last run: its earlier content's rest
    is read from the copy first. Ctrl-C while the copy's second batch is on the wire: the
    copy's first batch (one line refused) is past the copy's checkpoint, so it is reported
    with the log now or never. Found in review: the copy's part of the report was lost."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log, copy, state = logs / "a.jsonl", logs / "a.jsonl.1", tmp_path / "state"
    log.write_text(_line("int-copy-a0"))
    first = _import(url, keys, state, str(log))
    assert first.exit_code == 0 and "1 imported, 0 refused" in first.output, first.output
    with log.open("a") as f:
        f.write(_line("int-copy-b0") + _line("int-copy-b1", tokens=-5)
                + _line("int-copy-b2") + _line("int-copy-b3"))  # fmt: skip
    shutil.copyfile(log, copy)
    os.truncate(log, 0)  # in place: the inode stays, as copytruncate leaves it
    log.write_text(_line("int-copy-c0"))
    _ctrl_c_on_second_send(monkeypatch)
    stopped = _import(url, keys, state, str(log))
    assert stopped.exit_code == 130, stopped.output
    assert f"{copy}:3: input_tokens:" in stopped.output, stopped.output
    assert f"{log}: 1 imported, 1 refused" in stopped.output, stopped.output
    monkeypatch.undo()

    # The next run goes on in the copy past its checkpoint, then reads the log from its start.
    rest = _import(url, keys, state, str(log))
    assert rest.exit_code == 0, rest.output
    assert "3 imported, 0 refused" in rest.output and ":3:" not in rest.output, rest.output
    assert raw_count(pool, keys.single_id, "startsWith(record_id, 'int-copy-')") == 5
