"""`tracker import`: JSONL access logs and CSV exports -> the running server's `/v1/records`.

The importer never opens ClickHouse: in the embedded default `tracker up` holds the chdb path
(one process per path), and in scale-out the collector is the only way in. It maps each line
locally, sends batches over HTTP with the gateway's key (the same validation, gateway identity
and idempotency as a push), and reports every refused line as file:line, field and reason.

Resume: after each acknowledged batch the byte offset reached in the file is saved under
data_dir/import/checkpoints.json with the file's fingerprint (device, inode, a hash of its
first bytes and one of the bytes just before the offset), per server and gateway: importing the
same file into another server, or with another gateway's key, starts at its first byte. A file
seen again resumes from its offset when the fingerprint matches, it is at least that long and
the offset still ends a line (an appended log continues); a replaced, rewritten in place or
truncated file starts over. A file renamed since (a rotated log) is found by its device and
inode and resumes too. The fingerprint is always taken from the open file, so a file renamed
while it is read is read to its end. A crash between a send and its checkpoint resends at most
one batch; record ids make that harmless.

Rotation by copy and truncate (logrotate's `copytruncate`: app.log copied to app.log.1, then
app.log truncated in place) is found by the file's own checkpoint: the same inode, now shorter
than its offset or with other first bytes. The rest of its earlier content is read first from
the copy beside it (a file holding the bytes the checkpoint fingerprints), from that offset on;
then the file from its first byte. A copy read on its own (named to match the patterns, or
`tracker import app.log.1`) resumes at the truncated file's offset the same way, so no line is
sent twice. The watcher warns, naming the file and the bytes, when no copy is found.

The last line of a file may lack its line break (RFC 4180 §2.2 and JSON Lines both make the
final one optional). A one-shot import reads the file as finished, that line included, and the
checkpoint then ends past it, once the file has been left unchanged for SETTLE_SECONDS; before
that it leaves the line unread and reports it (its writer may be mid-line: found in review, a
cron import read half a line as finished). The watcher never reads such a line: a buffered
writer can leave half a line for minutes, and half a CSV line can even parse, with a number cut
short (found in review). It reads it when its line break arrives, and once the file has kept
its size for `settle` seconds it reports the line as not read, so nothing is held back silently.

A CSV row that cannot be parsed (a cell over CSV_FIELD_LIMIT characters, a stray carriage
return, bytes that are not UTF-8) is refused as a line error and the rows beside it are read.
A file whose lines end with CR alone stops at its header. A quoted cell that is never
closed swallows every line after it, so the file cannot be read further: that file stops (the
rows before it are imported) with a message naming the line, `FileReport.stopped`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import fcntl
import fnmatch
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO, Final

import httpx
import orjson
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from collector.adapters import csv_export, openai_log
from collector.adapters.common import Context, Mapped, Rejected, run
from collector.signing import sign

HEAD_BYTES: Final = 4096
PATTERNS: Final = ("*.jsonl", "*.ndjson", "*.log", "*.csv")
# Seconds a watched file must keep its size before an unterminated last line is reported, and
# a file must be left unchanged before a one-shot import reads such a line as finished.
SETTLE_SECONDS: Final = 30.0
MAX_ERRORS_KEPT: Final = 1_000  # refusals a report lists; the rest are counted
# The longest CSV cell read, in characters (csv.field_size_limit; Python's default is 128 Ki,
# and a cell past it was a traceback). No field the contract reads is longer than 256
# characters, but columns the importer ignores may carry free text (a note, a prompt of a long-
# context call runs to hundreds of KB) and their rows must still import; 1 Mi keeps those while
# bounding what one cell holds in memory and how far a quote never closed can swallow the lines
# after it before it is caught. A row with a longer cell is refused as a line error.
CSV_FIELD_LIMIT: Final = 1 << 20
# The longest line read, in bytes: a record is a few KB, but an access log's line may carry a
# request's or a response's body; the push API's default body limit is as large.
MAX_LINE_BYTES: Final = 16 * 1024 * 1024
_TOO_LONG: Final = (
    f"longer than {MAX_LINE_BYTES:,} bytes, the importer's limit for a line: not read (a "
    "record is a few KB; is this a whole export on one line?)"
)
CHECKPOINT_VERSION: Final = 2


def redact_url(url: str) -> str:
    """`url` as it may be printed: without a user:password part."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<unparseable URL>"
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url


def redact_text(text: str, url: str) -> str:
    """`text` (an error message) with `url`'s user:password part taken out wherever it shows."""
    try:
        userinfo = httpx.URL(url).userinfo.decode("ascii", "replace")
    except (httpx.InvalidURL, TypeError, ValueError):
        return text
    return text.replace(userinfo + "@", "") if userinfo else text


class ImportAborted(RuntimeError):
    """The import cannot go on (server refused the key, stayed unreachable). `report`: what
    the file being read when it happened had sent before (Importer.import_file sets it): its
    checkpoint is past those lines, so no later read reports them."""

    report: FileReport | None = None


class UnusableArguments(ImportAborted):
    """The caller's input cannot work at all: exit code 2."""


class Retryable(Exception):
    """The server asked for a retry (busy or downstream unavailable)."""


class FileStopped(Exception):
    """A file cannot be read (further): its CSV header is unusable, or a quoted cell is never
    closed. The rows before `line` are imported; the other files go on."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line


@dataclass(frozen=True)
class LineError:
    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.field}: {self.reason}"


@dataclass
class FileReport:
    path: str
    accepted: int = 0
    rejected: int = 0
    resumed_from: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    # Refusals past MAX_ERRORS_KEPT are counted, not kept: a file of millions of bad lines
    # must not hold them all in memory. `errors_incomplete`: the server listed only some.
    errors_unlisted: int = 0
    errors_incomplete: bool = False
    # Why the file was not read to its end (it cannot be opened, or cannot be parsed past a
    # line): `tracker import` exits 2, the watcher reports it and goes on.
    stopped: str | None = None
    # The line a one-shot import left unread because the file ends in the middle of it and was
    # changed within SETTLE_SECONDS (its writer may be mid-line): `tracker import` exits 1.
    unfinished: int | None = None
    # The file was truncated in place since its checkpoint (logrotate's copytruncate) at this
    # offset of its earlier content; `recovered_from`: the copy beside it that the rest of that
    # content was read from (its records are counted above, its refusals name it).
    truncated_at: int | None = None
    recovered_from: str | None = None
    # What could not be read and why (no copy of a truncated log found), and how many stretches
    # of earlier content were not read: `tracker import` exits 1, the watcher reports it.
    warnings: list[str] = field(default_factory=list)
    unread: int = 0

    def add_error(self, line: int, field_name: str, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(LineError(self.path, line, field_name, reason))
        else:
            self.errors_unlisted += 1

    def add(self, other: FileReport) -> None:
        """Count `other`, the report of a truncated file's copy read for it, in this one."""
        self.accepted += other.accepted
        self.rejected += other.rejected
        kept = other.errors[: max(0, MAX_ERRORS_KEPT - len(self.errors))]
        self.errors.extend(kept)
        self.errors_unlisted += other.errors_unlisted + len(other.errors) - len(kept)
        self.errors_incomplete |= other.errors_incomplete
        self.warnings.extend(other.warnings)
        self.unread += other.unread
        if other.stopped is not None:
            self.warnings.append(f"{other.stopped} (the copy was not read further)")
            self.unread += 1


@dataclass(frozen=True)
class Mark:
    device: int
    inode: int
    head_len: int
    head_sha256: str
    offset: int
    line: int
    # SHA-256 of the up to HEAD_BYTES bytes just before `offset`. Found in review: a file
    # rewritten in place (same inode) with the same first 4 KiB resumed at the old offset,
    # skipping rows and reading half of one. None in marks saved before it was kept: those
    # resume on their head alone, as they did.
    tail_sha256: str | None = None


