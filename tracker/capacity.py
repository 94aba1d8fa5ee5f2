"""Inference capacity index I = C x S x D and its asynchrony penalty, per period.

From "Making Inference Infrastructure Public": national inference capacity is the product of
physical compute (C), operational systems capability (S) and institutional demand architecture
(D); capacity is lost when the three layers develop unevenly. Each layer is scored in [0, 1]
from data the product holds (docs/capacity.md has the full definitions):

  C = min(1, declared domestic serving capacity (requests/hour) / peak hourly requests)
  S = domestic requests in ok rows whose mean latency is within the objective / domestic requests
  D = mean over registered agencies of [active in the period] x that agency's domestic share
  I = C x S x D,  m = (C + S + D) / 3,  penalty = 1 - I / m^3  (0 when m = 0)

Pure formulas first (unit-tested by hand), then the SQL that feeds them (tests/integration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker.bounds import as_utc
from tracker.metrics import ROLLUP, ROLLUP_KEY, where_clause
from tracker.registry import Registry, Targets
from tracker.registry_store import effective, history, registry_of

DOMESTIC_TIERS = ("sovereign", "onshore")
LAYERS = ("C", "S", "D")


class Period(StrEnum):
    day = "day"
    week = "week"  # ISO week, Monday 00:00 UTC
    month = "month"
    quarter = "quarter"
    year = "year"


# The SQL bucket of each period: the Date its period starts on (UTC, as the rollup's hour).
PERIOD_SQL: dict[Period, str] = {
    Period.day: "toDate(hour)",
    Period.week: "toMonday(hour)",
    Period.month: "toStartOfMonth(hour)",
    Period.quarter: "toStartOfQuarter(hour)",
    Period.year: "toStartOfYear(hour)",
}


def period_floor(value: datetime, period: Period) -> datetime:
    """The start of the period containing value (UTC)."""
    v = as_utc(value)
    day = datetime(v.year, v.month, v.day, tzinfo=UTC)
    if period is Period.day:
        return day
    if period is Period.week:
        return day - timedelta(days=v.weekday())
    if period is Period.month:
        return day.replace(day=1)
    if period is Period.quarter:
        return day.replace(month=(v.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def period_next(start: datetime, period: Period) -> datetime:
    """The start of the period after the one starting at `start`."""
    if period is Period.day:
        return start + timedelta(days=1)
    if period is Period.week:
        return start + timedelta(days=7)
    months = {Period.month: 1, Period.quarter: 3, Period.year: 12}[period]
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1, day=1)


def period_ceil(value: datetime, period: Period) -> datetime:
    floor = period_floor(value, period)
    return floor if floor == as_utc(value) else period_next(floor, period)


def periods_between(start: datetime, end: datetime, period: Period) -> list[datetime]:
    """Starts of the whole periods covering [start, end)."""
    starts: list[datetime] = []
    cursor = period_floor(start, period)
    while cursor < end:
        starts.append(cursor)
        cursor = period_next(cursor, period)
    return starts


# ---- the formulas (pure) ----------------------------------------------------------------


def domestic_capacity_rph(registry: Registry) -> float:
    """Declared serving capacity of facilities on the registry country's soil (sovereign and
    onshore alike); a facility that declares none counts 0."""
    return sum(
        f.serving_capacity_rph or 0.0 for f in registry.facilities if f.country == registry.country
    )


def sector_capacity_rph(national_rph: float, sector_requests: float, all_requests: float) -> float:
    """A sector's pro-rata share of the national capacity: by its share of the period's
    requests. Facilities serve every sector, so comparing one sector's peak with the whole
    national capacity would always look sufficient."""
    if all_requests <= 0:
        return 0.0
    return national_rph * sector_requests / all_requests


def layer_c(capacity_rph: float, peak_hour_requests: float) -> float | None:
    """C: min(1, capacity / peak hourly demand); None when there was no demand to serve."""
    if peak_hour_requests <= 0:
        return None
    return min(1.0, max(0.0, capacity_rph) / peak_hour_requests)


def layer_s(all_requests: float, domestic_requests: float, within_objective: float) -> float | None:
    """S: share of domestically served requests that succeeded within the latency objective.

    None when there was no demand at all; 0 when there was demand but nothing was served
    domestically (no operational capability was demonstrated)."""
    if all_requests <= 0:
        return None
    if domestic_requests <= 0:
        return 0.0
    return min(1.0, within_objective / domestic_requests)


def layer_d(agencies: Sequence[tuple[float, float]]) -> float | None:
    """D: mean over registered agencies of [active] x domestic share of its requests.

    `agencies` holds (requests, domestic requests) for EVERY registered agency in scope,
    (0, 0) for one not seen in the period: inactive agencies pull D down. None if none is
    registered in scope."""
    if not agencies:
        return None
    total = 0.0
    for requests, domestic in agencies:
        if requests > 0:
            total += min(1.0, domestic / requests)
    return total / len(agencies)


@dataclass(frozen=True)
class Index:
    c: float | None
    s: float | None
    d: float | None
    index: float | None  # I = C x S x D
    balanced_index: float | None  # m^3: what I would be with the same layers developed evenly
    asynchrony_penalty: float | None  # 1 - I / m^3
    binding: str | None  # the lowest layer (C, S, D; ties go to the first in that order)


def combine(c: float | None, s: float | None, d: float | None) -> Index:
    """I, the asynchrony penalty and the binding layer; all None unless all three layers are."""
    if c is None or s is None or d is None:
        return Index(c, s, d, None, None, None, None)
    product = c * s * d
    mean = (c + s + d) / 3
    balanced = mean**3
    # AM-GM: I <= m^3, so the penalty is in [0, 1]; clamp float rounding at the edges.
    penalty = 0.0 if mean == 0 else min(1.0, max(0.0, 1.0 - product / balanced))
    values = (c, s, d)
    binding = LAYERS[values.index(min(values))]
    return Index(c, s, d, product, balanced, penalty, binding)


# ---- the SQL that feeds them --------------------------------------------------------------


@dataclass(frozen=True)
class PeriodFacts:
    """What the product holds about one period and scope, before scoring."""

    start: datetime
    end: datetime
    requests: float  # all requests in scope
    peak_hour_requests: float  # largest hourly total of requests in scope
    national_requests: float  # all requests in the period, every sector (for pro-rata C)
    domestic_requests: float
    domestic_within_objective: float
    domestic_latency_unmeasured: float  # domestic requests in rows without any latency
    agencies: tuple[tuple[str, float, float], ...]  # (agency_id, requests, domestic requests)
    records: int = 0  # usage records in scope (public answers withhold small ones)
    # usage records in the peak hour: the peak is one hour's exact total, a cell of its own
    peak_hour_records: int = 0


@dataclass(frozen=True)
class PeriodScore:
    facts: PeriodFacts
    capacity_rph: float
    active_agencies: int
    layers: Index


def demand_sql(period: Period, filters: dict[str, list[str]]) -> str:
    """Per period: total requests, the peak hourly total, the records behind the period and
    the records behind its peak hour (the peak is published only if that hour is not a small
    cell). Of hours tied at the peak, the one with the fewest records counts: the published
    peak is each of their totals."""
    return f"""
