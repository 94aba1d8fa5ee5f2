"""Settings for the `http://` DSN path: the engine behind tests/integration/chdb_http.py (the
`server_dsn` fixture)."""

from __future__ import annotations

from tracker.settings import CommonSettings


def server_settings(settings: CommonSettings, dsn: str) -> CommonSettings:
    return CommonSettings(
        data_dir=settings.data_dir,
        clickhouse_database=settings.clickhouse_database,
        clickhouse_dsn=dsn,
    )
