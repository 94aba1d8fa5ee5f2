"""The watcher follows a file by its inode only while it holds its checkpoint's bytes, warns
when a log still being written leaves the directory (rename rotation compressed at once), and a
one-shot import re-checks a file taken as finished before reading its unterminated last line.
Each was found in review; an in-memory sender stands in for the server."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson

from collector.adapters.common import Context
from collector.imports import (
    SETTLE_SECONDS,
    Checkpoints,
    FileReport,
    Importer,
    Sender,
    watch,
)

CTX = Context(default_agency="in-mohfw", agencies=frozenset({"in-mohfw"}))
CREATED = int(time.time()) - 3600


class FakeSender:
    """Keeps what it is sent; `hook(call, records)` runs before each send is acknowledged."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.calls = 0
        self.hook: Callable[[int, list[bytes]], None] | None = None

    def send(self, records: list[bytes]) -> dict[str, Any]:
        self.calls += 1
        if self.hook is not None:
            self.hook(self.calls, records)
        self.sent.extend(orjson.loads(r) for r in records)
        return {"accepted": len(records), "rejected": 0, "errors": []}

    def ids(self) -> list[str]:
        return sorted(str(r["record_id"]) for r in self.sent)


def line(i: int) -> str:
    return json.dumps({"request_id": f"req-{i}", "created": CREATED, "model": "gpt-4o",
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1}}) + "\n"  # fmt: skip


def importer(tmp_path: Path, sender: FakeSender, batch_size: int = 1000) -> Importer:
    checkpoints = Checkpoints(tmp_path / "cp.json", server="s", gateway="g")
    return Importer(cast(Sender, sender), checkpoints, CTX, batch_size=batch_size)


class Watching:
    """`watch` on a thread, polling every 0.1 s, until `stop()`."""

    def __init__(self, directory: Path, imp: Importer) -> None:
        self.reports: list[FileReport] = []
        self.polls = 0
        self._stop = threading.Event()

        def counted(report: FileReport) -> None:
            self.reports.append(report)

        self._thread = threading.Thread(target=watch, args=(directory, imp, self._stop, counted),
                                        kwargs={"interval": 0.1}, daemon=True)  # fmt: skip
        self._thread.start()

    def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    def stop(self) -> list[FileReport]:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()
        return self.reports


def test_a_checkpointed_inode_holding_other_bytes_now_is_not_read(tmp_path: Path) -> None:
    # ext4 gives a removed file's inode to the next new file at once; the same state is made
    # here for sure: the checkpointed file renamed to a name no pattern matches, then rewritten
    # in place (same inode, other bytes), as `requests.jsonl.bak` was in review.
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "old.jsonl"
    old.write_text("".join(line(i) for i in range(3)))
    sender = FakeSender()
    imp = importer(tmp_path, sender)
    assert imp.import_file(old, final=False).accepted == 3
    bak = logs / "requests.jsonl.bak"
    old.rename(bak)
    ino = bak.stat().st_ino
    with bak.open("w") as f:  # truncated and written: the same inode
        f.write("".join(line(100 + i) for i in range(5)) + "free text, not JSON\n")
    assert bak.stat().st_ino == ino
    w = Watching(logs, importer(tmp_path, sender))
    time.sleep(1.0)
    reports = w.stop()
    assert sender.ids() == ["req-0", "req-1", "req-2"]
    assert [r.path for r in reports] == []


def test_an_empty_files_checkpoint_does_not_follow_its_inode_into_another_file(
    tmp_path: Path,
) -> None:
    # A checkpoint at offset 0 fingerprints no byte: its inode, found under another name when
    # the watch starts, may be any file's by now.
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "old.jsonl"
    old.write_text("")
    sender = FakeSender()
    imp = importer(tmp_path, sender)
    imp.import_file(old, final=False)
    bak = logs / "notes.txt"
    old.rename(bak)
    bak.write_text(line(7))
    w = Watching(logs, importer(tmp_path, sender))
    time.sleep(1.0)
    w.stop()
    assert sender.ids() == []