_MARK_FIELDS: Final = tuple(f.name for f in fields(Mark))
_MARK_REQUIRED: Final = frozenset(_MARK_FIELDS) - {"tail_sha256"}
# (server URL, gateway id, resolved file path): what a checkpoint is kept per.
Key = tuple[str, str, str]


def _head(fd: int, length: int, start: int = 0) -> str:
    """SHA-256 of the `length` bytes at `start` of the open file `fd` (pread: its position
    stays)."""
    chunks, at = [], 0
    while at < length:
        chunk = os.pread(fd, length - at, start + at)
        if not chunk:
            break
        chunks.append(chunk)
        at += len(chunk)
    return hashlib.sha256(b"".join(chunks)).hexdigest()


def _tail(fd: int, offset: int) -> str:
    """SHA-256 of the up to HEAD_BYTES bytes of `fd` that end at `offset`."""
    length = min(HEAD_BYTES, offset)
    return _head(fd, length, offset - length)


def _continues(fd: int, size: int, mark: Mark) -> bool:
    """Whether the open file `fd` of `size` bytes is the one `mark` was saved for, with the same
    bytes before its offset, and that offset still at the end of a line (or of the file): only
    then does reading on from it give whole lines, none skipped."""
    if size < mark.offset or _head(fd, mark.head_len) != mark.head_sha256:
        return False
    if mark.tail_sha256 is not None and _tail(fd, mark.offset) != mark.tail_sha256:
        return False
    # A mark past a last line read without its line break (a finished file) is at the end of
    # the file; if more follows it now, the file was rewritten or that line continued.
    return size == mark.offset or mark.offset == 0 or os.pread(fd, 1, mark.offset - 1) == b"\n"


def _held(directory: Path, mark: Mark) -> bool:
    """Whether the file `mark` was saved for (its device and inode) is in `directory` and still
    holds the bytes the mark fingerprints."""
    for path, st in _files(directory).items():
        if (st.st_dev, st.st_ino) == (mark.device, mark.inode):
            return _continued_at(path, mark)
    return False


def _copied(directory: Path, fd: int, size: int, marks: list[Mark]) -> Mark | None:
    """The furthest of `marks` (other files', in `directory`) whose bytes the open file `fd` of
    `size` bytes holds, the file it was saved for no longer holding them: `fd` is a copy of
    that file's earlier content, read through the mark from the file itself."""
    heads: dict[int, str] = {}

    def same_head(mark: Mark) -> bool:
        if mark.head_len not in heads:
            heads[mark.head_len] = _head(fd, mark.head_len)
        return heads[mark.head_len] == mark.head_sha256

    held = [m for m in marks if same_head(m) and _continues(fd, size, m)]
    for mark in sorted(held, key=lambda m: m.offset, reverse=True):
        if not _held(directory, mark):
            return mark
    return None


def _copy_of(directory: Path, mark: Mark, skip: tuple[int, int]) -> tuple[Path, BinaryIO] | None:
    """A copy in `directory` of the content `mark` was saved for, opened: a file other than
    `skip` (device, inode: the truncated file) that holds its bytes up to the mark's offset,
    at a line's end (`_continues`); the longest if several do. A compressed copy is not read."""
    files = sorted(_files(directory).items(), key=lambda e: (-e[1].st_size, e[0].name))
    for path, st in files:
        if (st.st_dev, st.st_ino) == skip or st.st_size < mark.offset:
            continue
        try:
            f = path.open("rb")
        except OSError:
            continue
        try:
            now = os.fstat(f.fileno())
            if (now.st_dev, now.st_ino) != skip and _continues(f.fileno(), now.st_size, mark):
                return path, f
        except OSError:
            pass
        f.close()
    return None


def _mark(raw: Any) -> Mark:
    if not isinstance(raw, dict) or not (
        _MARK_REQUIRED <= set(raw) - {"server", "gateway", "path"} <= set(_MARK_FIELDS)
    ):
        raise ValueError(f"not a checkpoint: {str(raw)[:80]}")
    mark = Mark(**{k: raw[k] for k in _MARK_FIELDS if k in raw})
    numbers = (mark.device, mark.inode, mark.head_len, mark.offset, mark.line)
    if (
        not all(type(n) is int and n >= 0 for n in numbers)
        # Read as a length and a seek: 2**62 was a MemoryError, -3 an OSError, each a
        # traceback instead of "damaged" (found in review).
        or mark.head_len > HEAD_BYTES
        or not isinstance(mark.head_sha256, str)
        or not isinstance(mark.tail_sha256, str | None)
    ):
        raise ValueError(f"not a checkpoint: {str(raw)[:80]}")
    return mark


@contextlib.contextmanager
def _opened(source: Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, Path):
        with source.open("rb") as f:
            yield f
    else:
        yield source


