"""The audit log of keyed reads: who looked, when, at what, and how many rows they got.

Append-only by construction of the product: this module only INSERTs and SELECTs, and no route
updates or deletes (the table has no mutable engine either). Each request writes a `begin` row
before any data is produced, so a look is traced even if the process dies while streaming, and
an `end` row with the status and row count once the response is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

# The longest query string the log keeps. The API refuses a longer one (414, api/auth.py), so a
# query is never stored cut: cut, the filters at its end (which agency was read) were lost (found
# in review). The query's cut below is only a guard (the API, the one writer, never passes a
# longer one); a path is cut, as every route's path parameters are bounded and a longer path
# selects no data (404/422).
MAX_QUERY_CHARS = 4096

_COLUMNS = [
    "at",
    "request_id",
    "phase",
    "key_id",
    "role",
    "agency_id",
    "client_ip",
    "method",
    "path",
    "query",
    "status",
    "rows",
    "duration_ms",
]


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    request_id: str
    phase: str  # begin | end
    key_id: str
    role: str
    agency_id: str
    client_ip: str
    method: str
    path: str
    query: str
    status: int
    rows: int
    duration_ms: int


def write(client: Client, entry: AuditEntry) -> None:
    row = [
        entry.at,
        entry.request_id,
        entry.phase,
        entry.key_id,
        entry.role,
        entry.agency_id,
        entry.client_ip,
        entry.method,
        entry.path[:MAX_QUERY_CHARS],
        entry.query[:MAX_QUERY_CHARS],
        entry.status,
        entry.rows,
        entry.duration_ms,
    ]
    client.insert("audit_log", [row], column_names=_COLUMNS)


def read(
    client: Client,
    start: datetime,
    end: datetime,
    *,
    key_id: str | None = None,
    limit: int = 100,
    before: tuple[datetime, str, str] | None = None,
) -> list[AuditEntry]:
    """Entries in [start, end), newest first; `before` is the keyset cursor (at, request_id,
    phase) of the last entry of the previous page."""
    where = ["at >= {start:DateTime64(6, 'UTC')}", "at < {end:DateTime64(6, 'UTC')}"]
    params: dict[str, Any] = {"start": start, "end": end, "limit": limit}
    if key_id is not None:
        where.append("key_id = {key_id:String}")
        params["key_id"] = key_id
    if before is not None:
        where.append(
            "(at, request_id, phase) < ({b_at:DateTime64(6, 'UTC')}, {b_req:String}, {b_ph:String})"
        )
        params.update(b_at=before[0], b_req=before[1], b_ph=before[2])
    sql = (
        f"SELECT {', '.join(_COLUMNS)} FROM audit_log WHERE {' AND '.join(where)} "
        "ORDER BY at DESC, request_id DESC, phase DESC LIMIT {limit:UInt32}"
    )
    rows = client.query(sql, parameters=params).result_rows
    out = []
    for r in rows:
        at = r[0] if r[0].tzinfo else r[0].replace(tzinfo=UTC)
        req, phase, key, role, agency, ip, method, path, query = (str(x) for x in r[1:10])
        out.append(AuditEntry(at, req, phase, key, role, agency, ip, method, path, query,
                              int(r[10]), int(r[11]), int(r[12])))  # fmt: skip
    return out
