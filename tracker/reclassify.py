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
classified then" stays exactly what was published. A month that keeps receiving records through
every attempt is skipped (nothing recorded for it) and the run goes on with the later months;
it then raises MonthsSkipped naming them. Scratch tables left by killed runs are dropped by the
next run (see drop_stale_stages).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker import registry_store
from tracker.classify import Classifier
from tracker.registry import Registry

log = logging.getLogger(__name__)

ROUTES_ROLLUP = "usage_hourly_routes"
_RANGE = "hour >= {from_:DateTime('UTC')} AND hour < {to:DateTime('UTC')}"
# usage_raw's occurred_at is DateTime64(3): its bounds are bound as DateTime64 too. Against a
# DateTime bound the engine's part pruning dropped a part whose rows all fell in the second
# before `<` (or after `>`) while row by row the comparison held (found in review: a month's
# last-second batch left out of `as_classified=now` and of `tracker reclassify`).
_RAW_RANGE = (
    "occurred_at >= {from_:DateTime64(3, 'UTC')} AND occurred_at < {to:DateTime64(3, 'UTC')}"
)
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


@dataclass(frozen=True)
class SkippedMonth:
    month: date
    reason: str


class ReclassifyError(RuntimeError):
    pass


class MonthNotSettled(ReclassifyError):
    """One month's route rollup still differed from usage_raw after every attempt."""

    def __init__(self, month: date, reason: str) -> None:
        super().__init__(f"{month:%Y-%m}: {reason}; run again")
        self.month, self.reason = month, reason


class MonthsSkipped(ReclassifyError):
    """Raised by `run` at its end when some months were skipped; every other month was done
    (and recorded in reclassify_runs): `done` and `skipped` say which."""

    def __init__(self, done: list[MonthResult], skipped: list[SkippedMonth]) -> None:
        names = ", ".join(f"{s.month:%Y-%m}" for s in skipped)
        super().__init__(f"{len(skipped)} month(s) skipped, run again for them: {names}")
        self.done, self.skipped = done, skipped


def months(start: datetime, end: datetime) -> list[date]:
    """First days of the months overlapping [start, end): partitions are whole months."""
    out: list[date] = []
    m = date(start.year, start.month, 1)
    while datetime(m.year, m.month, 1, tzinfo=UTC) < end:
        out.append(m)
        m = next_month(m)
    return out


