"""`tracker import`: JSONL access logs and CSV exports -> the running server's `/v1/records`.

The importer never opens ClickHouse: in the embedded default `tracker up` holds the chdb path
(one process per path), and in scale-out the collector is the only way in. It maps each line
locally, sends batches over HTTP with the gateway's key (the same validation, gateway identity
and idempotency as a push), and reports every refused line as file:line, field and reason.

Resume: after each acknowledged batch the byte offset reached in the file is saved under
data_dir/import/checkpoints.json with the file's fingerprint (device, inode, and a hash of its
first bytes). A file seen again resumes from its offset when the fingerprint matches and it is at
least that long (an appended log continues); a rotated, replaced or truncated file starts over.
A crash between a send and its checkpoint resends at most one batch; record ids make that
harmless.

The last line of a file may lack its line break (RFC 4180 §2.2 and JSON Lines both make the
final one optional). A one-shot import reads the file as finished, that line included, and the
checkpoint then ends past it. The watcher never reads such a line: a buffered writer can leave
half a line for minutes, and half a CSV line can even parse, with a number cut short (found in
review). It reads it when its line break arrives, and once the file has kept its size for
`settle` seconds it reports the line as not read, so nothing is held back silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from collector.adapters import csv_export, openai_log
from collector.adapters.common import Context, Mapped, Rejected, run

HEAD_BYTES: Final = 4096
PATTERNS: Final = ("*.jsonl", "*.ndjson", "*.log", "*.csv")
# Seconds a watched file must keep its size before an unterminated last line is reported.
SETTLE_SECONDS: Final = 30.0
MAX_ERRORS_KEPT: Final = 1_000  # refusals a report lists; the rest are counted


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
    """The import cannot go on (server refused the key, stayed unreachable)."""


class UnusableArguments(ImportAborted):
    """The caller's input cannot work at all: exit code 2."""


class Retryable(Exception):
    """The server asked for a retry (busy or downstream unavailable)."""


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

    def add_error(self, line: int, field_name: str, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(LineError(self.path, line, field_name, reason))
        else:
            self.errors_unlisted += 1


@dataclass(frozen=True)
class Mark:
    device: int
    inode: int
    head_len: int
    head_sha256: str
    offset: int
    line: int


def _head(path: Path, length: int) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(length)).hexdigest()


