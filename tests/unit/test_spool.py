"""The collector's on-disk spool: torn entries never hide acknowledged ones behind them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collector.spool import Spool


def drain(spool: Spool) -> list[bytes]:
    seen = [(s, pos, value) for s, pos, _, value in spool.entries()]
    if seen:
        spool.acknowledge(seen[-1][0], seen[-1][1])
    return [value for _, _, value in seen]


def test_a_torn_tail_is_cut_on_reopen_so_later_appends_are_read(tmp_path: Path) -> None:
    # Found in review: after a crash mid-append the collector appended behind the torn bytes;
    # the drainer stopped at them, so batches acknowledged to gateways never reached Kafka.
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"k", b"batch-1")])
    segment = next(tmp_path.glob("seg-*.log"))
    with segment.open("ab") as f:
        f.write(b"\x00\x00\x00\x40\x00\x00")  # half a header: the crash
    spool.close()
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    reopened.append([(b"k", b"batch-2")])
    assert drain(reopened) == [b"batch-1", b"batch-2"]
    assert reopened.empty()


def test_a_failed_append_leaves_no_partial_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append([(b"k", b"batch-1")])
    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("collector.spool.os.fsync", disk_full)
    with pytest.raises(OSError):
        spool.append([(b"k", b"batch-lost")])
    monkeypatch.setattr("collector.spool.os.fsync", real_fsync)
    spool.append([(b"k", b"batch-2")])
    assert drain(spool) == [b"batch-1", b"batch-2"]
    assert spool.empty()