def next_month(m: date) -> date:
    """The first day of the month after `m`'s."""
    return date(m.year + m.month // 12, m.month % 12 + 1, 1)


def _month_bounds(m: date) -> tuple[datetime, datetime]:
    nxt = next_month(m)
    return datetime(m.year, m.month, 1, tzinfo=UTC), datetime(nxt.year, nxt.month, 1, tzinfo=UTC)


def _scalar(client: Client, sql: str, params: dict[str, Any]) -> int:
    return int(client.query(sql, parameters=params).result_rows[0][0] or 0)


# --- scratch (stage) tables -------------------------------------------------------------------
# Each attempt at a month stages into a table of its own, named by its creation time on the
# store's clock (now(), so runs on machines with skewed clocks agree) and a random part:
# usage_hourly_routes_stage_<unix seconds>_<8 hex>. It is created, filled, swapped in and dropped
# within that attempt (one INSERT SELECT of one month and one REPLACE PARTITION). A run killed by
# kill -9 leaves at most one behind; every run first drops those older than STAGE_MAX_AGE.
# Why per attempt rather than one stage per run (re-created with IF NOT EXISTS at each month):
# a live stage is then never older than one attempt, however many months the run spans, so a
# long run overlapping a newer one is never broken by its clean-up; a per-run stage would keep
# its first timestamp and, after STAGE_MAX_AGE, could be dropped between its INSERT and its
# REPLACE PARTITION by every run starting meanwhile.
STAGE_PREFIX = f"{ROUTES_ROLLUP}_stage_"
# Far longer than any one attempt (minutes at national scale): only tables of dead runs are older.
STAGE_MAX_AGE = timedelta(hours=6)
_STAGE_NAME = re.compile(rf"{STAGE_PREFIX}(?P<created>[0-9]{{10}})_[0-9a-f]{{8}}")
# Stages of earlier releases (one per run, named by the run id): their age is the engine's
# metadata_modification_time (set when the table was created; a stage is never altered).
_LEGACY_STAGE_NAME = re.compile(rf"{STAGE_PREFIX}[0-9a-f]{{12}}")


def _create_stage(client: Client) -> str:
    now = _scalar(client, "SELECT toUnixTimestamp(now())", {})
    stage = f"{STAGE_PREFIX}{now:010d}_{uuid.uuid4().hex[:8]}"
    assert _STAGE_NAME.fullmatch(stage), stage
    client.command(f"CREATE TABLE IF NOT EXISTS `{stage}` AS {ROUTES_ROLLUP}")
    return stage


def drop_stale_stages(client: Client, older_than: timedelta = STAGE_MAX_AGE) -> list[str]:
    """Drop the scratch tables of this database created more than `older_than` ago (left by
    runs that were killed); returns their names. A name is dropped only if it matches a stage
    name exactly (it is interpolated into DROP TABLE, which takes no parameter)."""
    rows = client.query(
        "SELECT name, toUnixTimestamp(metadata_modification_time), toUnixTimestamp(now()) "
        "FROM system.tables WHERE database = currentDatabase() AND startsWith(name, {p:String})",
        parameters={"p": STAGE_PREFIX},
    ).result_rows
    dropped = []
    for name, modified, now in rows:
        name = str(name)
        if found := _STAGE_NAME.fullmatch(name):
            created = int(found["created"])
        elif _LEGACY_STAGE_NAME.fullmatch(name):
            created = int(modified)
        else:
            continue
        if int(now) - created > older_than.total_seconds():
            client.command(f"DROP TABLE IF EXISTS `{name}`")
            dropped.append(name)
    if dropped:
        log.info("dropped %d scratch table(s) left by earlier runs: %s", len(dropped),
                 ", ".join(dropped))  # fmt: skip
    return dropped


def rederive_month(client: Client, m: date, max_attempts: int = 3) -> tuple[int, int]:
    """Rebuild one month of the route rollup from usage_raw; returns (records, attempts).
    Idempotent: the month's partition is replaced whole by what usage_raw holds. A record landing
    during the swap could be left out of it, so the count is checked and the month redone; after
    `max_attempts` it raises MonthNotSettled."""
    lo, hi = _month_bounds(m)
    params = {"from_": lo, "to": hi}
    for attempt in range(1, max_attempts + 1):
        stage = _create_stage(client)
        try:
            _stage_and_swap(client, m, stage, params)
        finally:
            client.command(f"DROP TABLE IF EXISTS `{stage}`")
        raw = _scalar(client, f"SELECT count() FROM usage_raw WHERE {_RAW_RANGE}", params)
        rolled = _scalar(client, f"SELECT sum(records) FROM {ROUTES_ROLLUP} WHERE {_RANGE}", params)
        if raw == rolled:
            return raw, attempt
    raise MonthNotSettled(
        m, f"route rollup still differs from usage_raw after {max_attempts} attempts "
        "(records kept landing in it)",
    )  # fmt: skip


def _stage_and_swap(client: Client, m: date, stage: str, params: dict[str, Any]) -> None:
    client.command(
        f"INSERT INTO `{stage}` SELECT toStartOfHour(occurred_at) AS hour, agency_id, sector, "
        "channel, provider, model, region, endpoint_host, tier, operation, status, "
        "registry_version, count() AS records, sum(request_count), sum(input_tokens), "
        "sum(output_tokens), sum(cost_reporting), "
        "countIf(cost IS NOT NULL AND cost_converted = 0), sum(ifNull(energy_wh, 0)) "
        f"FROM usage_raw WHERE {_RAW_RANGE} "
        "GROUP BY hour, agency_id, sector, channel, provider, model, region, endpoint_host, "
        "tier, operation, status, registry_version",
        parameters=params,
        # The scratch table keeps the rollup's deduplication window: an identical re-run
        # must not be dropped as a replay (that would swap in an empty month).
        settings={"insert_deduplicate": 0},
    )
    partition = m.year * 100 + m.month
    if _scalar(client, f"SELECT count() FROM `{stage}`", {}):
        client.command(f"ALTER TABLE {ROUTES_ROLLUP} REPLACE PARTITION {partition} FROM `{stage}`")
    else:
        # A month without raw records: the engine refuses to REPLACE from a partition with
        # no parts, so the month is emptied instead (the count check after it still guards a
        # record landing meanwhile).
        client.command(f"ALTER TABLE {ROUTES_ROLLUP} DROP PARTITION {partition}")


def reclassify_month(
    client: Client, registry: Registry, m: date, run_id: str, author: str
) -> MonthResult:
    started = datetime.now(UTC)
    raw, attempts = rederive_month(client, m)
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
    skipped: Callable[[SkippedMonth], None] | None = None,
    cleaned: Callable[[list[str]], None] | None = None,
) -> list[MonthResult]:
    """Re-derive and re-classify every month overlapping [start, end) under `registry`; returns
    the months done. A month that does not settle (MonthNotSettled) is skipped, recording
    nothing, and the run goes on; if any was, MonthsSkipped is raised at the end. First drops
    the scratch tables of dead runs (their names are given to `cleaned`)."""
    dropped = drop_stale_stages(client)
    if cleaned is not None:
        cleaned(dropped)
    run_id = uuid.uuid4().hex[:12]
    done: list[MonthResult] = []
    missed: list[SkippedMonth] = []
    for m in months(start, end):
        try:
            result = reclassify_month(client, registry, m, run_id, author)
        except MonthNotSettled as exc:
            log.warning("reclassify: %s: skipped: %s", f"{m:%Y-%m}", exc.reason)
            missed.append(SkippedMonth(exc.month, exc.reason))
            if skipped is not None:
                skipped(missed[-1])
            continue
        done.append(result)
        if progress is not None:
            progress(result)
    if missed:
        raise MonthsSkipped(done, missed)
    return done
