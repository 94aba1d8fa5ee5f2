"""A bounded on-disk spool in front of Kafka: nothing accepted is lost while the broker is down.

When Kafka does not acknowledge a batch, its messages are appended to the spool (fsync'ed)
before the HTTP answer, so the 2xx still means "stored". A drainer thread re-sends spooled
messages in order once Kafka answers, and only then moves the persisted read position. When the
spool is full the collector answers 503 with Retry-After and stores nothing.

Format: numbered segment files of entries [u32 length][u32 crc32][u16 key length][key][value];
`position` holds (segment, offset) of the first entry not yet acknowledged by Kafka. A torn
entry at the tail (crash while appending, before the HTTP answer) fails its CRC and is cut
when the spool is next opened: its batch was never acknowledged to the gateway, which retries
it, and later appends must not land behind it.

A message Kafka refuses for good is moved out of the drain's way into `quarantine/` (see
`Spool.quarantine`): its value byte for byte, and beside it a JSON file saying why, where it
was and what it holds. Nothing there is sent again or deleted by the collector; it is not
counted against the spool's maximum. `tracker spool resend` re-sends them once the cause is
fixed (collector.quarantine).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">IIH")
SEGMENT_BYTES = 64 * 1024 * 1024


def quarantine_dir(spool_dir: Path) -> Path:
    """Where a spool's drain puts the messages Kafka refused for good (collector.quarantine
    re-sends them)."""
    return spool_dir / "quarantine"


class SpoolFull(RuntimeError):
    """The spool holds its maximum; the caller must refuse (503) rather than drop."""


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = (directory / "lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RuntimeError(f"spool {directory} is in use by another collector") from exc
        self._lock = threading.Lock()
        segments = self._segments()
        self._write_segment = segments[-1] if segments else 1
        self._repair_tail()

    def _repair_tail(self) -> None:
        """Cut the write segment back to its last whole entry. A crash mid-append leaves a torn
        entry there (its batch was never acknowledged to the gateway); entries appended after
        it would sit behind it, unread for ever, though their batches were acknowledged."""
        path = self._path(self._write_segment)
        if not path.exists():
            return
        data = path.read_bytes()
        pos = max((after for after, _, _ in _whole_entries(data, 0)), default=0)
        if pos < len(data):
            log.warning("spool %s: torn entry at %d cut (%d bytes)", path, pos, len(data) - pos)
            with path.open("r+b") as f:
                f.truncate(pos)
                f.flush()
                os.fsync(f.fileno())

    def _segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("seg-*.log"))

    def _path(self, segment: int) -> Path:
        return self.directory / f"seg-{segment:08d}.log"

    def _position(self) -> tuple[int, int]:
        try:
            segment, offset = (self.directory / "position").read_text().split()
            return int(segment), int(offset)
        except (FileNotFoundError, ValueError):
            segments = self._segments()
            return (segments[0] if segments else self._write_segment), 0

    def _save_position(self, segment: int, offset: int) -> None:
        tmp = self.directory / "position.tmp"
        tmp.write_text(f"{segment} {offset}")
        os.replace(tmp, self.directory / "position")

    def pending_bytes(self) -> int:
        segment, offset = self._position()
        total = 0
        for s in self._segments():
            if s >= segment:
                size = self._path(s).stat().st_size
                total += size - offset if s == segment else size
        return total

    def empty(self) -> bool:
        return self.pending_bytes() == 0

    def append(self, messages: list[tuple[bytes, bytes]]) -> None:
        """Durably append (key, value) messages, all or none."""
        blob = b"".join(
            _HEADER.pack(len(key) + len(value), zlib.crc32(key + value), len(key)) + key + value
            for key, value in messages
        )
        with self._lock:
            if self.pending_bytes() + len(blob) > self.max_bytes:
                raise SpoolFull(f"spool holds {self.max_bytes} bytes")
            path = self._path(self._write_segment)
            if path.exists() and path.stat().st_size + len(blob) > SEGMENT_BYTES:
                self._write_segment += 1
                path = self._path(self._write_segment)
            with path.open("ab") as f:
                start = f.tell()
                try:
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    # E.g. the disk filled mid-write: cut the partial entry, or later appends
                    # would land behind it (see _repair_tail); the caller refuses the batch.
                    f.truncate(start)
                    raise

    def entries(self) -> Iterator[tuple[int, int, bytes, bytes]]:
        """(segment, offset after entry, key, value) from the read position, in order."""
        segment, offset = self._position()
        for s in self._segments():
            if s < segment:
                continue
            data = self._path(s).read_bytes()
            pos = offset if s == segment else 0
            for after, body, key_len in _whole_entries(data, pos):
                pos = after
                yield s, pos, body[:key_len], body[key_len:]
            if pos < len(data):
                log.warning("spool %s: torn entry at %d skipped", s, pos)

    def acknowledge(self, segment: int, offset: int) -> None:
        """Everything up to (segment, offset) reached Kafka: move on, drop finished segments."""
        with self._lock:
            self._save_position(segment, offset)
            for s in self._segments():
                done = s < segment or (s == segment and offset >= self._path(s).stat().st_size)
                if done and s != self._write_segment:
                    self._path(s).unlink()

    @property
    def quarantine_dir(self) -> Path:
        return quarantine_dir(self.directory)

    def quarantine(
        self, segment: int, offset: int, key: bytes, value: bytes, about: dict[str, Any]
    ) -> Path:
        """Move the first pending entry, ending at (segment, offset), out of the drain's way:
        its value is written byte for byte to quarantine/<name>.value and `about` (why), with
        its key, size and place, to <name>.json, both fsync'ed; only then does the read
        position move past it. Returns the .value file."""
        folder = self.quarantine_dir
        folder.mkdir(exist_ok=True)
        now = time.time_ns()
        stamp = datetime.fromtimestamp(now / 1e9, UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{now % 1_000_000_000:09d}-seg{segment:08d}-{offset}"
        described = {
            **about,
            "value_file": f"{name}.value",
            "bytes": len(value),
            "key": key.decode("utf-8", "backslashreplace"),
            "spool_segment": segment,
            "spool_offset_after": offset,
            "quarantined_at": datetime.fromtimestamp(now / 1e9, UTC).isoformat(),
        }
        _write_durably(folder / f"{name}.value", value)
        _write_durably(folder / f"{name}.json", json.dumps(described, indent=1).encode() + b"\n")
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.acknowledge(segment, offset)
        return folder / f"{name}.value"

    def close(self) -> None:
        self._lock_file.close()


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _whole_entries(data: bytes, pos: int) -> Iterator[tuple[int, bytes, int]]:
    """(offset after the entry, body, key length) of each whole entry of a segment from `pos`,
    stopping at the first torn one (short or failing its CRC)."""
    while pos + _HEADER.size <= len(data):
        length, crc, key_len = _HEADER.unpack_from(data, pos)
        body = data[pos + _HEADER.size : pos + _HEADER.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            return
        pos += _HEADER.size + length
        yield pos, body, key_len