SELECT bucket, sum(req) AS requests, max(req) AS peak, sum(rec) AS records,
       argMax(rec, (req, -toInt64(rec))) AS peak_records
FROM (
    SELECT hour, {PERIOD_SQL[period]} AS bucket, sum(requests) AS req, sum(records) AS rec
    FROM {ROLLUP}
    WHERE {where_clause(filters)}
    GROUP BY hour
)
GROUP BY bucket
""".strip()


def service_sql(period: Period, filters: dict[str, list[str]]) -> str:
    """Per period: domestic requests, and those in ok rows whose mean latency per record is
    within the objective. The rollup is summed to its full key first: a SummingMergeTree row
    may still be split across unmerged parts, and the mean is only right over the whole row."""
    domestic = {**filters, "tier": list(DOMESTIC_TIERS)}
    return f"""
SELECT
    {PERIOD_SQL[period]} AS bucket,
    sum(req) AS domestic,
    sumIf(req, status = 'ok' AND lat_n > 0 AND lat_sum <= {{objective_ms:UInt64}} * lat_n)
        AS within,
    sumIf(req, lat_n = 0) AS unmeasured
FROM (
    SELECT {ROLLUP_KEY},
           sum(requests) AS req, sum(latency_ms_sum) AS lat_sum, sum(latency_count) AS lat_n
    FROM {ROLLUP}
    WHERE {where_clause(domestic)}
    GROUP BY {ROLLUP_KEY}
)
GROUP BY bucket
""".strip()


def agency_sql(period: Period, filters: dict[str, list[str]] | None = None) -> str:
    """Per period and registered agency: requests and domestic requests, within `filters` (a
    sector scope: the rows C and S read, not every row of an agency the registry lists under
    the sector today; found in review: an agency moved between sectors brought its old rows
    into D, beside no records, so nothing was withheld)."""
    return f"""
SELECT {PERIOD_SQL[period]} AS bucket, agency_id,
       sum(requests) AS total_requests,
       sumIf(requests, tier IN {{domestic_tiers:Array(String)}}) AS domestic_requests
