"""Figures "as classified now": every row re-classified by the registry version in force.

Classification reads only (provider, region, endpoint_host), so re-classifying is a join:
1. `registry_routes` holds, per registry version, the classification of each route, computed by
   the Python classifier (the one implementation of the rules, never re-written in SQL) for the
   routes a query or a run meets, once per (version, route);
2. the rows to re-classify come, month by month, from the route rollup `usage_hourly_routes`
   (0002, it carries endpoint_host, which usage_hourly lacks) where that month is covered (its
   sum(records) equals usage_hourly's), and from usage_raw otherwise: fast where `tracker
   reclassify` has derived the month, exact everywhere;
3. a row classified by the version in force keeps its own tier (same rules, same answer).

`tracker reclassify --from --to` derives the route rollup from usage_raw month by month (staged
in a scratch table, swapped in with REPLACE PARTITION, then checked: its record count must equal
usage_raw's, or the month is redone), maps every route of those months under the target version,
and records what changed in `reclassify_runs`. It never touches usage_raw or usage_hourly: "as
classified then" stays exactly what was published.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker import registry_store
from tracker.classify import Classifier
from tracker.registry import Registry

ROUTES_ROLLUP = "usage_hourly_routes"
_RANGE = "hour >= {from_:DateTime('UTC')} AND hour < {to:DateTime('UTC')}"
_RAW_RANGE = "occurred_at >= {from_:DateTime('UTC')} AND occurred_at < {to:DateTime('UTC')}"
_MEASURES = ("records, requests, input_tokens, output_tokens, cost_reporting, cost_unconverted, "
             "energy_wh")  # fmt: skip
_DIMENSIONS = (
    "agency_id, sector, channel, provider, model, region, endpoint_host, operation, status"
)

# Rows to re-classify: covered months ({covered:Array(UInt32)} of YYYYMM) from the route rollup,
# the rest from usage_raw, with the same columns.
_ROWS = f"""
        SELECT hour, {_DIMENSIONS}, tier AS tier_then, registry_version, {_MEASURES}
        FROM {ROUTES_ROLLUP}
        WHERE {_RANGE} AND has({{covered:Array(UInt32)}}, toYYYYMM(hour))
        UNION ALL
        SELECT toDateTime(toStartOfHour(occurred_at), 'UTC') AS hour, {_DIMENSIONS},
            tier AS tier_then, registry_version, toUInt64(1) AS records,
            request_count AS requests, input_tokens, output_tokens, cost_reporting,
            toUInt64(cost IS NOT NULL AND cost_converted = 0) AS cost_unconverted,
            ifNull(energy_wh, 0) AS energy_wh
        FROM usage_raw
        WHERE {_RAW_RANGE} AND NOT has({{covered:Array(UInt32)}}, toYYYYMM(occurred_at))"""


def now_source() -> str:
    """A FROM-able subquery with usage_hourly's dimensions and measures, `tier` re-classified by
    the version bound as {registry_now:String} (and the landed tier as `tier_then`); binds
    {from_}, {to} as share_sql does, and {covered} (see prepare_now)."""
    return f"""(
    SELECT hour, {_DIMENSIONS}, {_MEASURES}, tier_then,
        multiIf(registry_version = {{registry_now:String}}, tier_then,
                tier_now != '', tier_now, tier_then) AS tier
    FROM ({_ROWS}
    ) AS r
    LEFT ANY JOIN (
        SELECT provider, region, endpoint_host, tier AS tier_now
        FROM registry_routes FINAL WHERE version = {{registry_now:String}}
    ) AS m USING (provider, region, endpoint_host)
)"""


_ROUTE_COLUMNS = [
    "version", "provider", "region", "endpoint_host", "tier", "facility_id", "facility_country",
    "operator", "rule", "facility_grade", "operator_grade",
]  # fmt: skip


def ensure_routes(
    client: Client, registry: Registry, start: datetime, end: datetime, covered: list[int]
) -> int:
    """Map under `registry` every route in [start, end) classified by another version and not
    mapped yet; returns how many were added."""
    rows = client.query(
        f"SELECT DISTINCT provider, region, endpoint_host FROM ({_ROWS}) "
        "WHERE registry_version != {v:String} AND (provider, region, endpoint_host) NOT IN ("
        "  SELECT provider, region, endpoint_host FROM registry_routes WHERE version = {v:String})",
        parameters={"from_": start, "to": end, "v": registry.version, "covered": covered},
    ).result_rows
    if not rows:
        return 0
    classifier = Classifier(registry)
    out = []
    for provider, region, host in rows:
        # usage_raw stores an absent region or host as '': the classifier reads '' as absent.
        c = classifier.classify(str(provider), str(region) or None, str(host) or None)
        out.append([registry.version, provider, region, host, c.tier.value, c.facility_id,
                    c.facility_country, c.operator, c.rule, c.facility_grade,
                    c.operator_grade])  # fmt: skip
    client.insert("registry_routes", out, column_names=_ROUTE_COLUMNS)
    return len(out)


def covered_months(client: Client, start: datetime, end: datetime) -> list[int]:
    """Months (YYYYMM) of [start, end) whose route rollup holds what usage_hourly holds."""
    rows = client.query(
        f"SELECT h.m FROM (SELECT toYYYYMM(hour) AS m, sum(records) AS n FROM usage_hourly "
        f"WHERE {_RANGE} GROUP BY m) AS h INNER JOIN (SELECT toYYYYMM(hour) AS m, "
        f"sum(records) AS n FROM {ROUTES_ROLLUP} WHERE {_RANGE} GROUP BY m) AS r "
        "ON h.m = r.m WHERE h.n = r.n ORDER BY h.m",
        parameters={"from_": start, "to": end},
    ).result_rows
    return [int(r[0]) for r in rows]


def prepare_now(client: Client, start: datetime, end: datetime) -> tuple[str, list[int]] | None:
    """Before an "as classified now" query: the version in force and the covered months, with
    every route of the range mapped; None when no registry was ever loaded."""
    found = registry_store.effective(client)
    if found is None:
        return None
    registry = found[0]
    covered = covered_months(client, start, end)
    ensure_routes(client, registry, start, end, covered)
    return registry.version, covered


# --- tracker reclassify: re-derive the route rollup and map its routes, month by month --------


@dataclass(frozen=True)
class MonthResult:
    month: date
    raw_records: int
    rollup_records: int
    hourly_records: int
    changed_records: int
    attempts: int


class ReclassifyError(RuntimeError):
    pass


def months(start: datetime, end: datetime) -> list[date]:
    """First days of the months overlapping [start, end): partitions are whole months."""
    out: list[date] = []
    m = date(start.year, start.month, 1)
    while datetime(m.year, m.month, 1, tzinfo=UTC) < end:
        out.append(m)
        m = date(m.year + m.month // 12, m.month % 12 + 1, 1)
    return out


def _month_bounds(m: date) -> tuple[datetime, datetime]:
    nxt = date(m.year + m.month // 12, m.month % 12 + 1, 1)
    return datetime(m.year, m.month, 1, tzinfo=UTC), datetime(nxt.year, nxt.month, 1, tzinfo=UTC)


def _scalar(client: Client, sql: str, params: dict[str, Any]) -> int:
    return int(client.query(sql, parameters=params).result_rows[0][0] or 0)


def rederive_month(client: Client, m: date, stage: str, max_attempts: int = 3) -> tuple[int, int]:
    """Rebuild one month of the route rollup from usage_raw; returns (records, attempts).
    Idempotent: the month's partition is replaced whole by what usage_raw holds. A record landing
    during the swap could be left out of it, so the count is checked and the month redone."""
    lo, hi = _month_bounds(m)
    params = {"from_": lo, "to": hi}
    for attempt in range(1, max_attempts + 1):
        client.command(f"TRUNCATE TABLE {stage}")
        client.command(
            f"INSERT INTO {stage} SELECT toStartOfHour(occurred_at) AS hour, agency_id, sector, "
            "channel, provider, model, region, endpoint_host, tier, operation, status, "
            "registry_version, count() AS records, sum(request_count), sum(input_tokens), "
            "sum(output_tokens), sum(cost_reporting), "
            "countIf(cost IS NOT NULL AND cost_converted = 0), sum(ifNull(energy_wh, 0)) "
            "FROM usage_raw WHERE occurred_at >= {from_:DateTime('UTC')} "
            "AND occurred_at < {to:DateTime('UTC')} "
            "GROUP BY hour, agency_id, sector, channel, provider, model, region, endpoint_host, "
            "tier, operation, status, registry_version",
            parameters=params,
            # The scratch table keeps the rollup's deduplication window: an identical re-run
            # must not be dropped as a replay (that would swap in an empty month).
            settings={"insert_deduplicate": 0},
        )
        partition = m.year * 100 + m.month
        if _scalar(client, f"SELECT count() FROM {stage}", {}):
            client.command(
                f"ALTER TABLE {ROUTES_ROLLUP} REPLACE PARTITION {partition} FROM {stage}"
            )
        else:
            # A month without raw records: the engine refuses to REPLACE from a partition with
            # no parts, so the month is emptied instead (the count check below still guards a
            # record landing meanwhile).
            client.command(f"ALTER TABLE {ROUTES_ROLLUP} DROP PARTITION {partition}")
        raw = _scalar(client, f"SELECT count() FROM usage_raw WHERE {_RAW_RANGE}", params)
        rolled = _scalar(client, f"SELECT sum(records) FROM {ROUTES_ROLLUP} WHERE {_RANGE}", params)
        if raw == rolled:
            return raw, attempt
    raise ReclassifyError(
        f"{m:%Y-%m}: route rollup still differs from usage_raw after {max_attempts} attempts "
        "(heavy concurrent landing?); run again"
    )


def reclassify_month(
    client: Client, registry: Registry, m: date, stage: str, run_id: str, author: str
) -> MonthResult:
    started = datetime.now(UTC)
    raw, attempts = rederive_month(client, m, stage)
    lo, hi = _month_bounds(m)
    covered = [m.year * 100 + m.month]
    params = {"from_": lo, "to": hi, "registry_now": registry.version, "covered": covered}
    ensure_routes(client, registry, lo, hi, covered)
    changed = _scalar(client, f"SELECT sum(records) FROM {now_source()} WHERE tier != tier_then",
                      params)  # fmt: skip
    hourly = _scalar(client, f"SELECT sum(records) FROM usage_hourly WHERE {_RANGE}", params)
    result = MonthResult(m, raw, raw, hourly, changed, attempts)
    client.insert(
        "reclassify_runs",
        [[run_id, m, registry.version, started, datetime.now(UTC), author, raw, raw, hourly,
          changed, attempts]],
        column_names=["run_id", "month", "version", "started_at", "finished_at", "author",
                      "raw_records", "rollup_records", "hourly_records", "changed_records",
                      "attempts"],
    )  # fmt: skip
    return result


def run(
    client: Client,
    registry: Registry,
    start: datetime,
    end: datetime,
    *,
    author: str,
    progress: Callable[[MonthResult], None] | None = None,
) -> list[MonthResult]:
    """Re-derive and re-classify every month overlapping [start, end) under `registry`."""
    run_id = uuid.uuid4().hex[:12]
    stage = f"usage_hourly_routes_stage_{run_id}"
    client.command(f"CREATE TABLE {stage} AS {ROUTES_ROLLUP}")
    results = []
    try:
        for m in months(start, end):
            result = reclassify_month(client, registry, m, stage, run_id, author)
            results.append(result)
            if progress is not None:
                progress(result)
    finally:
        client.command(f"DROP TABLE IF EXISTS {stage}")
    return results
