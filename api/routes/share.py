"""`GET /v1/share`: the headline domestic inference share and the counts behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Caller, count_rows
from api.cache import TtlCache
from api.deps import ClickHouse
from api.params import (
    CurrentRegistry,
    Filters,
    Settings,
    check_bounds,
    min_records,
    visible_filters,
)
from tracker.access import Role
from tracker.disclosure import hidden
from tracker.metrics import AsClassified, Basis, Share, headline, hour_ceil, hour_floor

router = APIRouter(tags=["share"])

MAX_RANGE = timedelta(days=3660)


class TierTotals(BaseModel):
    """The basis measure per tier; null when withheld from the public (too few records)."""

    sovereign: float | None
    onshore: float | None
    offshore: float | None
    unknown: float | None
    total: float | None


class ShareResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "basis": "requests",
                    "from": "2026-06-01T00:00:00Z",
                    "to": "2026-07-01T00:00:00Z",
                    "domestic_share": 0.41,
                    "sovereign_share": 0.22,
                    "unknown_share": 0.05,
                    "totals": {
                        "sovereign": 2200.0,
                        "onshore": 1900.0,
                        "offshore": 5400.0,
                        "unknown": 500.0,
                        "total": 10000.0,
                    },
                    "records": 812,
                    "cost_unconverted_records": 0,
                    "suppressed": False,
                }
            ]
        }
    )

    basis: Basis
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    domestic_share: float | None = Field(description="(sovereign + onshore) / all; null if none")
    sovereign_share: float | None
    unknown_share: float | None
    totals: TierTotals = Field(description="The basis measure summed per tier")
    records: int | None
    cost_unconverted_records: int | None = Field(
        description="records whose cost currency has no rate in the registry (cost basis only)"
    )
    suppressed: bool = Field(
        default=False,
        description="public answers built from fewer records than the threshold are withheld",
    )
    registry_version: str | None = Field(
        default=None,
        description="as_classified=now: the registry version every record was re-classified "
        "by (the one in force when asked); null for then: each record's own version",
    )


PUBLIC_NOW_RANGE = timedelta(days=366)


def resolve_range(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """[from, to) at the rollup's hour resolution: from rounded down, to rounded up."""
    check_bounds(start, end)
    end_h = hour_ceil(end or datetime.now(UTC))
    start_h = hour_floor(start) if start is not None else end_h - timedelta(days=30)
    if start_h >= end_h:
        raise HTTPException(422, "from: must be before to")
    if end_h - start_h > MAX_RANGE:
        raise HTTPException(422, f"from/to: range over {MAX_RANGE.days} days")
    return start_h, end_h


@router.get("/v1/share", response_model=ShareResponse, response_model_by_alias=True)
def get_share(
    request: Request,
    client: ClickHouse,
    identity: Caller,
    registry: CurrentRegistry,
    settings: Settings,
    filters: Annotated[Filters, Depends()],
    from_: Annotated[
        datetime | None,
        Query(
            alias="from",
            description="Start (inclusive), ISO 8601; default: to - 30 days",
            examples=["2026-06-01"],
        ),
    ] = None,
    to: Annotated[
        datetime | None,
        Query(description="End (exclusive); default: now", examples=["2026-07-01"]),
    ] = None,
    basis: Basis = Basis.requests,
    as_classified: Annotated[
        AsClassified,
        Query(description="then: each record's tier when it landed; now: by today's registry"),
    ] = AsClassified.then,
) -> ShareResponse:
    """The headline domestic share over [from, to) at the hourly rollup's resolution, with the
    per-tier sums behind it. Public answers built from fewer records than the configured
    threshold are withheld (`suppressed`); an agency key sees only its own agency."""
    start, end = resolve_range(from_, to)
    # "now" may read raw records (months no `tracker reclassify` covered) and is never cached:
    # a public caller gets a year of it at a time, as /v1/providers does.
    public_now = identity.role is Role.public and as_classified is AsClassified.now
    if public_now and end - start > PUBLIC_NOW_RANGE:
        raise HTTPException(
            422,
            f"from/to: as_classified=now spans at most {PUBLIC_NOW_RANGE.days} days "
            "without an API key",
        )
    scoped = visible_filters(identity, registry, filters.values, client)
    if identity.role is Role.public and as_classified is AsClassified.then:
        # Public answers are reused until the next landing (api/cache.py). Not `now`: the
        # registry in force can change at a scheduled time without anything being written.
        cache: TtlCache[Share] = request.app.state.headline_cache
        key = (basis, start, end, as_classified,
               tuple((k, tuple(v)) for k, v in sorted(scoped.items())))  # fmt: skip
        share = cache.get(
            key, lambda: headline(client, basis, start, end, scoped, as_classified=as_classified)
        )
    else:
        share = headline(client, basis, start, end, scoped, as_classified=as_classified)
    count_rows(request, 1)  # one headline (the audit log's `rows`)
    if hidden(share.records, min_records(identity, settings)):
        return ShareResponse(
            basis=basis, from_=start, to=end, domestic_share=None, sovereign_share=None,
            unknown_share=None, totals=TierTotals(sovereign=None, onshore=None, offshore=None,
            unknown=None, total=None), records=None, cost_unconverted_records=None,
            suppressed=True, registry_version=share.registry_version,
        )  # fmt: skip
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
        registry_version=share.registry_version,
    )
