"""Query parameters shared by the read routes: time range, filters, and what the caller may see.

Every value is bounded here (lengths, counts, ranges) and checked against the registry where
the registry defines the vocabulary (agencies, sectors, channels); tiers, operations and
statuses are enums. An unknown value is a 422 that names it, never an empty answer that looks
like "no usage".
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from pydantic import StringConstraints

from api.deps import ClickHouse
from tracker import registry_store
from tracker.access import Identity, Role
from tracker.bounds import EARLIEST, LATEST, as_utc, within
from tracker.capacity import registry_in_force
from tracker.contract import (
    ID_PATTERN,
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_REGION_LEN,
    NAME_PATTERN,
    Operation,
    Status,
    Tier,
)
from tracker.queries import landed_under
from tracker.registry import Registry
from tracker.settings import ApiSettings

MAX_VALUES = 100
MAX_RANGE = timedelta(days=3660)

# Each filter accepts exactly the values records may carry (tracker/contract.py), or a key a
# breakdown lists could not be filtered on (found in review: "Llama 3.1 70B Instruct" was a
# 422). Agencies and gateways are identifiers; sectors and channels are registry codes, which
# are identifiers too and are checked against the registry besides. Values only ever reach
# SQL as bound parameters (tracker/metrics.py where_clause, tracker/usage_export.py).
Value = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]
Values = list[Value] | None
# Providers and models: any printable text. Stripped as the contract strips it, so that
# " gpt-4o" names the model a record sent as " gpt-4o" was stored under.
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_NAME_LEN, pattern=NAME_PATTERN
    ),
]
Names = list[Name] | None
# Regions: as names, but shorter, and may be empty: a record without a region is stored with
# region "", which /v1/breakdown/region lists as such, so `region=` selects those records.
Region = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=MAX_REGION_LEN, pattern=NAME_PATTERN)
]
Regions = list[Region] | None
Start = Annotated[
    datetime | None,
    Query(alias="from", description="Start (inclusive), ISO 8601", examples=["2026-01-01"]),
]
End = Annotated[
    datetime | None, Query(description="End (exclusive), ISO 8601", examples=["2026-07-01"])
]


def settings(request: Request) -> ApiSettings:
    s: ApiSettings = request.app.state.api_settings
    return s


Settings = Annotated[ApiSettings, Depends(settings)]


class RegistryCache:
    """The registry in force, re-read every few seconds: filter validation runs on every
    request, and reading the ledger each time would add a query to every answer. Re-read at
    once when a scheduled change has come due since, or when this process recorded a change
    (found in review: /v1/capacity named the version of a minute-old cache, 46 s after a
    scheduled change had come into force)."""

    def __init__(self, fixed: Registry | None = None, ttl_seconds: float = 5.0) -> None:
        self._fixed = fixed
        self._ttl = ttl_seconds
        self._lock = threading.Lock()
        self._cached: Registry | None = None
        self._at = -1e18
        self._due: datetime | None = None  # the next scheduled change, when read
        self._generation = -1

    def _stale(self) -> bool:
        return (
            self._cached is None
            or time.monotonic() - self._at > self._ttl
            or self._generation != registry_store.generation
            or (self._due is not None and datetime.now(UTC) >= self._due)
        )

    def get(self, client: ClickHouse) -> Registry:
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            if self._stale():
                self._generation = registry_store.generation
                now = datetime.now(UTC)
                self._cached = registry_in_force(client)
                self._due = registry_store.next_change_due(client, now)
                self._at = time.monotonic()
            found = self._cached
        if found is None:
            raise HTTPException(503, "no registry has been loaded yet; start the tracker first")
        return found


def registry(request: Request, client: ClickHouse) -> Registry:
    cache: RegistryCache = request.app.state.registry_cache
    return cache.get(client)


CurrentRegistry = Annotated[Registry, Depends(registry)]


def check_bounds(*values: datetime | None, name: str = "from/to") -> None:
    for value in values:
        if value is None:
            continue
        try:
            # within(): also a time whose conversion to UTC overflows (year 1 east of UTC,
            # year 9999 west of it), which was a 500 on every route taking a time.
            within(value)
        except ValueError:
            raise HTTPException(
                422,
                f"{name}: {value.isoformat()} is outside {EARLIEST:%Y-%m-%d}..{LATEST:%Y-%m-%d}",
            ) from None


def exact_range(
    start: datetime | None, end: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """[from, to) as given (raw records are millisecond-precise); default the last `default`."""
    check_bounds(start, end)
    end_t = as_utc(end) if end is not None else datetime.now(UTC)
    start_t = as_utc(start) if start is not None else end_t - default
    if start_t >= end_t:
        raise HTTPException(422, "from: must be before to")
    if end_t - start_t > MAX_RANGE:
        raise HTTPException(422, f"from/to: range over {MAX_RANGE.days} days")
    return start_t, end_t


class Filters:
    """IN-filters over the rollup's dimensions, as FastAPI query parameters."""

    def __init__(
        self,
        agency: Annotated[Values, Query(max_length=MAX_VALUES, description="Agency ids")] = None,
        sector: Annotated[Values, Query(max_length=MAX_VALUES, description="Sectors")] = None,
        channel: Annotated[
            Values, Query(max_length=MAX_VALUES, description="Procurement channels")
        ] = None,
        provider: Annotated[Names, Query(max_length=MAX_VALUES, description="Providers")] = None,
        model: Annotated[Names, Query(max_length=MAX_VALUES, description="Models")] = None,
        region: Annotated[
            Regions,
            Query(max_length=MAX_VALUES, description="Cloud region codes; empty: none named"),
        ] = None,
        tier: Annotated[list[Tier] | None, Query(max_length=4, description="Tiers")] = None,
        operation: Annotated[list[Operation] | None, Query(max_length=7)] = None,
        status: Annotated[list[Status] | None, Query(max_length=2)] = None,
    ) -> None:
        self.values: dict[str, list[str]] = {
            k: sorted(set(map(str, v)))
            for k, v in {
                "agency_id": agency,
                "sector": sector,
                "channel": channel,
                "provider": provider,
                "model": model,
                "region": region,
                "tier": tier,
                "operation": operation,
                "status": status,
            }.items()
            if v
        }