class Checkpoints:
    """Byte offsets per file, saved atomically (write a temporary file, then rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._marks: dict[str, Mark] = {}
        if path.exists():
            try:
                raw = orjson.loads(path.read_bytes())
                self._marks = {k: Mark(**v) for k, v in raw.items()}
            except (ValueError, TypeError, AttributeError) as exc:
                raise UnusableArguments(
                    f"{path}: the checkpoint file is damaged ({str(exc)[:120]}); move it "
                    "away to import every file from its start"
                ) from exc

    def resume(self, path: Path) -> tuple[int, int]:
        """(offset, line number) to continue from; (0, 0) for a new or changed file."""
        mark = self._marks.get(str(path.resolve()))
        if mark is None:
            return 0, 0
        st = path.stat()
        same = (st.st_dev, st.st_ino) == (mark.device, mark.inode) and st.st_size >= mark.offset
        if same and _head(path, mark.head_len) == mark.head_sha256:
            return mark.offset, mark.line
        return 0, 0

    def forget(self, path: Path) -> None:
        """Read `path` from its start next time (its saved offset is dropped, not rewritten)."""
        with self._lock:
            self._marks.pop(str(path.resolve()), None)

    def save(self, path: Path, offset: int, line: int) -> None:
        st = path.stat()
        head_len = min(HEAD_BYTES, offset)
        mark = Mark(st.st_dev, st.st_ino, head_len, _head(path, head_len), offset, line)
        with self._lock:
            self._marks[str(path.resolve())] = mark
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({k: asdict(v) for k, v in self._marks.items()}))
            os.replace(tmp, self.path)


@dataclass(frozen=True)
class Item:
    line: int  # first line of the item in the file, 1-based
    end: int  # byte offset just past the item
    mapped: Mapped


def file_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def _lines(
    f: io.BufferedReader, offset: int, line: int, final: bool
) -> Iterator[tuple[int, int, bytes]]:
    """(line number, end offset, raw line). A last line without a line break is read when the
    file is `final` (complete: the break before EOF is optional in CSV and JSON Lines); else it
    is left for later, since the writer may still be appending to it."""
    f.seek(offset)
    for raw in f:
        if not raw.endswith(b"\n") and not final:
            return
        offset += len(raw)
        line += 1
        yield line, offset, raw


def read_jsonl(
    path: Path, offset: int, line: int, ctx: Context, *, final: bool = True
) -> Iterator[Item]:
    with path.open("rb") as f:
        for number, end, raw in _lines(f, offset, line, final):
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield Item(number, end, Rejected("line", f"not valid JSON: {exc}"))
                continue
            if isinstance(data, list):
                # Most likely a whole JSON export (one array) rather than JSON Lines: say so.
                reason = "a JSON array; the importer reads JSON Lines, one JSON object per line"
                yield Item(number, end, Rejected("line", reason))
                continue
            yield Item(number, end, run(openai_log.map_line, data, ctx))


def csv_header(path: Path) -> tuple[list[str], int]:
    with path.open("rb") as f:
        first = f.readline()
    if not first.endswith(b"\n"):
        return [], 0
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnusableArguments(f"{path}: the CSV header is not UTF-8 text ({exc})") from exc
    header = next(csv.reader([text]))
    return header, len(first)


def read_csv(
    path: Path, offset: int, line: int, ctx: Context, *, final: bool = True
) -> Iterator[Item]:
    header, header_end = csv_header(path)
    if not header:
        return
    if offset < header_end:
        offset, line = header_end, 1
    with path.open("rb") as f:
        position = {"end": offset, "line": line}

        def decoded() -> Iterator[str]:
            for number, end, raw in _lines(f, offset, line, final):
                position["end"], position["line"] = end, number
                yield raw.decode("utf-8", errors="replace")

        start = line + 1
        # csv.reader pulls exactly the physical lines of one row (quoted newlines included),
        # so after each row `position` is that row's end.
        for cells in csv.reader(decoded()):
            if cells:
                if len(cells) != len(header):
                    mapped: Mapped = Rejected(
                        "row", f"{len(cells)} cells where the header has {len(header)}"
                    )
                else:
                    mapped = run(csv_export.map_row, dict(zip(header, cells, strict=True)), ctx)
                yield Item(start, position["end"], mapped)
            start = position["line"] + 1


class Sender:
    """POSTs contract records to a running server's /v1/records with a gateway key."""

    def __init__(self, url: str, key: str, timeout: float = 60.0) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    @retry(
        retry=retry_if_exception_type((httpx.TransportError, Retryable)),
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    def _post(self, body: bytes) -> httpx.Response:
        reply = self._client.post("/v1/records", content=body)
        if reply.status_code in (429, 502, 503, 504):
            raise Retryable(f"server answered {reply.status_code}")
        return reply

    @retry(
        retry=retry_if_exception_type(httpx.TransportError),
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.5, max=10),
        reraise=True,
    )
    def _whoami(self) -> httpx.Response:
        return self._client.post("/v1/gateway/whoami")

    def gateway(self) -> tuple[str, frozenset[str]]:
        """Who the key belongs to and its agencies; checks the key before any file is read."""
        try:
            reply = self._whoami()
        except httpx.TransportError as exc:
            raise ImportAborted(f"server unreachable: {exc}") from exc
        if reply.status_code == 401:
            raise UnusableArguments("the server refused the gateway key (--key)")
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

    def send(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The server's IngestResult; splits a batch the server finds too large."""
        body = orjson.dumps(records, default=str)
        try:
            reply = self._post(body)
        except (httpx.TransportError, Retryable) as exc:
            raise ImportAborted(f"server unreachable or unavailable: {exc}") from exc
        if reply.status_code == 401:
            raise UnusableArguments("the server refused the gateway key (--key)")
        if reply.status_code == 413 and len(records) > 1:
            half = len(records) // 2
            first, second = self.send(records[:half]), self.send(records[half:])
            shifted = [{**e, "index": e["index"] + half} for e in second["errors"]]
            return {"accepted": first["accepted"] + second["accepted"],
                    "rejected": first["rejected"] + second["rejected"],
                    "errors": first["errors"] + shifted,
                    "errors_truncated": first.get("errors_truncated", False)
                    or second.get("errors_truncated", False)}  # fmt: skip
        if reply.status_code not in (200, 403, 422):
            raise ImportAborted(f"server answered {reply.status_code}: {reply.text[:300]}")
        try:
            result = reply.json()
        except ValueError as exc:
            raise ImportAborted(f"server answered {reply.status_code} with no JSON") from exc
        if not isinstance(result, dict) or not {"accepted", "rejected", "errors"} <= result.keys():
            raise ImportAborted(f"server answered {reply.status_code} with no ingest result")
        return result


def tally(report: FileReport, result: dict[str, Any], lines: list[int]) -> None:
    """Add the server's answer for one batch to the report; `lines[i]` is the source line of
    the batch's i-th record. The count is the server's own: its error list stops at 1,000
    entries (and may name a record more than once), so counting the list under-reports."""
    report.accepted += int(result["accepted"])
    report.rejected += int(result["rejected"])
    report.errors_incomplete |= bool(result.get("errors_truncated"))
    for err in result["errors"]:
        report.add_error(lines[err["index"]], err["field"], err["reason"])


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
                    *, final: bool = True) -> FileReport:  # fmt: skip
        """Import what `path` holds past its checkpoint. `final`: the file is complete, so an
        unterminated last line is read too (the watcher passes False while it may grow)."""
        offset, line = self.checkpoints.resume(path)
        report = FileReport(str(path), resumed_from=offset)
        fmt = file_format(path, self.declared_format)
        if fmt == "csv":
            report.ignored_columns = csv_export.ignored_columns(csv_header(path)[0])
            items = read_csv(path, offset, line, self.ctx, final=final)
        else:
            items = read_jsonl(path, offset, line, self.ctx, final=final)
        batch: list[dict[str, Any]] = []
        lines: list[int] = []
        reached, last_line = offset, line

        def flush() -> None:
            nonlocal batch, lines
            if batch:
                tally(report, self.sender.send(batch), lines)
            batch, lines = [], []
            self.checkpoints.save(path, reached, last_line)

        for item in items:
            if on_progress is not None:
                on_progress(item.end - reached)
            reached, last_line = item.end, item.line
            if isinstance(item.mapped, Rejected):
                report.rejected += 1
                report.add_error(item.line, item.mapped.field, item.mapped.reason)
            elif item.mapped is not None:
                batch.append(item.mapped)
                lines.append(item.line)
            if len(batch) >= self.batch_size:
                flush()
        flush()
        return report


