"""Aggregate reads behind the API beyond the headline: time series, breakdowns, the operating
cost of the cognitive layer, provider comparison and data freshness.

Every measure is the headline's own definition (tracker/metrics.py: BASIS_EXPR over the hourly
rollup, the same tier sums and shares), grouped differently. Callers' values are bound
parameters; only names from the fixed tables here and in metrics.py are spliced into SQL.

Latency percentiles are the one figure the rollup cannot give (it keeps a latency sum and count,
and percentiles do not add up across rows), so they are read from usage_raw over the requested
range, weighted by request_count (a record may stand for a pre-aggregated window whose
latency_ms is that window's typical latency). We chose this over a quantile-state rollup: it is
exact to the records, needs no second materialized view kept in step with deduplication, and
the comparison endpoint bounds its range so the raw scan stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker.metrics import BASIS_EXPR, FILTERS, ROLLUP, ROLLUP_KEY, Basis, where_clause


class Interval(StrEnum):
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"


# Bucket start of a rollup hour; weeks start on Monday (ISO 8601), all in UTC.
BUCKET_EXPR: dict[Interval, str] = {
    Interval.hour: "hour",
    Interval.day: "toStartOfDay(hour, 'UTC')",
    Interval.week: "toDateTime(toMonday(hour, 'UTC'), 'UTC')",
    Interval.month: "toDateTime(toStartOfMonth(hour, 'UTC'), 'UTC')",
}


class Dimension(StrEnum):
    """What a breakdown groups by; each maps to a rollup column (and a filter name)."""

    agency = "agency"
    sector = "sector"
    channel = "channel"
    provider = "provider"
    model = "model"
    region = "region"
    tier = "tier"


DIMENSION_COLUMN: dict[Dimension, str] = {
    Dimension.agency: "agency_id",
    Dimension.sector: "sector",
    Dimension.channel: "channel",
    Dimension.provider: "provider",
    Dimension.model: "model",
    Dimension.region: "region",
    Dimension.tier: "tier",
}
assert set(DIMENSION_COLUMN.values()) <= set(FILTERS)

# Tier -> the comparison class of the provider comparison: on domestic soil or not.
ORIGIN_EXPR = (
    "multiIf(tier IN ('sovereign', 'onshore'), 'domestic', tier = 'offshore', 'foreign', 'unknown')"
)


def _tier_sums(v: str) -> str:
    return f"""sumIf({v}, tier = 'sovereign') AS sovereign,
        sumIf({v}, tier = 'onshore') AS onshore,
        sumIf({v}, tier = 'offshore') AS offshore,
        sumIf({v}, tier = 'unknown') AS unknown,
        sum({v}) AS total,
        sum(records) AS records"""


_SHARES = """sovereign, onshore, offshore, unknown, total, records,
    if(total = 0, NULL, (sovereign + onshore) / total) AS domestic_share,
    if(total = 0, NULL, sovereign / total) AS sovereign_share,
    if(total = 0, NULL, unknown / total) AS unknown_share"""


@dataclass(frozen=True)
class ShareCell:
    """One cell of a series or breakdown: the basis summed per tier, and the shares."""

    key: str
    sovereign: float
    onshore: float
    offshore: float
    unknown: float
    total: float
    records: int
    domestic_share: float | None
    sovereign_share: float | None
    unknown_share: float | None


def _cell(key: str, row: Sequence[Any]) -> ShareCell:
    sov, on, off, unk, total, records, dom, sov_s, unk_s = row
    return ShareCell(key, float(sov), float(on), float(off), float(unk), float(total),
                     int(records), None if dom is None else float(dom),
                     None if sov_s is None else float(sov_s),
                     None if unk_s is None else float(unk_s))  # fmt: skip


def params(start: datetime, end: datetime, filters: dict[str, list[str]]) -> dict[str, Any]:
    return {"from_": start, "to": end, **filters}


def series_sql(basis: Basis, interval: Interval, filters: dict[str, list[str]]) -> str:
    return f"""
SELECT toString(k), {_SHARES}
FROM (
    SELECT {BUCKET_EXPR[interval]} AS k, {_tier_sums(BASIS_EXPR[basis])}
    FROM {ROLLUP} WHERE {where_clause(filters)} GROUP BY k
)
ORDER BY k""".strip()


def series(
    client: Client,
    basis: Basis,
    interval: Interval,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
) -> list[tuple[datetime, ShareCell]]:
    rows = client.query(
        series_sql(basis, interval, filters), parameters=params(start, end, filters)
    ).result_rows
    out = []
    for r in rows:
        bucket = datetime.fromisoformat(str(r[0]) + "+00:00")
        out.append((bucket, _cell(bucket.isoformat(), r[1:])))
    return out


def breakdown_sql(basis: Basis, dimension: Dimension, filters: dict[str, list[str]]) -> str:
    return f"""