FROM {ROLLUP}
WHERE {where_clause({**(filters or {}), "agency_id": []})}
GROUP BY bucket, agency_id
""".strip()


def registered_by_period(
    client: Client,
    registry: Registry,
    starts: Sequence[datetime],
    period: Period,
    sector: str | None,
) -> list[tuple[str, ...]]:
    """A of each period: the agencies (of `sector`) the registry in force at the period's end
    lists, as the period's rows were classified then; `registry` for a period not ended yet.
    A period that ended before the ledger's first change takes that first version: the
    earliest known, as rows landed before any change was recorded were classified (found in
    review: it took today's `registry`, so a store's closed months before its first start
    counted agencies registered since, and their D fell).

    Found in review: A was always today's registry while activity is read from the rows by
    the sector they landed under, so once an agency moved sector, its old sector's past
    periods dropped it (its requests in C and S, none in D) and its new sector counted it
    inactive there, until one late record made it active at 100% (D 0.151 -> 0.318)."""
    now = datetime.now(UTC)
    changes = history(client)  # oldest first
    out: list[tuple[str, ...]] = []
    for p_start in starts:
        end = period_next(p_start, period)
        version = None
        if end <= now:
            for change in changes:
                if change.effective_from >= end:
                    break
                version = change.version
            if version is None and changes:
                version = changes[0].version
        then = registry_of(client, version) if version is not None else None
        listed = then if then is not None else registry
        out.append(tuple(a.id for a in listed.agencies if sector is None or a.sector == sector))
    return out


def _bucket(value: Any) -> datetime:
    d: date = value.date() if isinstance(value, datetime) else value
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def period_facts(
    client: Client,
    registry: Registry,
    start: datetime,
    end: datetime,
    period: Period,
    sector: str | None = None,
) -> list[PeriodFacts]:
    """Facts for every period in [start, end) (period-aligned), including empty periods."""
    targets = registry.targets or Targets()
    scope = {"sector": [sector]} if sector else {}
    base = {"from_": start, "to": end}

    def rows(sql: str, extra: dict[str, Any]) -> list[Any]:
        return list(client.query(sql, parameters={**base, **extra}).result_rows)

    demand = {
        _bucket(b): (float(r), float(p), int(n), int(pn))
        for b, r, p, n, pn in rows(demand_sql(period, scope), scope)
    }
    national = (
        demand
        if not sector
        else {
            _bucket(b): (float(r), float(p), int(n), int(pn))
            for b, r, p, n, pn in rows(demand_sql(period, {}), {})
        }
    )
    service_params = {
        **scope,
        "tier": list(DOMESTIC_TIERS),
        "objective_ms": targets.latency_objective_ms,
    }
    service = {
        _bucket(b): (float(dom), float(ok), float(unm))
        for b, dom, ok, unm in rows(service_sql(period, scope), service_params)
    }
    starts = periods_between(start, end, period)
    registered = registered_by_period(client, registry, starts, period, sector)
    everyone = sorted({a for agencies in registered for a in agencies})
    per_agency: dict[datetime, dict[str, tuple[float, float]]] = {}
    agency_params = {**scope, "agency_id": everyone, "domestic_tiers": list(DOMESTIC_TIERS)}
    found = rows(agency_sql(period, scope), agency_params) if everyone else []
    for b, agency_id, req, dom in found:
        per_agency.setdefault(_bucket(b), {})[str(agency_id)] = (float(req), float(dom))

    facts: list[PeriodFacts] = []
    for p_start, agencies in zip(starts, registered, strict=True):
        req, peak, records, peak_records = demand.get(p_start, (0.0, 0.0, 0, 0))
        seen = per_agency.get(p_start, {})
        dom, within, unmeasured = service.get(p_start, (0.0, 0.0, 0.0))
        facts.append(
            PeriodFacts(
                start=p_start,
                end=period_next(p_start, period),
                requests=req,
                peak_hour_requests=peak,
                national_requests=national.get(p_start, (0.0, 0.0, 0, 0))[0],
                domestic_requests=dom,
                domestic_within_objective=within,
                domestic_latency_unmeasured=unmeasured,
                agencies=tuple((a, *seen.get(a, (0.0, 0.0))) for a in agencies),
                records=records,
                peak_hour_records=peak_records,
            )
        )
    return facts


def score(facts: PeriodFacts, national_capacity_rph: float, sector: str | None) -> PeriodScore:
    capacity = (
        sector_capacity_rph(national_capacity_rph, facts.requests, facts.national_requests)
        if sector
        else national_capacity_rph
    )
    c = layer_c(capacity, facts.peak_hour_requests)
    s = layer_s(facts.requests, facts.domestic_requests, facts.domestic_within_objective)
    d = layer_d([(req, dom) for _, req, dom in facts.agencies])
    active = sum(1 for _, req, _ in facts.agencies if req > 0)
    return PeriodScore(facts, capacity, active, combine(c, s, d))


def capacity_series(
    client: Client,
    registry: Registry,
    start: datetime,
    end: datetime,
    period: Period,
    sector: str | None = None,
) -> list[PeriodScore]:
    national = domestic_capacity_rph(registry)
    return [
        score(f, national, sector)
        for f in period_facts(client, registry, start, end, period, sector)
    ]


def registry_in_force(client: Client) -> Registry | None:
    """The registry version in force now (the ledger's pointer; before any recorded change,
    the version most recently loaded at a process start)."""
    found = effective(client)
    return found[0] if found is not None else None
