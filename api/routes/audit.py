"""`GET /v1/audit`: the audit log of keyed reads, for admins. Read-only: the product offers no
way to change or remove an entry (tracker/audit.py)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Caller, count_rows, require
from api.deps import ClickHouse
from api.params import End, Start, exact_range
from tracker import audit
from tracker.access import Role
from tracker.bounds import cursor_time

router = APIRouter(tags=["audit"])


class AuditOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "at": "2026-11-23T10:00:00.123456Z",
                    "request_id": "5f0c...",
                    "phase": "end",
                    "key_id": "cag-auditor",
                    "role": "auditor",
                    "agency_id": "",
                    "client_ip": "10.0.0.7",
                    "method": "GET",
                    "path": "/v1/usage",
                    "query": "from=2026-06-01&format=csv",
                    "status": 200,
                    "rows": 1204,
                    "duration_ms": 840,
                }
            ]
        }
    )

    at: datetime
    request_id: str = Field(description="pairs a request's begin and end entries")
    phase: str = Field(description="begin: before any data; end: after the last byte")
    key_id: str
    role: str
    agency_id: str
    client_ip: str
    method: str
    path: str
    query: str
    status: int = Field(description="0 on begin; 499 when the response did not complete")
    rows: int = Field(description="rows returned (end)")
    duration_ms: int


class AuditPage(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    entries: list[AuditOut] = Field(description="newest first")
    next_cursor: str | None


def _cursor(e: audit.AuditEntry) -> str:
    raw = orjson.dumps([e.at.isoformat(), e.request_id, e.phase])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str) -> tuple[datetime, str, str]:
    try:
        at, req, phase = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        when = cursor_time(at)
        if not isinstance(req, str) or not isinstance(phase, str):
            raise TypeError("cursor fields must be strings")
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise HTTPException(422, "cursor: not a cursor returned by this API") from exc
    return when, req, phase


@router.get("/v1/audit", response_model=AuditPage, response_model_by_alias=True)
def get_audit(
    request: Request,
    client: ClickHouse,
    identity: Caller,
    from_: Start = None,
    to: End = None,
    key: Annotated[
        str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Key id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditPage:
    """Who read what, when, and how many rows (default: the last 7 days). Admins only."""
    require(identity, Role.admin)
    start, end = exact_range(from_, to, timedelta(days=7))
    before = _decode(cursor) if cursor else None
    found = audit.read(client, start, end, key_id=key, limit=limit + 1, before=before)
    more = len(found) > limit
    found = found[:limit]
    count_rows(request, len(found))
    return AuditPage(
        from_=start,
        to=end,
        entries=[AuditOut(**e.__dict__) for e in found],
        next_cursor=_cursor(found[-1]) if more and found else None,
    )
