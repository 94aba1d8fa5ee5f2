"""`GET /v1/timeseries` and `GET /v1/breakdown/{dimension}`: the headline's shares over time
buckets and across agencies, sectors, channels, providers, models, regions and tiers (SQL:
tracker/queries.py, the headline's own measures)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Caller, count_rows
from api.deps import ClickHouse
from api.params import CurrentRegistry, End, Filters, Settings, Start, min_records, visible_filters
from api.routes.share import resolve_range
from tracker.disclosure import hidden, suppressed, unranked
from tracker.metrics import Basis
from tracker.queries import Dimension, Interval, ShareCell, breakdown, series

router = APIRouter(tags=["share"])

MAX_BUCKETS = 5000
MAX_CELLS = 1000
BUCKET_SPAN = {
    Interval.hour: timedelta(hours=1),
    Interval.day: timedelta(days=1),
    Interval.week: timedelta(days=7),
    Interval.month: timedelta(days=28),
}

_CELL_EXAMPLE: dict[str, Any] = {
    "key": "health",
    "sovereign": 2200.0,
    "onshore": 1900.0,
    "offshore": 5400.0,
    "unknown": 500.0,
    "total": 10000.0,
    "records": 812,
    "domestic_share": 0.41,
    "sovereign_share": 0.22,
    "unknown_share": 0.05,
    "suppressed": False,
}


class Cell(BaseModel):
    """The basis summed per tier and the shares, for one bucket or group. Every figure is null
    when the cell is withheld from the public (`suppressed`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_CELL_EXAMPLE]})

    key: str = Field(description="bucket start (ISO 8601, UTC) or the group's value")
    sovereign: float | None
    onshore: float | None
    offshore: float | None
    unknown: float | None
    total: float | None
    records: int | None
    domestic_share: float | None
    sovereign_share: float | None
    unknown_share: float | None
    suppressed: bool = False


def cells(
    found: list[ShareCell], k: int, shown: int | None = None, *, ranked: bool = False
) -> list[Cell]:
    """The first `shown` cells of `found` (all by default), small ones withheld for the public;
    cells past `shown` count as withheld (disclosure.suppressed). `ranked`: `found` is in order
    of value, so withheld cells go last, by key (disclosure.unranked)."""
    shown = len(found) if shown is None else min(shown, len(found))
    rest = range(shown, len(found))
    hide = suppressed([c.records for c in found], k, rest) if k > 0 else set()
    out = []
    for i, c in enumerate(found[:shown]):
        if i in hide:
            out.append(Cell(key=c.key, sovereign=None, onshore=None, offshore=None, unknown=None,
                            total=None, records=None, domestic_share=None, sovereign_share=None,
                            unknown_share=None, suppressed=True))  # fmt: skip
        else:
            out.append(Cell(**c.__dict__))
    return unranked(out, lambda c: c.suppressed, lambda c: c.key) if ranked else out


def tier_cells(found: list[ShareCell], k: int, shown: int) -> list[Cell]:
    """`cells` for the tier breakdown. Its cells are the headline's own tier figures, which
    /v1/share publishes whenever the whole is built from k records or more (a tier inside a
    cell is shown: docs/api.md), so they are withheld together or not at all. Withholding a
    small tier here alone hid nothing the headline did not show (found in review)."""
    whole = sum(c.records for c in found)
    return cells(found, k if hidden(whole, k) else 0, shown)


class SeriesResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "basis": "requests",
                    "interval": "month",
                    "from": "2026-01-01T00:00:00Z",
                    "to": "2026-07-01T00:00:00Z",
                    "buckets": [{**_CELL_EXAMPLE, "key": "2026-01-01T00:00:00+00:00"}],
                }
            ]
        }
    )

    basis: Basis
    interval: Interval
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    buckets: list[Cell] = Field(description="buckets with any usage, oldest first")


@router.get("/v1/timeseries", response_model=SeriesResponse, response_model_by_alias=True)
def get_timeseries(
    request: Request,
    client: ClickHouse,
    identity: Caller,
    registry: CurrentRegistry,
    settings: Settings,
    filters: Annotated[Filters, Depends()],
    from_: Start = None,
    to: End = None,
    basis: Basis = Basis.requests,
    interval: Interval = Interval.day,
) -> SeriesResponse:
    """Shares per hour, day, ISO week (Monday) or calendar month, in UTC, by any basis."""
    start, end = resolve_range(from_, to)
    n = (end - start) / BUCKET_SPAN[interval]
    if n > MAX_BUCKETS:
        raise HTTPException(
            422, f"interval: {int(n)} {interval.value} buckets in the range, at most "
            f"{MAX_BUCKETS}; use a longer interval or a shorter range",
        )  # fmt: skip
    scoped = visible_filters(identity, registry, filters.values, client)
    found = [c for _, c in series(client, basis, interval, start, end, scoped)]
    out = cells(found, min_records(identity, settings))
    count_rows(request, len(out))
    return SeriesResponse(basis=basis, interval=interval, from_=start, to=end, buckets=out)


class BreakdownResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "basis": "requests",
                    "dimension": "sector",
                    "from": "2026-06-01T00:00:00Z",
                    "to": "2026-07-01T00:00:00Z",
                    "cells": [_CELL_EXAMPLE],
                }
            ]
        }
    )

    basis: Basis
    dimension: Dimension
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    cells: list[Cell] = Field(description="largest total first")


@router.get(
    "/v1/breakdown/{dimension}", response_model=BreakdownResponse, response_model_by_alias=True
)
def get_breakdown(
    request: Request,
    dimension: Dimension,
    client: ClickHouse,
    identity: Caller,
    registry: CurrentRegistry,
    settings: Settings,
    filters: Annotated[Filters, Depends()],
    from_: Start = None,
    to: End = None,
    basis: Basis = Basis.requests,
    limit: Annotated[int, Query(ge=1, le=MAX_CELLS, description="Most cells returned")] = 100,
) -> BreakdownResponse:
    """Shares per agency, sector, procurement channel, provider, model, region or tier.
    An agency key sees its own agency only, whatever the dimension."""
    start, end = resolve_range(from_, to)
    scoped = visible_filters(identity, registry, filters.values, client)
    k = min_records(identity, settings)
    # Two cells past the limit tell whether one cell or several are left out: one small cell
    # left out alone would be the published total minus the cells shown.
    found = breakdown(client, basis, dimension, start, end, scoped, limit + 2 if k else limit)
    if dimension is Dimension.tier:
        out = tier_cells(found, k, shown=limit)
    else:
        out = cells(found, k, shown=limit, ranked=True)
    count_rows(request, len(out))
    return BreakdownResponse(basis=basis, dimension=dimension, from_=start, to=end, cells=out)
