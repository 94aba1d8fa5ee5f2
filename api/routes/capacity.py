"""`GET /v1/capacity`: the inference capacity index I = C x S x D per period, its three layers,
the binding layer and the asynchrony penalty (definitions: tracker/capacity.py,
docs/capacity.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from api.auth import Caller, count_rows
from api.deps import ClickHouse
from api.params import (
    MAX_RANGE,
    CurrentRegistry,
    Settings,
    check_bounds,
    min_records_across_agencies,
)
from tracker.bounds import as_utc
from tracker.capacity import (
    Period,
    PeriodScore,
    capacity_series,
    combine,
    domestic_capacity_rph,
    period_ceil,
    period_floor,
    periods_between,
)
from tracker.disclosure import hidden, suppressed
from tracker.queries import landed_under
from tracker.registry import Registry, Targets

router = APIRouter(tags=["capacity"])

MAX_PERIODS = 400
DEFAULT_PERIODS = 12


def resolve_periods(
    start: datetime | None, end: datetime | None, period: Period, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """Whole periods: from rounded down, to rounded up to a period boundary; default the last
    DEFAULT_PERIODS periods up to and including the current one."""
    check_bounds(start, end)
    last = as_utc(end or now or datetime.now(UTC))
    # The caller's range, before rounding out to whole periods (found in review: rounded, the
    # default of 12 years, and any range of 10 years not on year boundaries, went over the
    # limit, so period=year always answered 422). Rounding adds at most a period each side,
    # and MAX_PERIODS bounds the count.
    if start is not None and last - as_utc(start) > MAX_RANGE:
        raise HTTPException(422, f"from/to: range over {MAX_RANGE.days} days")
    end_p = period_ceil(last, period)
    if start is not None:
        start_p = period_floor(as_utc(start), period)
    else:
        start_p = end_p
        for _ in range(DEFAULT_PERIODS):
            start_p = period_floor(start_p - timedelta(seconds=1), period)
    if start_p >= end_p:
        raise HTTPException(422, "from: must be before to")
    if len(periods_between(start_p, end_p, period)) > MAX_PERIODS:
        raise HTTPException(
            422, f"period: more than {MAX_PERIODS} {period.value} periods; use a longer period"
        )
    return start_p, end_p


def check_sector(registry: Registry, sector: str | None, client: ClickHouse) -> None:
    """A sector of the registry in force, or one usage has landed under (its history stays
    selectable after the registry moves its agencies: params.check_vocabulary)."""
    if sector is None:
        return
    known = sorted({a.sector for a in registry.agencies})
    if sector not in known and not landed_under(client, "sector", [sector]):
        raise HTTPException(422, f"sector: unknown sector {sector!r}; registered: {known}")


class Layers(BaseModel):
    C: float | None = Field(description="compute and data infrastructure, [0, 1]")
    S: float | None = Field(description="operational systems capability, [0, 1]")
    D: float | None = Field(description="institutional demand architecture, [0, 1]")


class Inputs(BaseModel):
    capacity_rph: float = Field(description="declared domestic capacity for this scope, req/h")
    peak_hour_requests: float | None = Field(
        description="the largest hourly total of requests; null when withheld "
        "(`peak_hour_suppressed`)"
    )
    requests: float
    domestic_requests: float
    domestic_within_objective: float
    domestic_latency_unmeasured: float = Field(
        description="domestic requests in rollup rows without latency (never within objective)"
    )
    registered_agencies: int
    active_agencies: int


class PeriodOut(BaseModel):
    start: datetime
    end: datetime
    layers: Layers
    index: float | None = Field(description="I = C x S x D; null unless all layers are known")
    balanced_index: float | None = Field(description="m^3, m = (C + S + D) / 3")
    asynchrony_penalty: float | None = Field(description="1 - I / m^3 (0 when m = 0)")
    binding: str | None = Field(description="the lowest layer: C, S or D")
    inputs: Inputs | None = Field(description="null when suppressed")
    suppressed: bool = Field(
        default=False,
        description="public answers: a period built from too few records is withheld whole",
    )
    peak_hour_suppressed: bool = Field(
        default=False,
        description="public answers: the peak hour was built from too few records, so "
        "peak_hour_requests is null, and so are C (capacity / peak would give it back), the "
        "index, balanced index, penalty and binding layer",
    )


class CapacityResponse(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    period: Period
    sector: str | None
    country: str
    illustrative: bool
    registry_version: str
    latency_objective_ms: int
    declared_domestic_capacity_rph: float
    periods: list[PeriodOut]
    latest: PeriodOut | None = Field(description="the last period with an index")


def _out(p: PeriodScore, hide: bool, k: int) -> PeriodOut:
    f, x = p.facts, p.layers
    if hide:
        # The layers are ratios of the same small counts (S: one agency's latency record).
        return PeriodOut(
            start=f.start, end=f.end, layers=Layers(C=None, S=None, D=None), index=None,
            balanced_index=None, asynchrony_penalty=None, binding=None, inputs=None,
            suppressed=True,
        )  # fmt: skip
    # The peak is one hour's exact total: a cell of its own, which a period of k records or
    # more can hold as a single record (found in review: one hospital's 777-request hour,
    # withheld by the hourly series, was published here). C = capacity / peak gives the peak
    # back, and the index (I / (S x D)), m^3 (3m - S - D) and the penalty give back C, so they
    # go with it.
    # And the period's requests minus the peak are the other hours' together: a cell too, small
    # when they hold fewer than k records (found in review: 137 - 100 gave one 37-request
    # record back).
    hide_peak = hidden(f.peak_hour_records, k) or hidden(f.records - f.peak_hour_records, k)
    if hide_peak:
        x = combine(None, x.s, x.d)
    return PeriodOut(
        start=f.start,
        end=f.end,
        layers=Layers(C=x.c, S=x.s, D=x.d),
        index=x.index,
        balanced_index=x.balanced_index,
        asynchrony_penalty=x.asynchrony_penalty,
        binding=x.binding,
        inputs=Inputs(
            capacity_rph=p.capacity_rph,
            peak_hour_requests=None if hide_peak else f.peak_hour_requests,
            requests=f.requests,
            domestic_requests=f.domestic_requests,
            domestic_within_objective=f.domestic_within_objective,
            domestic_latency_unmeasured=f.domestic_latency_unmeasured,
            registered_agencies=len(f.agencies),
            active_agencies=p.active_agencies,
        ),
        peak_hour_suppressed=hide_peak,
    )


@router.get("/v1/capacity", response_model=CapacityResponse, response_model_by_alias=True)
def get_capacity(
    request: Request,
    client: ClickHouse,
    registry: CurrentRegistry,
    identity: Caller,
    settings: Settings,
    from_: Annotated[
        datetime | None,
        Query(alias="from", description="Start, rounded down to its period; default: 12 periods"),
    ] = None,
    to: Annotated[
        datetime | None, Query(description="End, rounded up to a period boundary; default: now")
    ] = None,
    period: Period = Period.month,
    sector: Annotated[
        str | None, Query(max_length=128, description="A registered sector; default: national")
    ] = None,
) -> CapacityResponse:
    start, end = resolve_periods(from_, to, period)
    check_sector(registry, sector, client)
    k = min_records_across_agencies(identity, settings)
    series = capacity_series(client, registry, start, end, period, sector)
    # The periods are a table whose total is published (the headline over the same range and
    # sector): one small period hidden alone would be that total minus the others.
    hide = suppressed([p.facts.records for p in series], k) if k else set()
    scores = [_out(p, i in hide, k) for i, p in enumerate(series)]
    count_rows(request, len(scores))
    latest = next((p for p in reversed(scores) if p.index is not None), None)
    return CapacityResponse(
        from_=start,
        to=end,
        period=period,
        sector=sector,
        country=registry.country,
        illustrative=registry.illustrative,
        registry_version=registry.version,
        latency_objective_ms=(registry.targets or Targets()).latency_objective_ms,
        declared_domestic_capacity_rph=domestic_capacity_rph(registry),
        periods=scores,
        latest=latest,
    )
