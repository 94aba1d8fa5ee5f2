"""`GET /v1/outlook`: the domestic share's monthly trend, projected with a 95% prediction band,
against the national target trajectory and the 2028 window (method: tracker/outlook.py,
docs/capacity.md)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from api.auth import Caller, count_rows
from api.deps import ClickHouse
from api.params import CurrentRegistry, Settings, check_bounds, min_records_across_agencies
from api.routes.capacity import check_sector
from tracker.capacity import Period, period_ceil, period_floor
from tracker.disclosure import suppressed
from tracker.outlook import (
    HORIZON_MONTHS,
    LEVEL,
    Band,
    Status,
    TargetCheck,
    month_index,
    month_start,
    monthly_shares,
    outlook,
)

router = APIRouter(tags=["outlook"])

MAX_MONTHS = 120
DEFAULT_MONTHS = 36
METHOD = (
    "ordinary least squares of the monthly domestic share (requests) on the month index, "
    "months equally weighted; band: 95% prediction interval from the residual standard error "
    "with Student's t on n - 2 degrees of freedom; projected values clipped to [0, 1]"
)


class FitOut(BaseModel):
    months: int
    slope_per_month: float
    intercept: float = Field(description="fitted share at the first month of history")
    residual_se: float | None = Field(description="null with two months (no residual)")
    dof: int
    t_quantile: float | None
    level: float


class BandOut(BaseModel):
    month: date
    share: float | None
    lower: float | None
    upper: float | None


class HistoryOut(BaseModel):
    month: date
    requests: float
    domestic: float
    share: float
    fitted: float | None


class TargetOut(BaseModel):
    by: date
    target: float
    observed: float | None = Field(description="that month's observed share, if in history")
    projected: BandOut | None
    met: bool | None = Field(description="observed (else projected) share >= target")


class OutlookResponse(BaseModel):
    from_: date = Field(serialization_alias="from")
    to: date
    sector: str | None
    basis: str
    country: str
    illustrative: bool
    registry_version: str
    status: Status
    method: str
    horizon_months: int
    fit: FitOut | None
    last_month: date | None
    target: TargetOut | None = Field(description="the final point of the trajectory")
    reached: date | None = Field(description="month the fitted trend reaches the final target")
    reached_earliest: date | None = Field(description="... by the band's upper edge")
    reached_latest: date | None = Field(description="... by the band's lower edge")
    window_closes: date | None
    window: BandOut | None = Field(description="projected share at the window's close")
    trajectory: list[TargetOut]
    history: list[HistoryOut]
    withheld_months: int = Field(
        description="public answers: months built from too few records, left out of the "
        "history and the fit"
    )
    projection: list[BandOut]


def _band(b: Band | None) -> BandOut | None:
    return (
        None if b is None else BandOut(month=b.month, share=b.value, lower=b.lower, upper=b.upper)
    )


def _target(t: TargetCheck | None) -> TargetOut | None:
    if t is None:
        return None
    return TargetOut(
        by=t.by, target=t.target, observed=t.observed, projected=_band(t.projected), met=t.met
    )


def resolve_months(
    start: datetime | None, end: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """Whole months; default: the last DEFAULT_MONTHS complete months."""
    check_bounds(start, end)
    if end is not None:
        end_m = period_ceil(end, Period.month)
    else:
        end_m = period_floor(now or datetime.now(UTC), Period.month)
    if start is not None:
        start_m = period_floor(start, Period.month)
    else:
        first = month_start(month_index(end_m.date()) - DEFAULT_MONTHS)
        start_m = datetime(first.year, first.month, 1, tzinfo=UTC)
    if start_m >= end_m:
        raise HTTPException(422, "from: must be before to (whole months)")
    if month_index(end_m.date()) - month_index(start_m.date()) > MAX_MONTHS:
        raise HTTPException(422, f"from/to: range over {MAX_MONTHS} months")
    return start_m, end_m


@router.get("/v1/outlook", response_model=OutlookResponse, response_model_by_alias=True)
def get_outlook(
    request: Request,
    client: ClickHouse,
    registry: CurrentRegistry,
    identity: Caller,
    settings: Settings,
    from_: Annotated[
        datetime | None,
        Query(alias="from", description="First month of history; default: 36 months back"),
    ] = None,
    to: Annotated[
        datetime | None,
        Query(description="End (rounded up to a month); default: start of the current month"),
    ] = None,
    sector: Annotated[
        str | None, Query(max_length=128, description="A registered sector; default: national")
    ] = None,
) -> OutlookResponse:
    start, end = resolve_months(from_, to)
    check_sector(registry, sector, client)
    k = min_records_across_agencies(identity, settings)
    everything = monthly_shares(client, start, end, sector)
    # A small month is withheld from the fit too: a trend through one agency's months would
    # publish that agency's months in all but name. The months are a table whose total is
    # published (the headline over the same range and sector), so one small month is never
    # withheld alone: the total minus the months shown would give it back (found in review).
    hide = suppressed([m.records for m in everything], k) if k else set()
    history = [m for i, m in enumerate(everything) if i not in hide]
    count_rows(request, len(history))
    result = outlook(history, registry.targets)
    fit = result.fit
    fitted = {b.month: b.value for b in result.fitted}
    return OutlookResponse(
        from_=start.date(),
        to=end.date(),
        sector=sector,
        basis="requests",
        country=registry.country,
        illustrative=registry.illustrative,
        registry_version=registry.version,
        status=result.status,
        method=METHOD,
        horizon_months=HORIZON_MONTHS,
        fit=None
        if fit is None
        else FitOut(
            months=fit.n,
            slope_per_month=fit.slope,
            intercept=fit.intercept,
            residual_se=fit.residual_se,
            dof=fit.n - 2,
            t_quantile=fit.t,
            level=LEVEL,
        ),
        last_month=result.last_month,
        target=_target(result.final_target),
        reached=result.reached,
        reached_earliest=result.reached_earliest,
        reached_latest=result.reached_latest,
        window_closes=registry.targets.window_closes if registry.targets else None,
        window=_band(result.window),
        trajectory=[t for t in map(_target, result.trajectory) if t is not None],
        history=[
            HistoryOut(
                month=m.month,
                requests=m.requests,
                domestic=m.domestic,
                share=m.share,
                fitted=fitted.get(m.month),
            )
            for m in history
        ],
        projection=[b for b in map(_band, result.projection) if b is not None],
        withheld_months=len(everything) - len(history),
    )
