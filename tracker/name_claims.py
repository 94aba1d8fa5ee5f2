"""One `add` per name: gateway and API key names are claimed by their first insert.

`tracker gateway add` and `tracker key add` check that a name is free, then insert. On a
ClickHouse server two adds of one name can both pass the check, and ReplacingMergeTree would
keep the later row: the earlier command's printed key would never work. So the insert carries
a deduplication token per name, which the engine honours on these tables (migration 0007): of
two such inserts only the first is kept. Each add then reads back whose key the row holds.

The registry's change ledger is claimed the same way, by position (migration 0008): each change
is inserted with the token of the ledger length its writer read before checking anything, so of
two changes checked against the same ledger only the first is recorded (`ledger_token`).
"""

from __future__ import annotations

import time
from typing import Literal

from clickhouse_connect.driver.client import Client

Table = Literal["gateways", "api_keys"]
_ID_COLUMN: dict[Table, str] = {"gateways": "gateway_id", "api_keys": "key_id"}


def token(table: Table, name: str) -> dict[str, str]:
    """The insert settings that make the first add of `name` the only one kept."""
    return {"insert_deduplication_token": f"{table}-add-{name}"}


def claimed(client: Client, table: Table, name: str, key_hash: str) -> bool:
    """Whether the row stored for `name` is the one this add inserted (its key's hash)."""
    rows = client.query(
        f"SELECT key_hash FROM {table} FINAL WHERE {_ID_COLUMN[table]} = {{n:String}}",
        parameters={"n": name},
    ).result_rows
    return bool(rows) and rows[0][0] == key_hash


def ledger_token(position: int) -> dict[str, str]:
    """The insert settings that make a change the only one recorded at ledger `position` (the
    number of changes its writer saw). The ledger is append-only, so each position is claimed
    once: a writer that read the ledger before another change landed reuses that change's
    token and its row is dropped."""
    return {"insert_deduplication_token": f"registry_changes-at-{position}"}


# How often a revoke re-asserts itself over a change that won at the same moment.
REVOKE_ATTEMPTS = 5


def next_version(previous: int) -> int:
    """The version of a row replacing one of version `previous` in these ReplacingMergeTree
    tables, winning over it whatever this host's clock says: the clock's nanoseconds alone lost
    to a row written on a host whose clock ran ahead, and a revoke was reported done while the
    key kept working (found in review)."""
    return max(previous + 1, time.time_ns())