_LABELS = {"agency_id": "agency", "sector": "sector", "channel": "channel"}


def outside_registry(registry: Registry, filters: dict[str, list[str]]) -> dict[str, list[str]]:
    """The agencies, sectors and channels named in `filters` that the registry does not know,
    by filter name."""
    known = {
        "agency_id": {a.id for a in registry.agencies},
        "sector": {a.sector for a in registry.agencies},
        "channel": {a.channel for a in registry.agencies},
    }
    found = {name: sorted(set(filters.get(name, [])) - allowed) for name, allowed in known.items()}
    return {name: values for name, values in found.items() if values}


def check_vocabulary(registry: Registry, filters: dict[str, list[str]], client: ClickHouse) -> None:
    """Agencies, sectors and channels named in a filter must be in the registry in force, or
    have usage landed under them: one removed from the registry (or moved to another sector)
    keeps its history, which auditors must still be able to select (found in review: 422
    "not in the registry" for an agency the breakdown still listed). A value with neither is
    a typo, refused rather than answered with nothing."""
    for name, outside in outside_registry(registry, filters).items():
        unknown = sorted(set(outside) - landed_under(client, name, outside))
        if unknown:
            raise HTTPException(
                422,
                f"{_LABELS[name]}: not in the registry and no usage landed under it: "
                f"{', '.join(unknown)} (see /v1/registry)",
            )


def scope(identity: Identity, filters: dict[str, list[str]]) -> dict[str, list[str]]:
    """Restrict an agency key to its own agency: asking for another one is 403, and every
    query (totals, breakdowns, exports) is filtered to the key's agency."""
    if identity.role is not Role.agency:
        return filters
    asked = filters.get("agency_id")
    if asked and set(asked) != {identity.agency_id}:
        raise HTTPException(403, f"this key reads only agency {identity.agency_id}")
    return {**filters, "agency_id": [identity.agency_id]}


def visible_filters(
    identity: Identity, registry: Registry, filters: dict[str, list[str]], client: ClickHouse
) -> dict[str, list[str]]:
    check_vocabulary(registry, filters, client)
    return scope(identity, filters)


def min_records(identity: Identity, settings: ApiSettings) -> int:
    """The suppression threshold for this caller: only public answers are suppressed."""
    return settings.min_cell_records if identity.role is Role.public else 0


def min_records_across_agencies(identity: Identity, settings: ApiSettings) -> int:
    """The threshold for answers that cannot be narrowed to one agency (national or sector
    figures: capacity, outlook). An agency key sees them as the public does: unsuppressed, a
    month of one small agency in its sector would be that agency's own usage (found in
    review: a finance key read a health agency's 6 requests off /v1/capacity). Not closed, and
    not by a key: any agency can take its own usage, which it knows exactly, away from a public
    figure its records are part of (README, "Not yet": a dominance rule, not built)."""
    return 0 if identity.sees_everything else settings.min_cell_records
