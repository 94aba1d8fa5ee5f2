"""Settings refuse what cannot work (exit 2 with the setting named) and never show a secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from pipeline.metrics import PipelineMetrics
from tracker.cli import app
from tracker.clickhouse import StorageUnavailable, open_client
from tracker.settings import (
    CommonSettings,
    HttpSettings,
    KafkaSettings,
    PipelineSettings,
    SettingError,
)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("http://u:pw@h:8123/?access_token=tok", "http://u:***@h:8123/?***"),
        ("https://h:8443/db?password=pw", "https://h:8443/db?***"),
        ("http://h:8123", "http://h:8123"),
        # Found in review: urlsplit ends the host at `#`, `/` or `?`, finds no password, and
        # the DSN was printed whole (or half, for `?`).
        ("http://admin:p#ss99@127.0.0.1:1", "http://admin:***@127.0.0.1:1"),
        ("http://admin:pa/ss99@127.0.0.1:1/db", "http://admin:***@127.0.0.1:1/db"),
        ("http://admin:p?ss99@127.0.0.1:1", "http://admin:***@127.0.0.1:1"),
        ("http://admin:p@ss@h:8123#x", "http://admin:***@h:8123?***"),
        ("chdb:///var/lib/tracker/chdb", "chdb:///var/lib/tracker/chdb"),
    ],
)
def test_the_printed_dsn_hides_passwords_and_query_strings(dsn: str, shown: str) -> None:
    # Found in review: an access_token in the DSN's query string was printed in errors.
    assert CommonSettings(clickhouse_dsn=dsn).redacted_dsn() == shown


@pytest.mark.parametrize(
    "dsn", ["http://admin:p#ss99@127.0.0.1:1", "http://admin:pa/ss99@127.0.0.1:1"]
)
def test_a_store_that_cannot_be_opened_never_shows_its_password(dsn: str, tmp_path: Path) -> None:
    env = {**os.environ, "TRACKER_CLICKHOUSE_DSN": dsn, "TRACKER_DATA_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "tracker", "migrate", "--check"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "ss99" not in run.stdout + run.stderr and "admin:***@" in run.stderr, run.stderr


@pytest.mark.parametrize("dsn", ["chdb://", "chdb:"])
def test_a_chdb_dsn_without_a_path_is_refused(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: the store was in memory; a registry load said "in force" and was gone.
    monkeypatch.setenv("TRACKER_CLICKHOUSE_DSN", dsn)
    result = CliRunner().invoke(app, ["registry", "history"])
    assert result.exit_code == 2, result.output
    assert "TRACKER_CLICKHOUSE_DSN chdb needs an absolute path" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("cls", "values", "field"),
    [
        (KafkaSettings, {"kafka_dlq_topic": "usage.v1"}, "must differ"),
        (KafkaSettings, {"kafka_topic": "bad topic!"}, "kafka_topic"),
        (KafkaSettings, {"kafka_bootstrap": "nonsense"}, "kafka_bootstrap"),
        (KafkaSettings, {"kafka_bootstrap": "h:1,"}, "kafka_bootstrap"),
        (PipelineSettings, {"consumer_group": ""}, "consumer_group"),
        (PipelineSettings, {"metrics_host": ""}, "metrics_host"),
        (CommonSettings, {"log_level": "bogus"}, "log_level"),
        (HttpSettings, {"host": ""}, "host"),
    ],
)
def test_settings_that_cannot_work_are_refused(
    cls: type[CommonSettings], values: dict[str, Any], field: str
) -> None:
    # Found in review: a dead-letter topic equal to the live one looped forever (67k letters
    # in 40 s); an empty group retried forever; an empty host listened on every interface.
    with pytest.raises(ValidationError, match=field):
        cls.model_validate(values)


def test_good_values_still_pass() -> None:
    kafka = KafkaSettings(kafka_bootstrap="[::1]:9092,kafka-0.kafka.svc:9092")
    assert kafka.kafka_topic != kafka.kafka_dlq_topic
    assert CommonSettings.model_validate({"log_level": "debug"}).log_level == "DEBUG"


def test_replay_commands_read_settings_like_every_command(tmp_path: object) -> None:
    # Found in review: `replay` and `dlq replay` built their settings directly, so a bad value
    # was a 45-line pydantic traceback instead of exit 2.
    for command in (["replay"], ["dlq", "replay"]):
        result = CliRunner().invoke(app, command, env={"TRACKER_BATCH_MAX_ROWS": "abc",
                                                       "TRACKER_DATA_DIR": str(tmp_path)})  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "bad configuration: TRACKER_BATCH_MAX_ROWS" in result.output


@pytest.mark.parametrize("dsn", ["http://u:pw@h:notaport", "http://u:pw@127.0.0.1:1/?x=1"])
def test_an_unusable_dsn_is_named_without_its_password(dsn: str) -> None:
    # Found in review: a ValueError/TypeError traceback from clickhouse-connect.
    with pytest.raises(StorageUnavailable, match="the DSN is not usable") as caught:
        open_client(CommonSettings(clickhouse_dsn=dsn))
    assert "pw" not in str(caught.value)


def test_a_taken_metrics_port_is_a_setting_error(tmp_path: Path) -> None:
    from tracker.cli.wiring import serve_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = PipelineSettings(data_dir=tmp_path, metrics_port=port)
        with pytest.raises(SettingError, match=f"cannot serve /metrics on 127.0.0.1:{port}"):
            serve_metrics(settings, PipelineMetrics())


def test_schema_and_migrate_refuse_paths_that_cannot_work(tmp_path: Path) -> None:
    # Found in review: IsADirectoryError and FileExistsError tracebacks.
    afile = tmp_path / "afile"
    afile.write_text("x")
    runner = CliRunner()
    for args in (["schema", "--out", str(tmp_path)], ["schema", "--out", str(afile / "s.json")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
    # main() turns StorageUnavailable into exit 2 with its message (CliRunner calls app()).
    result = runner.invoke(app, ["migrate", "--data-dir", str(afile)])
    assert isinstance(result.exception, StorageUnavailable), result.exception
    assert f"{afile} is a file, not a directory" in str(result.exception)
