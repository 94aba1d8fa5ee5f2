"""`GET /v1/freshness`, `/v1/me`: how current the data is, and who the caller is. (The registry
is read at `GET /v1/registry`, api/routes/registry.py.)"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.auth import Caller, count_rows
from api.deps import ClickHouse
from api.params import scope
from tracker.access import Role
from tracker.queries import freshness

router = APIRouter(tags=["meta"])


class FreshnessOut(BaseModel):
    latest_hour: datetime | None = Field(description="newest hour with any usage")
    latest_ingested_at: datetime | None = Field(description="when that usage was landed")


@router.get("/v1/freshness", response_model=FreshnessOut)
def get_freshness(request: Request, client: ClickHouse, identity: Caller) -> FreshnessOut:
    """How current the figures are (an agency key: its own agency's data)."""
    f = freshness(client, scope(identity, {}))
    count_rows(request, 1)
    return FreshnessOut(latest_hour=f.latest_hour, latest_ingested_at=f.latest_ingested_at)


class MeOut(BaseModel):
    role: Role
    key_id: str | None
    agency_id: str | None = Field(description="the one agency an agency key reads")


@router.get("/v1/me", response_model=MeOut)
def get_me(identity: Caller) -> MeOut:
    return MeOut(
        role=identity.role, key_id=identity.key_id or None, agency_id=identity.agency_id or None
    )