SELECT k, {_SHARES}
FROM (
    SELECT {DIMENSION_COLUMN[dimension]} AS k, {_tier_sums(BASIS_EXPR[basis])}
    FROM {ROLLUP} WHERE {where_clause(filters)} GROUP BY k
)
ORDER BY total DESC, k
LIMIT {{limit:UInt32}}""".strip()


def breakdown(
    client: Client,
    basis: Basis,
    dimension: Dimension,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    limit: int,
) -> list[ShareCell]:
    rows = client.query(
        breakdown_sql(basis, dimension, filters),
        parameters={**params(start, end, filters), "limit": limit},
    ).result_rows
    return [_cell(str(r[0]), r[1:]) for r in rows]


@dataclass(frozen=True)
class CostCell:
    """Cost and energy of one group, in the registry's reporting currency and Wh."""

    key: str
    records: int
    requests: int
    tokens: int
    cost: float
    cost_unconverted_records: int
    energy_wh: float
    cost_reported_requests: int  # requests of records with a converted cost
    energy_reported_requests: int  # requests of records that reported energy
    measured_records: int  # records whose rollup rows carry the two above (migration 0009)
    energy_row_requests: int  # requests of rollup rows with any energy: the fallback below

    @property
    def exact(self) -> bool:
        """Whether every record of the group carries its reported requests. Rows that landed
        before migration 0009 do once its data step has measured them; a key whose batch was
        in flight meanwhile does not, until `tracker migrate --measure`."""
        return self.measured_records == self.records

    def per_inference(self) -> float | None:
        """Converted cost over the requests that reported one; without the reported requests
        (not `exact`), over every request, those without a converted cost too (low)."""
        n = self.cost_reported_requests if self.exact else self.requests
        return None if n == 0 else self.cost / n

    def wh_per_inference(self) -> float | None:
        """Wh over the requests that reported energy; without them, over the requests of
        rollup rows with any energy (gateways of one agency that differ in reporting share a
        row, so low)."""
        n = self.energy_reported_requests if self.exact else self.energy_row_requests
        return None if n == 0 else self.energy_wh / n


def cost_sql(group: Dimension | None, filters: dict[str, list[str]]) -> str:
    key = "''" if group is None else DIMENSION_COLUMN[group]
    # The fallback's "rollup rows with any energy" are summed to the full key first: tested
    # part by part, the answer changed when parts merged (found in review: 10 Wh per request
    # before a merge, 5 after).
    return f"""
SELECT k, sum(rec), sum(req), sum(tok), toFloat64(sum(cost)), sum(unconverted), sum(wh),
       sum(creq), sum(ereq), sum(measured), sumIf(req, wh > 0)
FROM (
    SELECT {key} AS k, sum(records) AS rec, sum(requests) AS req,
           sum(input_tokens + output_tokens) AS tok, sum(cost_reporting) AS cost,
           sum(cost_unconverted) AS unconverted, sum(energy_wh) AS wh,
           sum(cost_requests) AS creq, sum(energy_requests) AS ereq,
           sum(measured_records) AS measured
    FROM {ROLLUP} WHERE {where_clause(filters)}
    GROUP BY {ROLLUP_KEY}
)
GROUP BY k ORDER BY sum(req) DESC, k LIMIT {{limit:UInt32}}""".strip()


def cost(
    client: Client,
    group: Dimension | None,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    limit: int = 1000,
) -> list[CostCell]:
    rows = client.query(
        cost_sql(group, filters), parameters={**params(start, end, filters), "limit": limit}
    ).result_rows
    return [CostCell(str(k), int(a), int(b), int(c), float(d), int(e), float(f), int(g), int(h),
                     int(i), int(j))
            for k, a, b, c, d, e, f, g, h, i, j in rows]  # fmt: skip


@dataclass(frozen=True)
class ProviderCell:
    provider: str  # "" for the origin's total
    origin: str  # domestic | foreign | unknown
    records: int
    requests: int
    ok_requests: int
    tokens: int
    cost: float
    latency_mean_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None

    @property
    def success_rate(self) -> float | None:
        return None if self.requests == 0 else self.ok_requests / self.requests

    @property
    def cost_per_1k_tokens(self) -> float | None:
        return None if self.tokens == 0 else self.cost / (self.tokens / 1000)