def test_a_log_renamed_while_watched_is_still_followed(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("".join(line(i) for i in range(3)))
    sender = FakeSender()
    w = Watching(logs, importer(tmp_path, sender))
    w.until(lambda: len(sender.sent) == 3)
    with log.open("a") as f:
        f.write(line(3))
    log.rename(logs / "app.log.1")
    with (logs / "app.log.1").open("a") as f:  # the writer has not reopened its log yet
        f.write(line(4))
    log.write_text(line(5))
    w.until(lambda: len(sender.sent) == 6)
    time.sleep(0.5)
    reports = w.stop()
    assert sender.ids() == [f"req-{i}" for i in range(6)]
    assert not [r for r in reports if r.warnings]


def test_a_log_rotated_and_compressed_at_once_is_warned_about(tmp_path: Path) -> None:
    # logrotate's `compress` without `delaycompress`: app.log renamed app.log.1, a new app.log
    # created, app.log.1 compressed and removed, all between two polls. The lines written after
    # the last poll went with it.
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("".join(line(i) for i in range(3)))
    sender = FakeSender()
    w = Watching(logs, importer(tmp_path, sender))
    w.until(lambda: len(sender.sent) == 3)
    with log.open("a") as f:
        f.write(line(3) + line(4))
    rotated = logs / "app.log.1"
    log.rename(rotated)
    log.write_text(line(5))  # before the removal: it cannot take the rotated file's inode
    with rotated.open("rb") as i, gzip.open(logs / "app.log.1.gz", "wb") as o:
        o.write(i.read())
    rotated.unlink()
    w.until(lambda: any(r.warnings for r in w.reports) and "req-5" in sender.ids())
    time.sleep(0.3)
    reports = w.stop()
    warned = [r for r in reports if r.warnings]
    assert len(warned) == 1, [r.warnings for r in warned]
    assert warned[0].unread == 1
    # Named as it was last read: app.log, or app.log.1 if a poll came between the rename and
    # the removal (then lines 3 and 4 were read from it, and it left still being written).
    assert Path(warned[0].path).name in ("app.log", "app.log.1")
    assert "could not be read" in warned[0].warnings[0]
    assert "delaycompress" in warned[0].warnings[0]


def test_a_quiet_file_removed_is_not_warned_about(tmp_path: Path) -> None:
    # An imported file left unchanged (an old rotated log that `rotate N` removes, an export
    # deleted once imported) is not a live log losing lines.
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "old.jsonl"
    old.write_text("".join(line(i) for i in range(3)))
    quiet = time.time() - SETTLE_SECONDS - 60
    os.utime(old, (quiet, quiet))
    sender = FakeSender()
    w = Watching(logs, importer(tmp_path, sender))
    w.until(lambda: len(sender.sent) == 3)
    old.unlink()
    time.sleep(0.6)
    reports = w.stop()
    assert not [r for r in reports if r.warnings or r.unread]


def _written_while_read(
    path: Path, half: str, rest: str
) -> tuple[FileReport, FileReport, FakeSender]:
    """A file left unchanged long enough to be taken as finished is imported one line a
    batch; its writer appends `half` (a line begun, not finished) while the first batch is
    sent. Then `rest` finishes that line and the file is imported again: (first report,
    second report, the sender)."""
    _quiet(path)
    sender = FakeSender()

    def resumed(call: int, records: list[bytes]) -> None:
        if call == 1:
            with path.open("a") as out:
                out.write(half)

    sender.hook = resumed
    first = importer(path.parent, sender, batch_size=1).import_file(path)
    sender.hook = None
    with path.open("a") as out:
        out.write(rest)
    second = importer(path.parent, sender, batch_size=1).import_file(path)
    return first, second, sender


def _quiet(path: Path) -> None:
    then = time.time() - SETTLE_SECONDS - 90
    os.utime(path, (then, then))


def test_a_one_shot_import_does_not_read_a_line_written_while_it_reads(tmp_path: Path) -> None:
    # The file was left unchanged long enough to be taken as finished when opened; its writer
    # resumed while it was read, mid-line ("120" half written as "1").
    path = tmp_path / "usage.csv"
    hdr = "agency_id,occurred_at,provider,model,input_tokens,output_tokens\n"
    rows = [f"in-mohfw,2026-11-01T00:00:0{i}Z,openai,gpt-4o,10,1\n" for i in range(4)]
    path.write_text(hdr + "".join(rows))
    half = "in-mohfw,2026-11-01T00:00:09Z,openai,gpt-4o,1234,1"
    first, second, sender = _written_while_read(path, half, "20\n")
    assert first.accepted == 4
    assert first.unfinished == 6
    assert [e.line for e in first.errors] == [6]
    assert "changed 0 s ago" in first.errors[0].reason
    assert second.resumed_from > 0
    assert second.accepted == 1
    late = [r for r in sender.sent if r["occurred_at"].startswith("2026-11-01T00:00:09")]
    assert len(late) == 1
    assert late[0]["output_tokens"] == 120


def test_a_jsonl_line_written_while_read_is_left_too(tmp_path: Path) -> None:
    path = tmp_path / "app.jsonl"
    path.write_text("".join(line(i) for i in range(3)))
    whole = line(3)
    first, second, sender = _written_while_read(path, whole[:20], whole[20:])
    assert (first.accepted, first.rejected, first.unfinished) == (3, 0, 4)
    assert (second.accepted, second.rejected, second.unfinished) == (1, 0, None)
    assert sender.ids() == [f"req-{i}" for i in range(4)]


def test_a_csv_quote_opened_while_read_is_left_not_stopped_at(tmp_path: Path) -> None:
    # A row whose quoted cell is open at the end of a finished file stops the file (exit 2);
    # one the writer began while the file was read is still being written: left, reported.
    path = tmp_path / "usage.csv"
    hdr = "agency_id,occurred_at,provider,model,input_tokens,output_tokens,note\n"
    rows = [f"in-mohfw,2026-11-01T00:00:0{i}Z,openai,gpt-4o,10,1,x\n" for i in range(2)]
    path.write_text(hdr + "".join(rows))
    half = 'in-mohfw,2026-11-01T00:00:09Z,openai,gpt-4o,5,1,"two\nlines'
    first, second, sender = _written_while_read(path, half, '"\n')
    assert first.stopped is None
    assert (first.accepted, first.unfinished) == (2, 4)
    assert (second.accepted, second.stopped, second.unfinished) == (1, None, None)
    assert len(sender.sent) == 3
