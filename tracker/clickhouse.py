"""ClickHouse connections: chdb (embedded, `chdb:///path`) or a server (`http(s)://...`).

The same SQL runs on both through clickhouse-connect. chdb is one engine per process and one
process per path, so opening is done in one place, with errors that say what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver import options as _cc_options
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from tracker.settings import CommonSettings, SettingError, chdb_path, is_embedded

# clickhouse-connect imports pandas on the first insert, to tell whether the data is a
# DataFrame (its lazily resolved `options.pd`). The tracker never inserts or reads DataFrames,
# and importing pandas costs every process ~40 MB of RSS; settled here as "not available".
# (Arrow, which the Parquet export uses, is resolved separately and not affected.)
_cc_options.pd = None
_cc_options.pd_time_test = None

# The Native format is encoded and decoded by clickhouse-connect's compiled codec
# (clickhouse-connect-core), not its Python one: the pipeline's 50k-row inserts spent ~1.2 us
# of Python per row building LowCardinality dictionaries and Decimal bytes (bench/RESULTS.md).
# "rust", not "rust_strict": a type the codec lacks falls back to the Python codec. Only the
# HTTP client has the option: the embedded (chdb) client has no Native codec to choose, and
# logs a warning for every client given one.
NATIVE_CODEC = "rust"


def _connect(dsn: str, **kwargs: Any) -> Client:
    if not is_embedded(dsn):
        kwargs["native_codec"] = NATIVE_CODEC
        # clickhouse-connect takes TLS from the port alone (443/8443), not the scheme: an
        # https:// DSN on another port (or none) would be sent in the clear.
        kwargs["interface"] = dsn.partition(":")[0]
    return clickhouse_connect.get_client(dsn=dsn, **kwargs)


class StorageUnavailable(RuntimeError):
    """ClickHouse cannot be opened or reached; the message says why and what to do."""


def _held_by_another(text: str) -> bool:
    """Whether chdb says another process holds the embedded store: its lock error reaches
    stderr only (`Cannot lock file .../status`), and the exception then gives the engine's
    start an empty reason (`Error initializing EmbeddedServer: . (BAD_ARGUMENTS)`). Any other
    failed start (a read-only or full disk, no permission) names its own reason (found in
    review: every failed start was reported as a store held by another process)."""
    return "Cannot lock file" in text or "EmbeddedServer: . (BAD_ARGUMENTS)" in text


# The reason in a failed engine start: the C++ exception's own text when it has one, else
# what follows "EmbeddedServer:".
_ENGINE_REASONS = (
    re.compile(r"e\.what\(\) = (.+?)(?:, Stack trace|$)"),
    re.compile(r"EmbeddedServer: (.+?)(?:\. \(|$)"),
)


def _explain(exc: Exception, redacted_dsn: str, engine_said: str = "") -> StorageUnavailable:
    text = str(exc)
    if _held_by_another(text) or _held_by_another(engine_said):
        return StorageUnavailable(
            f"the embedded store {redacted_dsn} is held by another process "
            "(is `tracker up` or `tracker demo` running?): one process at a time opens it. "
            "Stop it for this command (keys, gateways, migrations and registry changes are "
            "made with it stopped), or read through its HTTP API meanwhile"
        )
    if "already initialized" in text:
        return StorageUnavailable(
            f"this process already opened another embedded store; cannot also open {redacted_dsn}"
        )
    if isinstance(exc, FileExistsError | NotADirectoryError):
        # Making the store's directories met a file on the way (a --data-dir that names a
        # file): "[Errno 17] File exists" did not say what was wrong (found in review).
        return StorageUnavailable(
            f"cannot open the embedded store {redacted_dsn}: {_file_in_the_way(exc.filename)} "
            "is a file, not a directory (the store's place is --data-dir / TRACKER_DATA_DIR, "
            "or the chdb:// DSN)"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    if "EmbeddedServer" in first:
        found = next((m for p in _ENGINE_REASONS if (m := p.search(first))), None)
        reason = found.group(1) if found else first
        return StorageUnavailable(
            f"cannot open the embedded store {redacted_dsn}: {reason[:300]} (is the data "
            "directory, --data-dir / TRACKER_DATA_DIR, writable, with free space?)"
        )
    return StorageUnavailable(f"cannot open ClickHouse at {redacted_dsn}: {first}")


def _file_in_the_way(path: object) -> str:
    """The nearest of `path` and its parents that exists and is no directory: mkdir names the
    path it was making, which for `afile/sub` does not exist (found in review)."""
    if not isinstance(path, str | Path):
        return "a part of the path"
    for place in (Path(path), *Path(path).parents):
        if place.exists():
            return str(place) if not place.is_dir() else str(path)
    return str(path)


_engine_opened = False  # whether this process opened its embedded engine yet
_first_open = threading.Lock()


@dataclass
class _EngineOutput:
    """What the engine wrote to stderr during a held open (text), read once it ended."""

    text: str = ""


@contextlib.contextmanager
def _engine_stderr_held(seen: _EngineOutput | None = None) -> Iterator[None]:
    """The first embedded open of a process, with what the engine writes to stderr held back:
    chdb writes its lock error there itself (`Code: 76. DB::Exception: Cannot lock file ...`),
    before the exception that `_explain` turns into one plain line (found in review: a
    newcomer saw both). Given back unless the open failed for the lock. Only the first open:
    the lock is taken then, and later ones may run beside other threads' output."""
    global _engine_opened
    if _engine_opened:
        yield
        return
    # One thread at a time: two redirects interleaved could leave stderr pointing at the
    # other's file for good.
    with _first_open, tempfile.TemporaryFile() as held:
        if _engine_opened:  # opened by the thread that held the lock before
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        failed: ClickHouseError | None = None
        try:
            yield
            _engine_opened = True
        except ClickHouseError as exc:
            failed = exc
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read()
            said = text.decode("utf-8", errors="replace")
            if seen is not None:
                seen.text = said
            locked = failed is not None and (
                _held_by_another(str(failed)) or _held_by_another(said)
            )
            if text and not locked:
                os.write(2, text)


