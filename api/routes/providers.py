"""`GET /v1/providers`: honest provider comparison, domestic versus foreign: volume, success
rate, latency p50/p95 and cost per 1k tokens (SQL and the percentile method: tracker/queries.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Caller, count_rows
from api.deps import ClickHouse
from api.params import CurrentRegistry, End, Filters, Settings, Start, min_records, visible_filters
from api.routes.share import resolve_range
from tracker.disclosure import suppressed, suppressed_nested, unranked
from tracker.queries import ProviderCell, providers

router = APIRouter(tags=["providers"])

# Percentiles scan raw records over the range; a year bounds that scan.
MAX_RANGE = timedelta(days=366)
# Provider names come from the records; as breakdowns and cost groups, an answer stops here.
MAX_PROVIDERS = 1000


class ProviderOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "provider": "bhashini",
                    "origin": "domestic",
                    "records": 518,
                    "requests": 855921,
                    "success_rate": 0.983,
                    "latency_mean_ms": 407.5,
                    "latency_p50_ms": 392.7,
                    "latency_p95_ms": 557.6,
                    "tokens": 732308564,
                    "cost": 36792.8,
                    "cost_per_1k_tokens": 0.05,
                    "suppressed": False,
                }
            ]
        }
    )

    provider: str = Field(description="'' in `origins`: all providers of that origin")
    origin: str = Field(description="domestic (sovereign or onshore), foreign (offshore), unknown")
    records: int | None
    requests: int | None
    success_rate: float | None = Field(description="requests with status ok / requests")
    latency_mean_ms: float | None = Field(description="request-weighted, from raw records")
    latency_p50_ms: float | None = Field(description="request-weighted, from raw records")
    latency_p95_ms: float | None
    tokens: int | None
    cost: float | None = Field(description="in the registry's reporting currency")
    cost_per_1k_tokens: float | None
    suppressed: bool = False


def _out(c: ProviderCell, hide: bool) -> ProviderOut:
    if hide:
        return ProviderOut(provider=c.provider, origin=c.origin, records=None, requests=None,
                           success_rate=None, latency_mean_ms=None, latency_p50_ms=None,
                           latency_p95_ms=None, tokens=None, cost=None, cost_per_1k_tokens=None,
                           suppressed=True)  # fmt: skip
    return ProviderOut(provider=c.provider, origin=c.origin, records=c.records,
                       requests=c.requests, success_rate=c.success_rate,
                       latency_mean_ms=c.latency_mean_ms, latency_p50_ms=c.latency_p50_ms,
                       latency_p95_ms=c.latency_p95_ms, tokens=c.tokens, cost=c.cost,
                       cost_per_1k_tokens=c.cost_per_1k_tokens)  # fmt: skip


def _tables(
    origins: list[ProviderCell], per: list[ProviderCell], k: int, limit: int
) -> tuple[list[ProviderOut], list[ProviderOut]]:
    """The origins table, and the providers nested in it: each origin's providers are a table
    whose total (the origin's) is published beside them, so they are suppressed origin by
    origin (disclosure.suppressed_nested). `per` holds each origin's providers most requests
    first; those past the first `limit` of their origin are left out, and count as withheld."""
    rank: dict[str, int] = {}
    past: set[int] = set()
    for i, c in enumerate(per):
        rank[c.origin] = rank.get(c.origin, 0) + 1
        if rank[c.origin] > limit:
            past.add(i)
    if not k:
        return [_out(c, False) for c in origins], [
            _out(c, False) for i, c in enumerate(per) if i not in past
        ]
    hide_o = suppressed([c.records for c in origins], k)
    hidden_origins = {origins[i].origin for i in hide_o}
    hide_p = suppressed_nested(
        [c.records for c in per], [c.origin for c in per], k, hidden_origins, past
    )
    providers = [_out(c, i in hide_p) for i, c in enumerate(per) if i not in past]
    # Ranked by requests within each origin: withheld providers go last in theirs.
    by_origin: dict[str, list[ProviderOut]] = {}
    for out in providers:
        by_origin.setdefault(out.origin, []).append(out)
    return (
        [_out(c, i in hide_o) for i, c in enumerate(origins)],
        [c for group in by_origin.values()
         for c in unranked(group, lambda c: c.suppressed, lambda c: c.provider)],
    )  # fmt: skip


class ProvidersResponse(BaseModel):
    from_: datetime = Field(serialization_alias="from")
    to: datetime
    currency: str
    origins: list[ProviderOut] = Field(description="domestic vs foreign vs unknown, all providers")
    providers: list[ProviderOut] = Field(description="per provider and origin")


@router.get("/v1/providers", response_model=ProvidersResponse, response_model_by_alias=True)
def get_providers(
    request: Request,
    client: ClickHouse,
    identity: Caller,
    registry: CurrentRegistry,
    settings: Settings,
    filters: Annotated[Filters, Depends()],
    from_: Start = None,
    to: End = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_PROVIDERS,
            description="Most providers returned per origin, most requests first",
        ),
    ] = MAX_PROVIDERS,
) -> ProvidersResponse:
    """Per provider, split by where it served (a provider with an in-country region and a
    foreign one appears twice), and the domestic/foreign totals. Range at most a year."""
    start, end = resolve_range(from_, to)
    if end - start > MAX_RANGE:
        raise HTTPException(
            422, f"from/to: provider comparison spans at most {MAX_RANGE.days} days"
        )
    scoped = visible_filters(identity, registry, filters.values, client)
    k = min_records(identity, settings)
    # Two providers past the limit tell whether one or several of an origin are left out: one
    # small provider left out alone would be its origin's total minus the providers shown.
    origins, per = _tables(
        providers(client, start, end, scoped, by_provider=False),
        providers(client, start, end, scoped, limit=limit + 2 if k else limit),
        k,
        limit,
    )
    count_rows(request, len(origins) + len(per))
    return ProvidersResponse(
        from_=start, to=end, currency=registry.reporting_currency, origins=origins, providers=per
    )