def raw_where(filters: dict[str, list[str]]) -> str:
    """The rollup's filters over usage_raw (same column names), on occurred_at."""
    parts = [
        "occurred_at >= {from_:DateTime64(3, 'UTC')}",
        "occurred_at < {to:DateTime64(3, 'UTC')}",
    ]
    for name in sorted(filters):
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}")
        parts.append(f"{name} IN {{{name}:{FILTERS[name]}}}")
    return " AND ".join(parts)


def providers_sql(by_provider: bool, filters: dict[str, list[str]]) -> tuple[str, str]:
    """(rollup SQL, raw percentile SQL), keyed by (provider, origin). Per provider, the rollup
    keeps the `limit` providers of each origin with the most requests, and the percentiles are
    read for the `shown` providers only: provider names come from the records, so their number
    is the callers' to grow."""
    pk = "provider" if by_provider else "''"
    cut = " LIMIT {limit:UInt32} BY o" if by_provider else ""
    rollup = f"""
SELECT {pk} AS p, {ORIGIN_EXPR} AS o, sum(records), sum(requests),
       sumIf(requests, status = 'ok'), sum(input_tokens + output_tokens),
       toFloat64(sum(cost_reporting))
FROM {ROLLUP} WHERE {where_clause(filters)}
GROUP BY p, o ORDER BY o, sum(requests) DESC, p{cut}""".strip()
    only = " AND provider IN {shown:Array(String)}" if by_provider else ""
    raw = f"""
SELECT {pk} AS p, {ORIGIN_EXPR} AS o,
       quantilesTDigestWeighted(0.5, 0.95)(latency_ms, request_count),
       sum(toFloat64(latency_ms) * request_count) / sum(request_count)
FROM usage_raw WHERE {raw_where(filters)} AND latency_ms IS NOT NULL{only}
GROUP BY p, o""".strip()
    return rollup, raw


def providers(
    client: Client,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    *,
    by_provider: bool = True,
    limit: int = 1000,
) -> list[ProviderCell]:
    """Per (provider, origin), or per origin with `by_provider=False`; at most `limit`
    providers of each origin, most requests first."""
    rollup_sql, raw_sql = providers_sql(by_provider, filters)
    p = params(start, end, filters)
    rows = client.query(rollup_sql, parameters={**p, "limit": limit}).result_rows
    # (mean, p50, p95), all weighted by request_count: a record may stand for many requests.
    latency: dict[tuple[str, str], tuple[float, float, float]] = {}
    shown = sorted({str(r[0]) for r in rows})
    for prov, origin, qs, mean in client.query(
        raw_sql, parameters={**p, "shown": shown}
    ).result_rows:
        latency[(str(prov), str(origin))] = (float(mean), float(qs[0]), float(qs[1]))
    out = []
    for prov, origin, recs, reqs, ok, tokens, cost_ in rows:
        mean, p50, p95 = latency.get((str(prov), str(origin)), (None, None, None))
        out.append(ProviderCell(str(prov), str(origin), int(recs), int(reqs), int(ok),
                                int(tokens), float(cost_), mean, p50, p95))  # fmt: skip
    return out


def landed_under(client: Client, column: str, values: list[str]) -> set[str]:
    """Those of `values` that usage has landed under in `column` (a dimension of the daily
    rollup, named by code, never by the caller)."""
    if column not in ("agency_id", "sector", "channel"):
        raise ValueError(column)
    rows = client.query(
        f"SELECT DISTINCT {column} FROM usage_daily WHERE {column} IN {{v:Array(String)}}",
        parameters={"v": values},
    ).result_rows
    return {str(r[0]) for r in rows}


@dataclass(frozen=True)
class Freshness:
    latest_hour: datetime | None  # the newest hour with any usage in the rollup
    latest_ingested_at: datetime | None  # when the newest record was landed
    records: int


def freshness(client: Client, filters: dict[str, list[str]] | None = None) -> Freshness:
    filters = filters or {}
    where = (
        " AND ".join(f"{n} IN {{{n}:{FILTERS[n]}}}" for n in sorted(filters) if n in FILTERS) or "1"
    )
    # max(hour) over the rollup is a cheap read of the primary key's first column.
    hour, records = client.query(
        f"SELECT max(hour), sum(records) FROM {ROLLUP} WHERE {where}", parameters=filters
    ).result_rows[0]
    if int(records) == 0:
        return Freshness(None, None, 0)
    # Landing time of the newest usage only: scanning every ingested_at would read the whole
    # raw table, and freshness is about the newest data.
    ingested = client.query(
        "SELECT max(ingested_at) FROM usage_raw "
        f"WHERE occurred_at >= {{h:DateTime64(3, 'UTC')}} - INTERVAL 1 DAY AND {where}",
        parameters={**filters, "h": hour},
    ).result_rows[0][0]
    return Freshness(_aware(hour), _aware(ingested), int(records))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
