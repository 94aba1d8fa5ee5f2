"""Numbered, frozen ClickHouse migrations (tracker/migrations/NNNN_name.sql).

Each file is applied once, in order, and recorded with its checksum in `schema_migrations`.
Statements use IF NOT EXISTS so a run interrupted half-way can simply be repeated. A recorded
migration whose file changed is an error: released migrations are frozen.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client

from tracker import rollups

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version
"""


# Data steps run after a migration's statements and before it is recorded, so an interrupted
# migration repeats them; each must be safe to repeat (tracker/rollups.backfill_daily starts
# from an empty table; measure_hourly reads only what is not measured yet).
_DATA_STEPS: dict[int, Callable[[Client], object]] = {
    5: rollups.backfill_daily,
    6: rollups.copy_keys,
    9: rollups.measure_after_0009,
}


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        # Split on semicolons that end a line; comment-only chunks are dropped.
        chunks = re.split(r";\s*(?:\n|$)", self.sql)
        out = []
        for chunk in chunks:
            lines = [ln for ln in chunk.splitlines() if not ln.strip().startswith("--")]
            body = "\n".join(lines).strip()
            if body:
                out.append(body)
        return out


def available() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("tracker.migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number: {versions}")
    return found


def applied(client: Client) -> dict[int, str]:
    client.command(_LEDGER)
    rows = client.query("SELECT version, checksum FROM schema_migrations").result_rows
    return {int(v): str(c) for v, c in rows}


def pending(client: Client) -> list[Migration]:
    """The migrations not applied yet (an edited one is a MigrationError, as in migrate)."""
    done = applied(client)
    found = available()
    for migration in found:
        _check_frozen(migration, done.get(migration.version))
    return [m for m in found if m.version not in done]


def _check_frozen(migration: Migration, recorded: str | None) -> None:
    if recorded is not None and recorded != migration.checksum:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} was edited after it was "
            "applied; released migrations are frozen: add a new numbered file instead"
        )


def migrate(client: Client) -> list[Migration]:
    """Apply every pending migration; returns the ones applied by this call."""
    done = applied(client)
    ran: list[Migration] = []
    for migration in available():
        recorded = done.get(migration.version)
        _check_frozen(migration, recorded)
        if recorded is not None:
            continue
        for statement in migration.statements():
            client.command(statement)
        step = _DATA_STEPS.get(migration.version)
        if step is not None:
            step(client)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        ran.append(migration)
    return ran
