"""`GET /v1/share`: the headline domestic inference share and the counts behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from api.deps import ClickHouse
from tracker.metrics import Basis, headline

router = APIRouter(tags=["share"])

MAX_RANGE = timedelta(days=3660)
MAX_FILTER_VALUES = 100


class TierTotals(BaseModel):
    sovereign: float
    onshore: float
    offshore: float
    unknown: float
    total: float


class ShareResponse(BaseModel):
    basis: Basis
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    domestic_share: float | None = Field(description="(sovereign + onshore) / all; null if none")
    sovereign_share: float | None
    unknown_share: float | None
    totals: TierTotals = Field(description="The basis measure summed per tier")
    records: int
    cost_unconverted_records: int = Field(
        description="records whose cost currency has no rate in the registry (cost basis only)"
    )


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def hour_floor(value: datetime) -> datetime:
    return _utc(value).replace(minute=0, second=0, microsecond=0)


def hour_ceil(value: datetime) -> datetime:
    floor = hour_floor(value)
    return floor if floor == _utc(value) else floor + timedelta(hours=1)


def resolve_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[from, to) at the rollup's hour resolution: from rounded down, to rounded up."""
    end_h = hour_ceil(end or datetime.now(UTC))
    start_h = hour_floor(start) if start is not None else end_h - timedelta(days=30)
    if start_h >= end_h:
        raise HTTPException(422, "from: must be before to")
    if end_h - start_h > MAX_RANGE:
        raise HTTPException(422, f"from/to: range over {MAX_RANGE.days} days")
    return start_h, end_h


@router.get("/v1/share", response_model=ShareResponse, response_model_by_alias=True)
def get_share(
    client: ClickHouse,
    from_: Annotated[
        datetime | None,
        Query(alias="from", description="Start (inclusive), ISO 8601; default: to - 30 days"),
    ] = None,
    to: Annotated[datetime | None, Query(description="End (exclusive); default: now")] = None,
    basis: Basis = Basis.requests,
    agency: Annotated[
        list[str] | None, Query(max_length=MAX_FILTER_VALUES, description="Agency ids")
    ] = None,
) -> ShareResponse:
    start, end = resolve_range(from_, to)
    filters = {"agency_id": agency} if agency else {}
    share = headline(client, basis, start, end, filters)
    return ShareResponse(
        basis=basis,
        from_=start,
        to=end,
        domestic_share=share.domestic_share,
        sovereign_share=share.sovereign_share,
        unknown_share=share.unknown_share,
        totals=TierTotals(
            sovereign=share.sovereign,
            onshore=share.onshore,
            offshore=share.offshore,
            unknown=share.unknown,
            total=share.total,
        ),
        records=share.records,
        cost_unconverted_records=share.cost_unconverted_records,
    )