class Checkpoints:
    """Byte offsets per file, per server and gateway, saved atomically (a temporary file, then a
    rename) under a lock, merged with what other processes saved meanwhile.

    Kept per (server, gateway): a file imported into one server, or by one gateway, has not
    been sent to another; keyed by path alone, a second import read nothing and said "resumed".
    Files written before (version 1: {path: mark}) stay readable: their marks load under the
    empty server and gateway, which the command never uses, so after an upgrade each file is
    read once more from its first byte. Resuming from them could not be right in general: they
    do not say which server got the file, and taking them for the first server that asks would
    skip the file for any other. Reading again costs a resend, which record ids make count once.
    """

    def __init__(self, path: Path, *, server: str = "", gateway: str = "") -> None:
        self.path = path
        self.scope = (server, gateway)
        self._lock = threading.Lock()
        self._all: dict[Key, Mark] = self._load()
        self._changed: set[Key] = set()  # saved or forgotten here since the file was read
        self._from_start: set[Key] = set()  # forgotten: not resumed from a copied file's mark
        self._lock_path = path.with_name(path.name + ".lock")
        # Checked before any file is read or sent (found in review: a --data-dir naming a file
        # was a traceback at the first save, after a batch had been sent).
        with self._saving():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_path.open("a").close()

    @contextlib.contextmanager
    def _saving(self) -> Iterator[None]:
        """An OSError while saving (a parent that is a file, no permission, a full disk) as
        UnusableArguments: exit 2 with the reason, never a traceback. No import goes on
        without its checkpoint: each run would send everything again."""
        try:
            yield
        except OSError as exc:
            raise UnusableArguments(
                f"{self.path}: checkpoints cannot be saved there ({exc.strerror or exc}): "
                "give a --data-dir that is a writable directory"
            ) from exc

    def _load(self) -> dict[Key, Mark]:
        try:
            if not self.path.exists():
                return {}
            raw_bytes = self.path.read_bytes()
        except OSError as exc:  # a directory under the name, no permission
            raise UnusableArguments(
                f"{self.path}: the checkpoint file cannot be read ({exc.strerror or exc})"
            ) from exc
        try:
            raw = orjson.loads(raw_bytes)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            if raw.get("version") == CHECKPOINT_VERSION:
                return {(str(e["server"]), str(e["gateway"]), str(e["path"])): _mark(e)
                        for e in raw["marks"]}  # fmt: skip
            return {("", "", str(k)): _mark(v) for k, v in raw.items()}  # version 1
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise UnusableArguments(
                f"{self.path}: the checkpoint file is damaged ({str(exc)[:120]}); move it "
                "away to import every file from its start"
            ) from exc

    def _key(self, path: Path) -> Key:
        return (*self.scope, str(path.resolve()))

    def marks_in(self, directory: Path) -> list[tuple[Path, Mark]]:
        """This scope's marks of files that were in `directory` when they were saved."""
        where = directory.resolve()
        with self._lock:
            return [(Path(k[2]), m) for k, m in self._all.items()
                    if k[:2] == self.scope and Path(k[2]).parent == where]  # fmt: skip

    def resume(self, path: Path, f: BinaryIO | None = None) -> tuple[int, int]:
        """(offset, line number) to continue from; (0, 0) for a new or changed file (see
        `_continues`). `f`: the file open (its descriptor is what is compared, whatever `path`
        names by now).

        A mark saved under another name counts when it is this very file (device, inode, head)
        and the greatest offset wins: a rotated log (app.log renamed app.log.1) is continued
        where app.log was left, and never read twice. Failing that, a file in the same directory
        whose mark this one holds the bytes of, where that file no longer does (truncated in
        place, or gone), counts too: this is its copy (logrotate's copytruncate copies app.log
        to app.log.1, then truncates app.log), whose lines up to the mark were read from it.
        Found in review: such a copy named to match the patterns (app-1.log), or given an inode
        a followed file had left, was read from its first byte, every line sent again."""
        if f is None:
            try:
                with path.open("rb") as opened:
                    return self.resume(path, opened)
            except OSError:
                return 0, 0
        fd = f.fileno()
        st = os.fstat(fd)
        key = self._key(path)
        directory = Path(key[2]).parent
        with self._lock:
            own = self._all.get(key)
            marks = [m for k, m in self._all.items() if k[:2] == self.scope
                     and (m.device, m.inode) == (st.st_dev, st.st_ino)]  # fmt: skip
            others = [] if key in self._from_start else [
                m for k, m in self._all.items() if k[:2] == self.scope
                and Path(k[2]).parent == directory and (m.device, m.inode) != (st.st_dev, st.st_ino)
                and m.tail_sha256 is not None and 0 < m.offset <= st.st_size]  # fmt: skip
        best: Mark | None = None
        for mark in sorted(marks, key=lambda m: (m.offset, m is own), reverse=True):
            if _continues(fd, st.st_size, mark):
                best = mark
                break
        if best is None and others:
            best = _copied(directory, fd, st.st_size, others)
        return (best.offset, best.line) if best is not None else (0, 0)

    def truncated(self, path: Path, f: BinaryIO) -> Mark | None:
        """The mark `path` was saved with, when the open file `f` is still the file it was saved
        for (device, inode) but has been truncated in place since: it is shorter than the
        mark's offset, or its first bytes changed (logrotate's copytruncate, then new lines).
        Called when no mark continues (`resume` gave 0). A file rewritten with the same first
        bytes (an export written over, `_continues`) is no truncated log: None."""
        fd = f.fileno()
        st = os.fstat(fd)
        with self._lock:
            mark = self._all.get(self._key(path))
        if mark is None or mark.offset == 0 or (mark.device, mark.inode) != (st.st_dev, st.st_ino):
            return None
        if st.st_size < mark.offset or _head(fd, mark.head_len) != mark.head_sha256:
            return mark
        return None

    def forget(self, path: Path) -> None:
        """Read `path` from its start next time (its saved offset is dropped, not rewritten),
        with any mark this file left under an earlier name."""
        try:
            st = path.stat()
        except OSError:
            ident = None
        else:
            ident = (st.st_dev, st.st_ino)
        key = self._key(path)
        with self._lock:
            drop = {key} | {k for k, m in self._all.items()
                            if k[:2] == self.scope and (m.device, m.inode) == ident}  # fmt: skip
            for k in drop:
                self._all.pop(k, None)
            self._changed |= drop
            self._from_start.add(key)

    def save(self, path: Path, offset: int, line: int, f: BinaryIO | None = None) -> None:
        """Save `offset` for `path`. The fingerprint comes from `f`, the open file, when given:
        `path` may name another file by now, or none (found in review: a log rotated while it
        was read ended the import with FileNotFoundError)."""
        if f is None:
            with path.open("rb") as opened:
                self.save(path, offset, line, opened)
            return
        fd = f.fileno()
        st = os.fstat(fd)
        head_len = min(HEAD_BYTES, offset)
        head = _head(fd, head_len)
        # Up to HEAD_BYTES in, the head is the tail: the same bytes, not read and hashed twice.
        tail = head if offset <= HEAD_BYTES else _tail(fd, offset)
        mark = Mark(st.st_dev, st.st_ino, head_len, head, offset, line, tail)
        key = self._key(path)
        with self._lock:
            self._all[key] = mark
            self._changed.add(key)
            self._write()

    def _write(self) -> None:
        """Merge with the file as it is now (another import may have saved meanwhile: a mark
        this process did not change is taken from it), then replace it. Called under _lock."""
        with self._saving():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock_path.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                current = self._load()
                for key in self._changed:
                    current.pop(key, None)
                    if key in self._all:
                        current[key] = self._all[key]
                self._all = current
                marks = [{"server": k[0], "gateway": k[1], "path": k[2], **asdict(m)}
                         for k, m in sorted(current.items())]  # fmt: skip
                tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(orjson.dumps({"version": CHECKPOINT_VERSION, "marks": marks}))
                os.replace(tmp, self.path)


@dataclass(frozen=True)
class Item:
    line: int  # first line of the item in the file, 1-based
    end: int  # byte offset just past the item
    mapped: Mapped
    # Its last line: a CSV row with a quoted line break spans several. The checkpoint keeps
    # this one (found in review: it kept the first, so after a resume past such a row every
    # line number reported was too small).
    last: int


def file_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


@dataclass(frozen=True)
class Settled:
    """A file taken as finished when it was opened: its size and modification time then, and
    already left unchanged for SETTLE_SECONDS. Found in review: a one-shot import decided so at
    open, the writer resumed while the file was read, and its half-written last line was read
    as finished (the checkpoint past it, so the next run could not resume and read the file
    again from its first byte). A last line without its break is read only while the file is
    still as it was (`_finished`), checked when that line is reached."""

    size: int
    mtime_ns: int


def _finished(f: BinaryIO, final: bool | Settled) -> bool:
    """Whether `f`, at a last line without its line break, is complete: `final` as given, or
    for Settled, the file is still the size it was at open, not modified since, and still
    unchanged for SETTLE_SECONDS."""
    if isinstance(final, bool):
        return final
    st = os.fstat(f.fileno())
    unchanged = (st.st_size, st.st_mtime_ns) == (final.size, final.mtime_ns)
    return unchanged and time.time() - st.st_mtime >= SETTLE_SECONDS


def _lines(
    f: BinaryIO, offset: int, line: int, final: bool | Settled
) -> Iterator[tuple[int, int, bytes | None]]:
    """(line number, end offset, raw line). A last line without a line break is read when the
    file is `final` (complete: the break before EOF is optional in CSV and JSON Lines; see
    `_finished`); else it is left for later, since the writer may still be appending to it. A
    line longer than MAX_LINE_BYTES is skipped unread and given as None (found in review: each
    line was read whole before any check, so one line of gigabytes could take all memory)."""
    f.seek(offset)
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            rest = _skip_line(f)
            if rest is None and not _finished(f, final):
                return  # its end is not written yet: skipped when it is
            offset += len(raw) + (rest or 0)
            line += 1
            yield line, offset, None
            continue
        if not raw.endswith(b"\n") and not _finished(f, final):
            return
        offset += len(raw)
        line += 1
        yield line, offset, raw


