"""The two stores a module's tests can run on: the embedded engine, and the same engine behind
the `http://` DSN path (the `server_dsn` fixture, tests/integration/chdb_http.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tracker.clickhouse import ClientPool
from tracker.migrate import migrate
from tracker.settings import CommonSettings


def server_settings(settings: CommonSettings, dsn: str) -> CommonSettings:
    return CommonSettings(
        data_dir=settings.data_dir,
        clickhouse_database=settings.clickhouse_database,
        clickhouse_dsn=dsn,
    )


def either_store(request: pytest.FixtureRequest, settings: CommonSettings) -> Iterator[ClientPool]:
    """For a `pool` fixture parametrized ["embedded", "server"]: the module's tests run once on
    the embedded engine and once through the `http://` DSN path."""
    if request.param == "server":
        settings = server_settings(settings, request.getfixturevalue("server_dsn"))
    p = ClientPool(settings)
    migrate(p.get())
    yield p
    p.get().command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
