"""Where the store is: a DSN that cannot work, an empty variable, --data-dir beside a DSN, and
the settings and port `up`/`demo`/`api` check before they open anything (found in review)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from pydantic import ValidationError

from tracker import clickhouse
from tracker.settings import (
    ApiSettings,
    CollectorSettings,
    CommonSettings,
    EmbeddedSettings,
    PipelineSettings,
)


def _tracker(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # A process of its own: chdb is one engine per process, and the old code opened the store.
    return subprocess.run([sys.executable, "-m", "tracker", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, cwd=cwd)  # fmt: skip


@pytest.mark.parametrize(
    "dsn",
    [
        # clickhouse-connect's chdb client reads each of these as in memory: a key "created"
        # was gone with the process.
        "chdb://memory",
        "chdb://:memory:",
        "chdb:?x=1",
        "chdb://@",
        "chdb://u@memory/db",
        "chdb:///",
        "chdb:////",
        # Relative (moves with the working directory), or a netloc read as a path.
        "chdb:relative-store",
        "chdb://var/lib/tracker",
        # Fell back to http://localhost:8123 (or host:9000 over HTTP).
        " ",
        "CHDB:///var/lib/tracker/chdb",
        "clickhouse://u:pw@db.internal:9000/tracker",
        "localhost:8123",
        "http:///tracker",
        "https://",
        "http://[::1",  # an unclosed bracket: not a URL
    ],
)
def test_a_dsn_that_cannot_work_is_refused_naming_the_variable(dsn: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CommonSettings(clickhouse_dsn=dsn)
    (error,) = caught.value.errors()
    assert "TRACKER_CLICKHOUSE_DSN" in error["msg"] and "pw" not in error["msg"]


@pytest.mark.parametrize(
    ("dsn", "embedded"),
    [
        ("chdb:///var/lib/tracker/chdb", True),
        ("chdb:///var/lib/tracker/chdb?x=1", True),
        ("http://tracker:pw@clickhouse:8123", False),
        ("https://clickhouse.example:8443/tracker", False),
    ],
)
def test_usable_dsns_pass_and_say_whether_embedded(dsn: str, embedded: bool) -> None:
    assert CommonSettings(clickhouse_dsn=dsn).embedded() is embedded


def test_https_is_asked_for_whatever_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # clickhouse-connect chose TLS by the port alone: https://h:8123 went in the clear.
    seen: dict[str, Any] = {}
    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **kw: seen.update(kw))
    clickhouse._connect("https://h:8123")
    assert seen["interface"] == "https"
    seen.clear()
    clickhouse._connect("chdb:///x")
    assert "interface" not in seen  # chdb has no transport to choose


@pytest.mark.parametrize(
    "cls", [CommonSettings, CollectorSettings, PipelineSettings, ApiSettings, EmbeddedSettings]
)
def test_an_empty_variable_is_unset(cls: type[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # `TRACKER_DATA_DIR=` was the current directory, `TRACKER_CLICKHOUSE_DSN=` localhost:8123.
    for name in ("DATA_DIR", "CLICKHOUSE_DSN", "HOST", "PORT", "LOG_LEVEL"):
        monkeypatch.setenv(f"TRACKER_{name}", "")
    settings = cls()
    assert settings.data_dir == Path("var") and settings.clickhouse_dsn is None
    assert settings.dsn().startswith("chdb:///") and settings.embedded()


def test_the_store_elsewhere_leaves_data_dir_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The DSN's parent is made (chdb makes the leaf only), never data_dir.
    calls: list[str] = []

    class Fake:
        def command(self, sql: str) -> None:
            calls.append(sql)

    monkeypatch.setattr(clickhouse, "_connect", lambda dsn, **kw: Fake())
    store = tmp_path / "a" / "b" / "chdb"
    clickhouse.open_client(
        CommonSettings(clickhouse_dsn=f"chdb://{store}", data_dir=tmp_path / "local")
    )
    assert (tmp_path / "a" / "b").is_dir() and not (tmp_path / "local").exists() and calls


def test_data_dir_beside_a_dsn_is_refused_for_the_store(tmp_path: Path) -> None:
    # Found in review: the admin key was made in the DSN's store, --data-dir made empty.
    store, local = tmp_path / "store", tmp_path / "local"
    env = {"TRACKER_CLICKHOUSE_DSN": f"chdb://{store}"}
    for args in (["key", "add", "ops-admin", "--role", "admin"], ["key", "list"],
                 ["migrate"], ["up", "--port", "0"]):  # fmt: skip
        run = _tracker(*args, "--data-dir", str(local), env=env)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert "--data-dir" in run.stderr and "TRACKER_CLICKHOUSE_DSN" in run.stderr, run.stderr
        assert not store.exists() and not local.exists(), args


def test_data_dir_that_holds_more_than_the_store_goes_on_saying_so(tmp_path: Path) -> None:
    # The spool is data_dir's, whatever the store: the option is meant, the store named.
    env = {"TRACKER_CLICKHOUSE_DSN": "http://u:pw@clickhouse:8123"}
    run = _tracker("spool", "list", "--data-dir", str(tmp_path), env=env)
    assert run.returncode == 0, run.stderr
    assert "TRACKER_CLICKHOUSE_DSN (http://u:***@clickhouse:8123)" in run.stderr
    assert "pw" not in run.stderr


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("up", "TRACKER_MIN_CELL_RECORDS", "0"),
        ("up", "TRACKER_RATE_LIMIT_PUBLIC_PER_MINUTE", "x"),
        ("up", "TRACKER_MAX_EXPORT_ROWS", "0"),
        ("demo", "TRACKER_PUBLIC_CACHE", "maybe"),
        ("demo", "TRACKER_PUBLIC_CACHE_SECONDS", "-1"),
    ],
)
def test_up_and_demo_check_the_api_settings_before_anything(
    command: str, variable: str, value: str, tmp_path: Path
) -> None:
    # Found in review: a traceback (exit 1) after `demo` had seeded and issued its key.
    run = _tracker(command, "--port", "0", env={variable: value, "TRACKER_DATA_DIR": str(tmp_path)})
    assert run.returncode == 2, run.stderr
    # Named as the operator set it (found in review: by its field only).
    assert f"bad configuration: {variable}" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "chdb").exists()  # nothing opened, nothing seeded


def test_embedded_app_serves_the_settings_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not read again from the environment after the checks (tracker/cli/wiring.py).
    from api import app as api_app_module
    from tracker.cli import wiring

    given: list[Any] = []

    def fake_create_app(pool: Any, settings: Any = None, registry: Any = None) -> Any:
        given.append(settings)
        raise RuntimeError("stop")

    monkeypatch.setattr(api_app_module, "create_app", fake_create_app)
    settings = EmbeddedSettings(min_cell_records=3)
    with pytest.raises(RuntimeError, match="stop"):
        wiring.embedded_app(settings, wiring.Core(pool=Any, registry=Any, processor=Any))  # type: ignore[arg-type]
    assert given == [settings]


@pytest.mark.parametrize("command", ["up", "demo", "api"])
def test_a_taken_port_or_unknown_host_is_a_setting_error_before_the_store(
    command: str, tmp_path: Path
) -> None:
    # Found in review: uvicorn's exit 3 after the banner (after `demo` issued a key).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _tracker(command, "--port", str(port), env={"TRACKER_DATA_DIR": str(tmp_path)})
    assert run.returncode == 2, run.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr and "--port" in run.stderr
    assert "TRACKER_PORT" in run.stderr and run.stdout == ""
    run = _tracker(
        command, "--host", "nonexistent.invalid", env={"TRACKER_DATA_DIR": str(tmp_path)}
    )
    assert run.returncode == 2 and "--host/TRACKER_HOST" in run.stderr, run.stderr
    assert not (tmp_path / "chdb").exists()


def test_port_zero_is_shown_as_the_port_bound() -> None:
    from tracker.cli import _listen, _url

    with _listen("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        assert port != 0 and _url(sock) == f"http://127.0.0.1:{port}"