def _skip_line(f: BinaryIO) -> int | None:
    """Read on to the end of the current line without keeping it: the bytes up to and with its
    line break, or None at the end of the file without one (then all of it is read)."""
    skipped = 0
    while chunk := f.readline(1 << 20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            return skipped
    return None


def read_jsonl(
    source: Path | BinaryIO, offset: int, line: int, ctx: Context, *, final: bool | Settled = True
) -> Iterator[Item]:
    with _opened(source) as f:
        for number, end, raw in _lines(f, offset, line, final):
            if raw is None:
                yield Item(number, end, Rejected("line", _TOO_LONG), number)
                continue
            if end - len(raw) == 0 and raw.startswith(codecs.BOM_UTF8):
                # A UTF-8 byte-order mark (Notepad's "UTF-8 with BOM", PowerShell 5's
                # `Out-File -Encoding utf8`), as CSV allows. Found in review: orjson refused the
                # first line for it. Skipped for parsing only: `end` stays a file offset.
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield Item(number, end, Rejected("line", f"not valid JSON: {exc}"), number)
                continue
            if isinstance(data, list):
                # Most likely a whole JSON export (one array) rather than JSON Lines: say so.
                reason = "a JSON array; the importer reads JSON Lines, one JSON object per line"
                yield Item(number, end, Rejected("line", reason), number)
                continue
            yield Item(number, end, run(openai_log.map_line, data, ctx), number)


def _csv_reader(lines: Iterable[str]) -> Iterator[list[str]]:
    # Set here, where it is relied on (the limit is process-wide): see CSV_FIELD_LIMIT.
    csv.field_size_limit(CSV_FIELD_LIMIT)
    return csv.reader(lines)


def _csv_error(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (f"a cell longer than {CSV_FIELD_LIMIT:,} characters, the importer's limit (no "
                "field it reads is longer than 256)")  # fmt: skip
    return f"not readable as CSV: {exc}"


@dataclass
class _At:
    end: int  # offset past the last line csv.reader pulled
    line: int  # its number
    exhausted: bool = False  # csv.reader has asked past the last line
    not_utf8: str | None = None  # why a line of the current row is not UTF-8 text


def csv_header(source: Path | BinaryIO) -> tuple[list[str], int]:
    """The header's cells and the offset past it; ([], 0) while its line is unfinished."""
    with _opened(source) as f:
        f.seek(0)
        first = f.readline(MAX_LINE_BYTES + 1)
    if len(first) > MAX_LINE_BYTES and not first.endswith(b"\n"):
        raise FileStopped(1, f"the CSV header is {_TOO_LONG}")
    if b"\r" in first.rstrip(b"\r\n"):
        # A carriage return inside the first line: the file's lines end with CR alone (Excel
        # for Mac's "CSV (Macintosh)"), which the importer does not split on. Found in review:
        # such a file was one unfinished line, and its import read nothing and exited 0.
        raise FileStopped(1, (
            "the file's lines end with a carriage return alone (CR, as old Mac Excel writes "
            "CSV), not LF or CRLF: nothing is read; convert its line endings, e.g. "
            "`tr '\\r' '\\n' < in.csv > out.csv`"
        ))  # fmt: skip
    if not first.endswith(b"\n"):
        return [], 0
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileStopped(1, f"the CSV header is not UTF-8 text ({exc})") from exc
    fed = _At(len(first), 1)

    def line() -> Iterator[str]:
        yield text
        fed.exhausted = True

    try:
        header = next(_csv_reader(line()))
    except csv.Error as exc:
        raise FileStopped(1, f"the CSV header is not readable ({_csv_error(exc)})") from exc
    if fed.exhausted:  # see read_csv: the row ended inside a quoted cell
        raise FileStopped(1, "the CSV header is not readable (a quote opened in it is not "
                             "closed on its line)")  # fmt: skip
    if not header:
        raise FileStopped(1, "the first line, the CSV header, is empty")
    conflict = csv_export.header_conflicts(header)
    if conflict:
        raise FileStopped(1, conflict)
    return header, len(first)


def read_csv(
    source: Path | BinaryIO, offset: int, line: int, ctx: Context, *, final: bool | Settled = True
) -> Iterator[Item]:
    """Rows past `offset`. A row csv cannot parse is refused (Rejected) and reading goes on at
    the next line. A quoted cell still open at the end of the file, or running past
    CSV_FIELD_LIMIT over several lines, raises FileStopped when the file is `final` (lines after
    it cannot be told from the cell); a file that may still grow is read up to that row."""
    with _opened(source) as f:
        header, header_end = csv_header(f)
        if not header:
            return
        if offset < header_end:
            offset, line = header_end, 1
        at = _At(offset, line)

        def decoded() -> Iterator[str]:
            for number, end, raw in _lines(f, offset, line, final):
                at.end, at.line = end, number
                if raw is None:
                    # Its cells cannot be told apart unread, nor whether a quote opened in it
                    # runs on: the rows after it cannot be read as rows.
                    raise FileStopped(number, f"{_TOO_LONG}; the file is not read from here")
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    # The row is refused (found in review: decoded with replacement, a
                    # cp1252 export landed "mistral-m\ufffddium"); its bytes are still
                    # given to csv, decoded losslessly, so the rows after it stay aligned.
                    at.not_utf8 = at.not_utf8 or f"byte 0x{raw[exc.start]:02x} on line {number}"
                    yield raw.decode("utf-8", errors="surrogateescape")
            at.exhausted = True

        # csv.reader pulls exactly the physical lines of one row (quoted newlines included),
        # so after each row `at` is that row's end. After an error it starts afresh at
        # the next line.
        rows = _csv_reader(decoded())
        start = line + 1
        while True:
            try:
                cells = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                if at.line > start:
                    # A quoted cell ran over several lines past the limit: most likely its
                    # quote is never closed, and its lines cannot be told from rows.
                    raise FileStopped(start, (
                        f"a quoted cell opened in this row runs past {CSV_FIELD_LIMIT:,} "
                        f"characters (to line {at.line}): is its closing quote "
                        "missing? The file is not read from here"
                    )) from exc  # fmt: skip
                yield Item(start, at.end, Rejected("row", f"{_csv_error(exc)}; row not read"),
                           at.line)  # fmt: skip
                start, at.not_utf8 = at.line + 1, None
                continue
            if at.exhausted:
                # csv.reader ends a row at the end of its input only inside a quoted cell: the
                # cell's closing quote never came.
                if not _finished(f, final):
                    # The writer may not have written the rest of the row yet (or, Settled, it
                    # wrote to the file while it was read: the same row as an unfinished line).
                    return
                span = f"lines {start}-{at.line}" if at.line > start else "it"
                raise FileStopped(start, (
                    "a quoted cell opened in this row is not closed by the end of the file "
                    f"(line {at.line}), so {span} cannot be read as rows: the file is not read "
                    "from here; close the quote and run again"
                ))  # fmt: skip
            if cells:
                if at.not_utf8 is not None:
                    mapped: Mapped = Rejected("row", (
                        f"not UTF-8 text ({at.not_utf8}): the importer reads UTF-8; save the "
                        "export as UTF-8 (the other rows are read)"
                    ))  # fmt: skip
                elif len(cells) != len(header):
                    mapped = Rejected(
                        "row", f"{len(cells)} cells where the header has {len(header)}"
                    )
                else:
                    mapped = run(csv_export.map_row, dict(zip(header, cells, strict=True)), ctx)
                yield Item(start, at.end, mapped, at.line)
            start, at.not_utf8 = at.line + 1, None


class Sender:
    """POSTs contract records to a running server's /v1/records with a gateway key. Each call
    is tried `attempts` times, waiting 0.5, 1, 2, 4 s... (at most 10 s) between tries: about
    15 s with the default 6 before an unreachable or busy server aborts the import.

    `signing_secret`: a gateway registered with `--signed` signs every request
    (collector.signing); found in review, such a gateway could not import at all. Every
    attempt is signed anew, retries included: the server refuses a signature it has seen.
    `transport`: for tests (an in-process app or a mock)."""

    def __init__(
        self,
        url: str,
        key: str,
        timeout: float = 60.0,
        attempts: int = 6,
        *,
        signing_secret: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self._signing_secret = signing_secret
        # Neither may reach a message, whatever a server (or a proxy before it) echoes back.
        self._secrets = tuple(s for s in (key, signing_secret) if s)
        # Timestamps signed per body in the current second (`_signed`), under a lock: the
        # watcher and a LiteLLM follow may share this sender.
        self._signed_lock = threading.Lock()
        self._signed_second = 0
        self._signed_at: dict[bytes, int] = {}
        self._retrying = Retrying(
            retry=retry_if_exception_type((httpx.TransportError, Retryable)),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=10),
            reraise=True,
        )

    def close(self) -> None:
        self._client.close()

    def _signed(self, body: bytes) -> dict[str, str]:
        """The signature headers of one attempt to send `body`; none for an unsigned gateway.

        Called inside the retry loop, once per attempt: the server remembers every signature
        it verified, even one of an attempt it then answered 503, and refuses it again as a
        replay. The same body signed twice in one second would carry the same signature (the
        timestamp is in whole seconds), so a resend takes the second after the one its body
        last used: at most a few seconds ahead (one per quick resend), well inside the
        server's 300 s tolerance."""
        if self._signing_secret is None:
            return {}
        now = int(time.time())
        digest = hashlib.sha256(body).digest()
        with self._signed_lock:
            if now != self._signed_second:
                # A timestamp already in the past cannot collide with one taken from now on.
                self._signed_at = {d: t for d, t in self._signed_at.items() if t >= now}
                self._signed_second = now
            last = self._signed_at.get(digest)
            stamp = now if last is None else max(now, last + 1)
            self._signed_at[digest] = stamp
        return sign(self._signing_secret, body, now=stamp)

    def _post(self, body: bytes) -> httpx.Response:
        def once() -> httpx.Response:
            reply = self._client.post("/v1/records", content=body, headers=self._signed(body))
            if reply.status_code in (429, 502, 503, 504):
                raise Retryable(f"server answered {reply.status_code}")
            if (reply.status_code == 401 and self._signing_secret is not None
                    and "signature already used" in self._detail(reply)):  # fmt: skip
                # These very bytes were signed in this second by another sender too (two imports
                # of one file at once): signed again, a second later, they pass, and the records
                # count once (record ids).
                raise Retryable("server refused the signature as already used")
            return reply

        return self._retrying(once)

    def _whoami(self) -> httpx.Response:
        def once() -> httpx.Response:
            # The route reads no body, but a signature covers it: an empty one would sign the
            # same in every process asking within one second, and the second asking would be
            # refused as a replay (found in testing: an import run twice in a second).
            body = orjson.dumps({"nonce": os.urandom(16).hex()})
            return self._client.post("/v1/gateway/whoami", content=body,
                                     headers=self._signed(body))  # fmt: skip

        return self._retrying(once)

    def _detail(self, reply: httpx.Response) -> str:
        """The server's reason for an error answer (its `detail`), at most 300 characters and
        without the key or the secret, whatever the server (or a proxy before it) echoes."""
        try:
            detail = reply.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if not isinstance(detail, str) or not detail.strip():
            detail = f"answered {reply.status_code} with no reason"
        for secret in self._secrets:  # before the cut: no part of one is left at its end
            detail = detail.replace(secret, "<not shown>")
        return detail[:300]

    def _refused(self, reply: httpx.Response) -> UnusableArguments:
        """A 401, with the server's reason. Found in review: every 401 blamed the key, also the
        valid key of a signed gateway that sent no signature; the server's `detail` says which
        was refused ("unknown or revoked gateway key", "bad request signature: ...")."""
        detail = self._detail(reply)
        prefix = "bad request signature: "
        if not detail.startswith(prefix):
            return UnusableArguments(f"the server refused the gateway key (--key): {detail}")
        if self._signing_secret is None:
            hint = ("the gateway is registered as signed: give its signing secret with "
                    "--signing-secret or TRACKER_SIGNING_SECRET")  # fmt: skip
        else:
            hint = ("check --signing-secret (or TRACKER_SIGNING_SECRET) and this machine's "
                    "clock; the key was accepted")  # fmt: skip
        reason = detail.removeprefix(prefix)
        return UnusableArguments(f"the server refused the request's signature: {reason}; {hint}")

    def gateway(self) -> tuple[str, frozenset[str]]:
        """Who the key belongs to and its agencies; checks the key before any file is read."""
        try:
            reply = self._whoami()
        except httpx.TransportError as exc:
            raise ImportAborted(f"server unreachable: {exc}") from exc
        if reply.status_code == 401:
            raise self._refused(reply)
        if reply.status_code != 200:
            raise ImportAborted(f"server answered {reply.status_code}: {reply.text[:300]}")
        try:
            body = reply.json()
            return str(body["gateway_id"]), frozenset(map(str, body["agencies"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise UnusableArguments(
                "--url: the server there answered /v1/gateway/whoami with no gateway: "
                "is it a tracker or collector?"
            ) from exc

    def send(self, records: list[bytes]) -> dict[str, Any]:
        """The server's IngestResult for records encoded one by one (`encode`, which refuses a
        record JSON cannot carry alone); splits a batch the server finds too large, and refuses
        a record it finds too large alone."""
        body = b"[" + b",".join(records) + b"]"
        try:
            reply = self._post(body)
        except (httpx.TransportError, Retryable) as exc:
            raise ImportAborted(f"server unreachable or unavailable: {exc}") from exc
        if reply.status_code == 401:
            raise self._refused(reply)
        if reply.status_code == 413 and len(records) > 1:
            half = len(records) // 2
            first = self.send(records[:half])
            second = self.send(records[half:])
            shifted = [{**e, "index": e["index"] + half} for e in second["errors"]]
            return {"accepted": first["accepted"] + second["accepted"],
                    "rejected": first["rejected"] + second["rejected"],
                    "errors": first["errors"] + shifted,
                    "errors_truncated": first.get("errors_truncated", False)
                    or second.get("errors_truncated", False)}  # fmt: skip
        if reply.status_code == 413:
            # One record alone over the server's body limit. Found in review: this aborted the
            # import, the checkpoint never passed the record, and every run stopped there, so
            # the lines after it never landed. No resend can fit it: it is refused alone.
            field_name, size = _largest_field(records[0])
            reason = (f"{size:,} bytes as JSON; the record alone is over the server's body "
                      f"limit (413: {reply.text[:200]}), so it is not sent")  # fmt: skip
            return {"accepted": 0, "rejected": 1,
                    "errors": [{"index": 0, "field": field_name, "reason": reason}]}  # fmt: skip
        if reply.status_code not in (200, 403, 422):
            raise ImportAborted(f"server answered {reply.status_code}: {reply.text[:300]}")
        try:
            result = reply.json()
        except ValueError as exc:
            raise ImportAborted(f"server answered {reply.status_code} with no JSON") from exc
        if not isinstance(result, dict) or not {"accepted", "rejected", "errors"} <= result.keys():
            raise ImportAborted(f"server answered {reply.status_code} with no ingest result")
        return result


def _largest_field(record: bytes) -> tuple[str, int]:
    """The field of an encoded record that takes the most bytes, and that size: what to name
    when the record is too large to send (an ignored free-text column, a long use_case)."""
    try:
        data = orjson.loads(record)
    except orjson.JSONDecodeError:
        return "record", len(record)
    if not isinstance(data, dict) or not data:
        return "record", len(record)
    sizes = {str(k): len(orjson.dumps(v)) for k, v in data.items()}
    name = max(sizes, key=sizes.__getitem__)
    return name, sizes[name]


def encode(record: dict[str, Any]) -> bytes | Rejected:
    """`record` as the JSON `Sender` sends, or why it cannot be, naming the field. Found in
    review: one value orjson cannot write (a list nested 300 deep passed through as use_case)
    made the whole batch's encoding raise, a traceback that lost the good records beside it on
    every run."""
    for name, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            # orjson writes NaN and infinities as null: the value would be lost, not refused.
            return Rejected(name, f"not a finite number ({value})")
    try:
        return orjson.dumps(record, default=str)
    except orjson.JSONEncodeError as exc:
        blamed = "record"
        for name, value in record.items():
            try:
                orjson.dumps(value, default=str)
            except orjson.JSONEncodeError:
                blamed = name
                break
        return Rejected(blamed, f"cannot be sent as JSON ({exc})")


def tally(report: FileReport, result: dict[str, Any], lines: list[int]) -> None:
    """Add the server's answer for one batch to the report; `lines[i]` is the source line of
    the batch's i-th record. The count is the server's own: its error list stops at 1,000
    entries (and may name a record more than once), so counting the list under-reports."""
    report.accepted += int(result["accepted"])
    report.rejected += int(result["rejected"])
    report.errors_incomplete |= bool(result.get("errors_truncated"))
    for err in result["errors"]:
        report.add_error(lines[err["index"]], err["field"], err["reason"])


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C while a file was imported, carrying `report`: what the file had sent before.
    Its checkpoint is past those lines, so no later read reports them (found in review: their
    refusals were never shown, and the exit code did not count them). A KeyboardInterrupt
    still, so whatever does not look for the report stops as on any Ctrl-C."""

    def __init__(self, report: FileReport) -> None:
        super().__init__()
        self.report = report


class Importer:
    def __init__(
        self,
        sender: Sender,
        checkpoints: Checkpoints,
        ctx: Context,
        *,
        batch_size: int = 1000,
        declared_format: str = "auto",
    ) -> None:
        self.sender = sender
        self.checkpoints = checkpoints
        self.ctx = ctx
        self.batch_size = batch_size
        self.declared_format = declared_format

    def import_file(self, path: Path, on_progress: Callable[[int], None] | None = None,
                    *, final: bool = True, on_start: Callable[[int, int], None] | None = None,
                    expect: tuple[int, int] | None = None) -> FileReport:  # fmt: skip
        """Import what `path` holds past its checkpoint. `final`: the file is complete, so an
        unterminated last line is read too (the watcher passes False while it may grow) once
        the file has been left unchanged for SETTLE_SECONDS; before that, such a line (or a
        CSV row whose quoted cell is open at the end) is left unread and reported, and
        `report.unfinished` is set. Found in review: a one-shot import run while a writer was
        mid-line read the half line as finished and saved the checkpoint past it, so half a
        CSV number landed, or a JSON line was refused in two halves and never landed.
        `on_start(size, offset)`: once the file is open. `expect`: the (device, inode) the
        watcher listed; another file under the name, or none, is left to its next poll.

        The file is opened once and everything (checkpoint fingerprint included) is read from
        the open file: renamed or removed meanwhile, it is still read to its end. A file that
        cannot be opened or read further is `report.stopped`, never an exception.

        A file truncated in place since its checkpoint (logrotate's copytruncate) first has the
        rest of its earlier content read from the copy beside it (`_recover`), then is read
        from its first byte."""
        report = FileReport(str(path))
        try:
            f = path.open("rb")
        except FileNotFoundError:
            if expect is not None:
                return report  # renamed since listed: the next poll finds it by its inode
            report.stopped = f"{path}: no longer there (renamed or removed before it was read)"
            return report
        except OSError as exc:
            report.stopped = f"{path}: cannot be opened ({exc.strerror or exc})"
            return report
        with f:
            try:
                self._import_open(path, f, report, on_progress, final=final, on_start=on_start,
                                  expect=expect)  # fmt: skip
            except ImportAborted as exc:
                exc.report = report
                raise
            except KeyboardInterrupt as exc:
                raise ImportInterrupted(report) from exc
        return report

    def _import_open(self, path: Path, f: BinaryIO, report: FileReport,
                     on_progress: Callable[[int], None] | None, *, final: bool,
                     on_start: Callable[[int, int], None] | None,
                     expect: tuple[int, int] | None) -> None:  # fmt: skip
        """import_file's reading of the open file `f`."""
        st = os.fstat(f.fileno())
        if expect is not None and (st.st_dev, st.st_ino) != expect:
            return
        # The modification time is taken at open: a log still written to while it is read
        # has a recent one, so its growing end is never taken as finished.
        age = time.time() - st.st_mtime
        offset, line = self.checkpoints.resume(path, f)
        if offset == 0:
            cut = self.checkpoints.truncated(path, f)
            if cut is not None:
                self._recover(path, f, cut, report, final=final)
        report.resumed_from = offset
        if on_start is not None:
            on_start(st.st_size, offset)
        # Settled, not True: the file is checked again at a last line without its break, in
        # case its writer resumed while it was read (found in review, see Settled).
        settled = Settled(st.st_size, st.st_mtime_ns) if age >= SETTLE_SECONDS else False
        self._read(path, f, (offset, line), report, final=settled if final else False,
                   on_progress=on_progress, unread_check=age if final else None)  # fmt: skip

    def _read(self, path: Path, f: BinaryIO, at: tuple[int, int], report: FileReport, *,
              final: bool | Settled, on_progress: Callable[[int], None] | None = None,
              unread_check: float | None = None) -> tuple[int, int]:  # fmt: skip
        """Read the open file `f` (named `path`) on from `at` (offset, line), send what it holds
        and save the checkpoint after each batch; (offset, line) reached. `final`: read a last
        line without its line break (Settled: if the file is still as it was, `_finished`).
        `unread_check`: the file's age, for a one-shot import that did not take it as
        finished, or found it changed at that line, to report such a line (`_left_unread`)."""
        offset, line = at
        batch: list[bytes] = []
        lines: list[int] = []
        reached, last_line = offset, line
        read = read_csv if file_format(path, self.declared_format) == "csv" else read_jsonl

        def flush() -> None:
            nonlocal batch, lines
            if batch:
                tally(report, self.sender.send(batch), lines)
            batch, lines = [], []
            self.checkpoints.save(path, reached, last_line, f)

        try:
            if read is read_csv:
                report.ignored_columns = csv_export.ignored_columns(csv_header(f)[0])
            for item in read(f, offset, line, self.ctx, final=final):
                if on_progress is not None:
                    on_progress(item.end - reached)
                reached, last_line = item.end, item.last
                # Encoded here, one record at a time, so one that cannot be is refused alone.
                encoded = encode(item.mapped) if isinstance(item.mapped, dict) else item.mapped
                if isinstance(encoded, Rejected):
                    report.rejected += 1
                    report.add_error(item.line, encoded.field, encoded.reason)
                elif encoded is not None:
                    batch.append(encoded)
                    lines.append(item.line)
                if len(batch) >= self.batch_size:
                    flush()
            # Settled may have left a last line too (written to while read); when it did not,
            # nothing is past `reached` and nothing is reported.
            if unread_check is not None and final is not True:
                self._left_unread(report, f, read, (reached, last_line), unread_check)
        except FileStopped as exc:
            report.stopped = f"{path}:{exc.line}: {exc}"
        except OSError as exc:
            report.stopped = f"{path}: reading stopped at line {last_line + 1} ({exc})"
        flush()  # what was read before a stop is sent, and the checkpoint ends before it
        return reached, last_line

    def _recover(self, path: Path, f: BinaryIO, cut: Mark, report: FileReport, *,
                 final: bool) -> None:  # fmt: skip
        """`path` (open as `f`) was truncated in place since `cut`, its checkpoint, was saved:
        logrotate's copytruncate copies a log (to app.log.1) and then truncates it, so lines
        written between the last read and the copy are only in the copy. Found in review: they
        were never read, and nothing said so. The copy beside it (a file holding the bytes
        `cut` fingerprints, `_copy_of`) is read on from the mark, or from its own checkpoint if
        further; its checkpoint is saved under its own name (a rerun does not send it again).
        Its records count in `report`, its refusals name it. A last line the copy ends without
        a line break (the writer was mid-line when it was copied) is left unread: the watcher
        reports it as for any followed file, a one-shot import (`final`) at once.

        With no copy, a followed log (not `final`) gets a warning naming the bytes that could
        not be read; a finished file (`final`) starts over as it did: a one-shot import of an
        export written over, the usual case, lost nothing."""
        report.truncated_at = cut.offset
        st = os.fstat(f.fileno())
        found = _copy_of(path.parent, cut, (st.st_dev, st.st_ino))
        if found is None:
            if not final:
                report.unread += 1
                report.warnings.append(
                    f"{path} was truncated in place (copytruncate?) after its first {cut.offset:,}"
                    f" bytes ({cut.line:,} lines) were read, and no uncompressed copy of its "
                    f"earlier content was found in {path.parent}: the bytes from {cut.offset:,} "
                    "to the end of that content (the lines written before the truncation and "
                    "not yet read), if there were any, could not be read; it is read again from "
                    "its first byte. If a copy turns up, `tracker import` it: lines that landed "
                    "already count once"
                )  # fmt: skip
            return
        copy, cf = found
        part = FileReport(str(copy))
        try:
            with cf:
                report.recovered_from = str(copy)
                at = max(self.checkpoints.resume(copy, cf), (cut.offset, cut.line))
                reached, last_line = self._read(copy, cf, at, part, final=False)
                if final and part.stopped is None and os.fstat(cf.fileno()).st_size > reached:
                    part.unread += 1
                    part.add_error(last_line + 1, "line", (
                        f"the copy of {path} made when it was truncated ends in the middle of "
                        "this line (or, in CSV, with a quoted cell still open): its writer was "
                        f"mid-line then, and the rest of the line went to {path}; not read"
                    ))  # fmt: skip
        finally:
            # Ctrl-C or an outage mid-copy too: the copy's batches that landed are past its
            # checkpoint, so no later read reports them (found in review: their counts and
            # refusals were lost with the interrupted report).
            report.add(part)

    def _left_unread(self, report: FileReport, f: BinaryIO, read: Callable[..., Iterator[Item]],
                     at: tuple[int, int], age: float) -> None:  # fmt: skip
        """Report what a read of a file changed `age` seconds ago left past `at` (offset, line):
        read again as a finished file, the first item it would give (or the row it would stop
        at) is the line the writer may still be writing. Read with final=True, never Settled:
        its check would leave that line again and hide it from the report."""
        # The age now: a file taken as finished at open and written to while it was read
        # changed just now, not `age` seconds ago.
        age = min(age, time.time() - os.fstat(f.fileno()).st_mtime)
        try:
            item = next(read(f, *at, self.ctx, final=True), None)
            unread = None if item is None else item.line
        except FileStopped as exc:  # a CSV row whose quoted cell is open at the end
            unread = exc.line
        if unread is not None:
            report.unfinished = unread
            report.add_error(unread, "line", (
                "no line break at the end of the file (or, in CSV, a quoted cell still open "
                f"there) and the file changed {max(age, 0):.0f} s ago: not read, as its writer "
                "may not have finished it; run again to read it (a file left unchanged for "
                f"{SETTLE_SECONDS:.0f} s is read to its end)"
            ))  # fmt: skip


def _files(directory: Path) -> dict[Path, os.stat_result]:
    """The regular files in `directory`, with their status; one gone meanwhile is left out."""
    found: dict[Path, os.stat_result] = {}
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        try:
            if entry.is_file():
                found[directory / entry.name] = entry.stat()
        except OSError:
            continue
    return found


# (path, device, inode, size, mtime_ns, mark): whether that file continued the mark when last
# looked at. A followed file unchanged since is not opened and hashed again at every poll.
_Checked = dict[tuple[Path, int, int, int, int, Mark], bool]


def _continued_at(path: Path, mark: Mark) -> bool:
    """Whether the file at `path` is the one `mark` was saved for: its device and inode, and
    the bytes the mark fingerprints, its offset at a line's end (`_continues`)."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            same = (st.st_dev, st.st_ino) == (mark.device, mark.inode)
            return same and _continues(f.fileno(), st.st_size, mark)
    except OSError:
        return False


def _to_poll(
    directory: Path,
    checkpoints: Checkpoints,
    *,
    before: set[tuple[int, int]] | None = None,
    checked: _Checked | None = None,
) -> tuple[list[tuple[Path, os.stat_result]], set[Path]]:
    """The files a poll reads: those matching PATTERNS, and every file in `directory` that was
    checkpointed under another name (a rotated log: app.log renamed app.log.1, which no
    pattern matches); and of those, the ones that continue a checkpoint (followed). Found
    review: lines appended between a poll and the rotation were lost, the renamed file was
    never read again and the new app.log started at byte 0. Renamed ones come first, so each
    is continued under its new name before its old name's checkpoint is taken by the new file;
    and they stay followed, by their inode, while they are in the directory: a writer keeps
    appending to the renamed file until it reopens its log.

    A file is followed by its inode only while it still holds the bytes its checkpoint
    fingerprints (`_continues`). Found in review: a checkpointed file removed, its inode went
    at once (ext4) to the next new file, `requests.jsonl.bak`, which no pattern matches, and
    it was read as JSON lines from its first byte. A checkpoint at offset 0 fingerprints
    nothing: its file is followed under another name only if its inode was in `before` (the
    last poll's files), so it did not leave the directory in between. Such stale checkpoints
    are kept, not used: `Checkpoints.resume` still resumes a copy of a removed file from its
    checkpoint. `checked`: a cache kept across polls (see _Checked)."""
    files = _files(directory)
    by_id = {(st.st_dev, st.st_ino): p for p, st in files.items()}
    named = {p for p in files if any(fnmatch.fnmatchcase(p.name, g) for g in PATTERNS)}
    moved: set[Path] = set()
    followed: set[Path] = set()
    known = {} if checked is None else checked
    used: _Checked = {}
    for saved, mark in checkpoints.marks_in(directory):
        now_at = by_id.get((mark.device, mark.inode))
        if now_at is None:
            continue
        if now_at.name == saved.name and now_at in named:
            # Read under its own name whatever: `resume` checks its fingerprint then.
            followed.add(now_at)
            continue
        st = files[now_at]
        if mark.offset == 0:
            same = (mark.device, mark.inode) in (before or set())
        else:
            key = (now_at, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, mark)
            same = used[key] = known[key] if key in known else _continued_at(now_at, mark)
        if same:
            followed.add(now_at)
            if now_at.name != saved.name:
                moved.add(now_at)
    if checked is not None:  # what this poll looked at: the files gone since are dropped
        checked.clear()
        checked.update(used)
    order = sorted(named | followed, key=lambda p: (p not in moved, files[p].st_mtime, p.name))
    return [(p, files[p]) for p in order], followed


def _left(
    directory: Path,
    checkpoints: Checkpoints,
    before: dict[Path, tuple[tuple[int, int], bool]],
    polled: list[tuple[Path, os.stat_result]],
    followed: set[Path],
) -> list[FileReport]:
    """Warnings for the files of the last poll (`before`: path -> (device, inode), written to
    within `settle` seconds then) that were still being written to and are gone now: their
    inode has left `directory`, or holds other bytes (reused by a new file), so what was
    appended after the last poll could not be read. Found in review: a log rotated by renaming
    and compressed at once (logrotate's `compress` without `delaycompress`) lost those lines
    without a word, while copytruncate with no copy gets a warning (`Importer._recover`). A
    file that had been left unchanged is taken as read to its end (an old rotated log removed
    by `rotate N`, an imported file deleted): no warning. The same inode under the same name
    (truncated in place, or a new file given the inode) is left to `Importer.import_file`,
    which recovers it or warns."""
    now = {p: (st.st_dev, st.st_ino) for p, st in polled}
    continued = {now[p] for p in followed}
    reports: list[FileReport] = []
    for path, (ident, live) in before.items():
        if not live or now.get(path) == ident or ident in continued:
            continue
        marks = [(saved, m) for saved, m in checkpoints.marks_in(directory)
                 if (m.device, m.inode) == ident]  # fmt: skip
        # Its checkpoint under the name it was read as last; any other of its inode else.
        mark = max(marks, key=lambda e: (e[0].name == path.name, e[1].offset), default=None)
        offset, line = (mark[1].offset, mark[1].line) if mark is not None else (0, 0)
        report = FileReport(str(path), resumed_from=offset)
        report.unread += 1
        report.warnings.append(
            f"{path} left {directory} (rotated, renamed out of it or removed; or compressed at "
            f"once, logrotate's `compress` without `delaycompress`?) while it was being written "
            f"to, after its first {offset:,} bytes ({line:,} lines) were read: the bytes written "
            "to it after that (the lines written after the last poll), if there were any, could "
            "not be read. If an uncompressed copy turns up, `tracker import` it: lines that "
            "landed already count once"
        )
        reports.append(report)
    return reports


@dataclass
class _Seen:
    ident: tuple[int, int]  # (device, inode): another file under the name is new
    size: int
    # A log truncated and written to its former size between two polls (copytruncate) has
    # the same size: its modification time tells.
    mtime_ns: int
    since: float  # monotonic time the file was first seen at this size
    reported: bool = False  # an unterminated last line reported at this size


# Progress while one file is read: a context around the read giving its `on_progress(bytes)`
# and `on_start(size, offset)` (Importer.import_file).
ReadCallbacks = tuple[Callable[[int], None], Callable[[int, int], None]]
FileProgress = Callable[[Path], contextlib.AbstractContextManager[ReadCallbacks]]


def watch(
    directory: Path,
    importer: Importer,
    stop: threading.Event,
    on_report: Callable[[FileReport], None],
    interval: float = 2.0,
    settle: float = SETTLE_SECONDS,
    progress: FileProgress | None = None,
    on_outage: Callable[[ImportAborted, float], None] | None = None,
) -> None:
    """Poll a directory: import new files and what was appended to known ones, until `stop`.
    Polling (not inotify) works the same on network shares, containers and every OS.

    A file that changed is read up to its last complete line: the writer may be in the middle
    of the next one. Once it has kept its size for `settle` seconds with such a line left, the
    line is reported as not read (a finished export without a final line break is read whole
    by a one-shot `tracker import FILE`). A log rotated by renaming is followed under its new
    name (`_to_poll`). A log truncated in place (copytruncate) has the rest of its earlier
    content read from the copy beside it first, or a warning names what could not be read
    (`Importer._recover`). A file that cannot be read further is reported, and the watch goes
    on. `progress` shows each read as it goes (found in review: a large file dropped in the
    directory, or a large append, showed nothing until it was done).

    With `on_outage`, a server that stays unreachable or unavailable through the sender's
    retries does not end the watch (found in review: a collector restart of over ~15 s did):
    `on_outage` is told, the watch waits `outage_pause` and reads the file again from its
    checkpoint, which no batch the server did not acknowledge has passed. A refused key
    (UnusableArguments) ends it whatever."""
    seen: dict[Path, _Seen] = {}
    failures = 0  # reads in a row that the server's outage ended
    # The last poll's files: (device, inode), and whether they were written to within `settle`
    # seconds (a file still written to that leaves may take unread lines with it: `_left`).
    before: dict[Path, tuple[tuple[int, int], bool]] = {}
    checked: _Checked = {}
    while not stop.is_set():
        ids = {i for i, _ in before.values()}
        polled, followed = _to_poll(directory, importer.checkpoints, before=ids, checked=checked)
        for gone in _left(directory, importer.checkpoints, before, polled, followed):
            on_report(gone)
        wall = time.time()
        before = {p: ((st.st_dev, st.st_ino), wall - st.st_mtime < settle) for p, st in polled}
        listed = {p for p, _ in polled}
        seen = {p: s for p, s in seen.items() if p in listed}
        for path, st in polled:
            ident, size, now = (st.st_dev, st.st_ino), st.st_size, time.monotonic()
            known = seen.get(path)
            state = (ident, size, st.st_mtime_ns)
            if known is None or (known.ident, known.size, known.mtime_ns) != state:
                seen[path] = _Seen(*state, now)
                try:
                    report = _read_watched(importer, path, ident, progress)
                except UnusableArguments:
                    raise
                except ImportAborted as exc:
                    if on_outage is None:
                        raise
                    del seen[path]  # read again, from its checkpoint, once the server answers
                    if exc.report is not None and _worth_reporting(exc.report):
                        on_report(exc.report)  # the lines before it: past the checkpoint
                    failures += 1
                    on_outage(exc, outage_pause(failures, interval))
                    break
                failures = 0
            elif not known.reported and now - known.since >= settle:
                known.reported = True
                report = _unfinished_line(importer, path, size, settle)
            else:
                continue
            if _worth_reporting(report):
                on_report(report)
        stop.wait(outage_pause(failures, interval) if failures else interval)


def _worth_reporting(report: FileReport) -> bool:
    """A watched read that did anything (most polls of a quiet file read nothing)."""
    return bool(report.accepted or report.rejected or report.errors or report.stopped
                or report.warnings or report.recovered_from)  # fmt: skip


MAX_OUTAGE_PAUSE: Final = 60.0


def outage_pause(failures: int, interval: float) -> float:
    """Seconds to wait before trying a server again after `failures` attempts in a row ended
    by its outage: the poll interval, doubled at each failure, at most MAX_OUTAGE_PAUSE."""
    return min(MAX_OUTAGE_PAUSE, interval * 2.0 ** min(failures - 1, 30))


def _read_watched(
    importer: Importer, path: Path, ident: tuple[int, int], progress: FileProgress | None
) -> FileReport:
    if progress is None:
        return importer.import_file(path, final=False, expect=ident)
    with progress(path) as (advance, start):
        return importer.import_file(path, advance, final=False, on_start=start, expect=ident)


def _unfinished_line(importer: Importer, path: Path, size: int, settle: float) -> FileReport:
    """A report of the line a watched file ends with, left unread for lack of its break (or, in
    CSV, of the row whose quoted cell is still open at the end of the file)."""
    offset, line = importer.checkpoints.resume(path)
    report = FileReport(str(path), resumed_from=offset)
    if size > offset:
        report.add_error(line + 1, "line", (
            f"no line break after {settle:.0f} s (or, in CSV, a quoted cell still open at the "
            "end of the file), so not read: the writer may not have finished it; it is read "
            "when its break arrives (`tracker import FILE` reads a finished file to its end)"
        ))  # fmt: skip
    return report