def candidates(directory: Path) -> list[Path]:
    found = {p for pattern in PATTERNS for p in directory.glob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


@dataclass
class _Seen:
    size: int
    since: float  # monotonic time the file was first seen at this size
    reported: bool = False  # an unterminated last line reported at this size


def watch(
    directory: Path,
    importer: Importer,
    stop: threading.Event,
    on_report: Callable[[FileReport], None],
    interval: float = 2.0,
    settle: float = SETTLE_SECONDS,
) -> None:
    """Poll a directory: import new files and what was appended to known ones, until `stop`.
    Polling (not inotify) works the same on network shares, containers and every OS.

    A file that changed is read up to its last complete line: the writer may be in the middle
    of the next one. Once it has kept its size for `settle` seconds with such a line left, the
    line is reported as not read (a finished export without a final line break is read whole
    by a one-shot `tracker import FILE`)."""
    seen: dict[Path, _Seen] = {}
    while not stop.is_set():
        for path in candidates(directory):
            size, now = path.stat().st_size, time.monotonic()
            known = seen.get(path)
            if known is None or known.size != size:
                seen[path] = _Seen(size, now)
                report = importer.import_file(path, final=False)
            elif not known.reported and now - known.since >= settle:
                known.reported = True
                report = _unfinished_line(importer, path, size, settle)
            else:
                continue
            if report.accepted or report.rejected or report.errors:
                on_report(report)
        stop.wait(interval)


def _unfinished_line(importer: Importer, path: Path, size: int, settle: float) -> FileReport:
    """A report of the line a watched file ends with, left unread for lack of its break."""
    offset, line = importer.checkpoints.resume(path)
    report = FileReport(str(path), resumed_from=offset)
    if size > offset:
        report.add_error(line + 1, "line", (
            f"no line break after {settle:.0f} s, so not read: the writer may not have finished "
            "it; it is read when its break arrives (`tracker import FILE` reads a finished file "
            "to its end)"
        ))  # fmt: skip
    return report
