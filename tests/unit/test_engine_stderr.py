"""The first embedded open holds back what the engine writes to stderr (chdb prints its lock
error there itself, above the plain line the CLI gives): given back unless the open failed
for the lock, and stderr always restored, whatever the threads."""

from __future__ import annotations

import os
import threading
import time

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tracker import clickhouse


@pytest.fixture(autouse=True)
def _first_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clickhouse, "_engine_opened", False)


def _stderr_id() -> tuple[int, int]:
    st = os.fstat(2)
    return st.st_dev, st.st_ino


def test_what_a_successful_open_wrote_is_given_back(capfd: pytest.CaptureFixture[str]) -> None:
    before = _stderr_id()
    with clickhouse._engine_stderr_held():
        os.write(2, b"engine: a warning worth seeing\n")
    assert _stderr_id() == before
    assert "engine: a warning worth seeing" in capfd.readouterr().err
    assert clickhouse._engine_opened


def test_the_engines_lock_error_is_held_back(capfd: pytest.CaptureFixture[str]) -> None:
    before = _stderr_id()
    with pytest.raises(DatabaseError), clickhouse._engine_stderr_held():
        os.write(2, b"Code: 76. DB::Exception: Cannot lock file /x/status\n")
        raise DatabaseError("Code: 76. DB::Exception: Cannot lock file /x/status")
    assert _stderr_id() == before
    assert "Cannot lock file" not in capfd.readouterr().err
    assert not clickhouse._engine_opened  # the next open holds it back again


def test_other_failures_show_what_the_engine_wrote(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OSError), clickhouse._engine_stderr_held():
        os.write(2, b"engine: disk full\n")
        raise OSError(28, "No space left on device")
    assert "engine: disk full" in capfd.readouterr().err


def test_threads_opening_at_once_leave_stderr_as_it_was(capfd: pytest.CaptureFixture[str]) -> None:
    before = _stderr_id()

    def open_() -> None:
        with clickhouse._engine_stderr_held():
            os.write(2, f"{threading.current_thread().name}\n".encode())
            time.sleep(0.05)

    threads = [threading.Thread(target=open_, name=f"opener-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _stderr_id() == before
    assert "opener-" in capfd.readouterr().err
