"""The HTTP stand-in itself (tests/integration/chdb_http.py): the http:// DSN tests are only as
good as it is, so it must lose nothing and leak nothing between requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError


@pytest.fixture(scope="module")
def database(server_dsn: str) -> Iterator[str]:
    name = f"t_front_{uuid.uuid4().hex[:8]}"
    clickhouse_connect.get_client(dsn=server_dsn).command(f"CREATE DATABASE `{name}`")
    yield name
    clickhouse_connect.get_client(dsn=server_dsn).command(f"DROP DATABASE `{name}`")


def client(dsn: str, database: str, compress: str | bool) -> Client:
    return clickhouse_connect.get_client(dsn=dsn, database=database, compress=compress)


@pytest.mark.parametrize("compress", ["lz4", "gzip", False])
def test_a_large_insert_lands_every_block(server_dsn: str, database: str, compress: str) -> None:
    """clickhouse-connect streams a large insert as one compressed frame per block."""
    c = client(server_dsn, database, compress)
    table = f"t_{compress or 'plain'}"
    c.command(f"CREATE TABLE {table} (n UInt64, s String) ENGINE = MergeTree ORDER BY n")
    rows = [(i, f"row {i} " + "x" * (i % 50)) for i in range(300_000)]
    c.insert(table, rows, column_names=["n", "s"], settings={"max_insert_block_size": 20_000})
    got = c.query(f"SELECT count(), sum(n), sum(length(s)) FROM {table}").result_rows[0]
    assert got == (300_000, sum(r[0] for r in rows), sum(len(r[1]) for r in rows))


def test_streamed_results_are_whole(server_dsn: str, database: str) -> None:
    c = client(server_dsn, database, False)
    total = 0
    with c.raw_stream("SELECT number FROM numbers(1000000)", fmt="CSV") as stream:
        for line in stream.read().splitlines():
            total += int(line)
    assert total == sum(range(1_000_000))
    with c.query_row_block_stream("SELECT number FROM numbers(1000000)") as blocks:
        assert sum(row[0] for block in blocks for row in block) == total


def test_settings_and_parameters_stay_with_their_request(server_dsn: str, database: str) -> None:
    c = client(server_dsn, database, "lz4")
    setting = "SELECT getSetting('max_threads')"
    default = c.query(setting).result_rows[0][0]
    assert c.query(setting, settings={"max_threads": 1}).result_rows[0][0] == 1 != default
    for _ in range(5):  # the next requests, on whichever handler thread and connection
        assert c.query(setting).result_rows[0][0] == default
    quoted = "it's a 'test' \\ ok"
    assert c.query("SELECT {s:String}", parameters={"s": quoted}).result_rows[0][0] == quoted


def test_engine_errors_keep_their_code(server_dsn: str, database: str) -> None:
    c = client(server_dsn, database, False)
    with pytest.raises(DatabaseError, match="code: 60"):  # UNKNOWN_TABLE
        c.query("SELECT * FROM no_such_table")
    assert c.query("SELECT 1").result_rows == [(1,)]  # the connection is still good