def open_client(settings: CommonSettings, *, database: str | None = None) -> Client:
    """A client bound to the tracker database, creating the database when missing."""
    conflict = settings.data_dir_conflict()
    if conflict is not None:
        raise SettingError(conflict)
    dsn = settings.dsn()
    db = database or settings.clickhouse_database
    engine = _EngineOutput()
    try:
        path = chdb_path(dsn) if is_embedded(dsn) else None
        if path is not None:
            # chdb creates the leaf directory itself but not its parents. The DSN's own
            # parent, not data_dir: a store elsewhere left an empty data_dir behind.
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with _engine_stderr_held(engine):
                bootstrap = _connect(dsn)
        else:
            bootstrap = _connect(dsn)
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{db}`")
        return _connect(dsn, database=db)
    except (ClickHouseError, OSError) as exc:
        raise _explain(exc, settings.redacted_dsn(), engine.text) from exc
    except (ValueError, TypeError) as exc:
        # A DSN clickhouse-connect cannot read (a port that is no number, an unknown query
        # parameter): its message may quote the DSN, so only the type is shown.
        raise StorageUnavailable(
            f"cannot open ClickHouse at {settings.redacted_dsn()}: the DSN is not usable "
            f"({type(exc).__name__}); see TRACKER_CLICKHOUSE_DSN in docs/deploy.md"
        ) from exc


class ClientPool:
    """One client per thread: clickhouse-connect clients are not meant to be shared across
    threads, and FastAPI runs sync endpoints in a thread pool."""

    def __init__(self, settings: CommonSettings, *, database: str | None = None) -> None:
        self._settings = settings
        self._database = database
        self._local = threading.local()
        self.database = database or settings.clickhouse_database
        # chdb: one process per data directory, so every write goes through this process.
        self.embedded = settings.embedded()
        # Open once now so a bad DSN fails at start-up, not at the first request.
        self._local.client = open_client(settings, database=database)

    def get(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = _connect(self._settings.dsn(), database=self.database)
            self._local.client = client
        return client

    def query_rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
        return list(self.get().query(sql, parameters=parameters or {}).result_rows)
