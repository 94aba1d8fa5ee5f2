"""Secrets stay out of reprs and configuration errors (found in review, 2026-11-26): the
Grafana data source's ClickHouse password and the LiteLLM proxy key were in their objects'
reprs, and the API built alone from TRACKER_* quoted a bad DSN whole, password included."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from api.app import _settings_from_environment
from collector.adapters.litellm_pull import Puller
from dashboards.provision import ClickHouseConnection
from tracker.settings import SettingError


def test_reprs_leave_the_secrets_out(tmp_path: Path) -> None:
    connection = ClickHouseConnection("ch.internal", password="S3cret-ch")
    assert "S3cret-ch" not in repr(connection) and "ch.internal" in repr(connection)
    assert connection.password == "S3cret-ch"
    nothing = cast(Any, None)
    puller = Puller("http://litellm:4000", "sk-S3cret", nothing, nothing, tmp_path / "s.json")
    assert "sk-S3cret" not in repr(puller) and "litellm:4000" in repr(puller)


def test_a_bad_dsn_is_refused_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_CLICKHOUSE_DSN", "HTTP://tracker:S3cretPassw0rd@ch.internal:8123")
    with pytest.raises(SettingError) as refused:
        _settings_from_environment()
    text = str(refused.value)
    assert "clickhouse_dsn" in text and "S3cretPassw0rd" not in text
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
