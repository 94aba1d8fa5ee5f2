"""Metric definitions: the one place the headline and its breakdowns are written in SQL.

The API, the dashboards and the tests all take their SQL from here, so they cannot disagree.
Every caller value is a bound parameter; only names from the fixed tables below are ever
spliced into the text.

domestic share  = (sovereign + onshore) / all
sovereign share = sovereign / all
unknown share   = unknown / all      (unknown stays in the denominator: never flattering)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from clickhouse_connect.driver.client import Client

from tracker import reclassify, rollups
from tracker.bounds import as_utc

ROLLUP = "usage_hourly"
DAILY_ROLLUP = "usage_daily"
# The hourly rollup's sort key: a SummingMergeTree row is one row only once its parts merged,
# so a figure that tests a summed measure row by row (sumIf over it) sums to this key first.
ROLLUP_KEY = (
    "hour, agency_id, provider, model, region, tier, sector, channel, operator, "
    "facility_country, operation, status, registry_version"
)


class AsClassified(StrEnum):
    """Which classification a figure uses: each row's own tier, given by the registry version
    in force when it landed (`then`, the published figure), or every row re-classified by the
    version in force now (`now`, tracker/reclassify.py)."""

    then = "then"
    now = "now"


class Basis(StrEnum):
    requests = "requests"
    tokens = "tokens"
    cost = "cost"
    energy = "energy"


# The measure each basis sums over the hourly rollup.
BASIS_EXPR: dict[Basis, str] = {
    Basis.requests: "toFloat64(requests)",
    Basis.tokens: "toFloat64(input_tokens + output_tokens)",
    Basis.cost: "toFloat64(cost_reporting)",
    Basis.energy: "energy_wh",
}

# Filterable dimensions of the rollup -> ClickHouse parameter type. A filter takes a list of
# values (IN), so "my agencies" and "these providers" are one shape.
FILTERS: dict[str, str] = {
    "agency_id": "Array(String)",
    "sector": "Array(String)",
    "channel": "Array(String)",
    "provider": "Array(String)",
    "model": "Array(String)",
    "region": "Array(String)",
    "tier": "Array(String)",
    "operation": "Array(String)",
    "status": "Array(String)",
}


def where_clause(filters: dict[str, list[str]]) -> str:
    """Time range plus IN-filters over known dimensions, as parameter placeholders."""
    parts = ["hour >= {from_:DateTime('UTC')}", "hour < {to:DateTime('UTC')}"]
    for name in sorted(filters):
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}")
        parts.append(f"{name} IN {{{name}:{FILTERS[name]}}}")
    return " AND ".join(parts)


def _share_select(basis: Basis, source: str, where: str, group_by: str | None = None) -> str:
    """The one SELECT behind the headline, for the API (bound parameters) and for Grafana
    (macros and template variables); `group_by` adds a leading key column `k` per group.
    Groups by a Grafana time bucket (`$__...`) come in time order (the plugin turns a time
    series from long to wide only when it is sorted by time); groups by a dimension come
    largest total first, then by key, as the API's breakdown (tracker.queries.breakdown_sql),
    so a panel that draws the first N rows draws the N largest (found in review: ordered by
    name, the provider bars drew the first 50 names, not the 50 biggest providers)."""
    v = BASIS_EXPR[basis]
    key, inner_key, tail, order = "", "", "", ""
    if group_by is not None:
        key, inner_key = "k, ", f"{group_by} AS k,\n        "
        by_time = group_by.startswith("$__")
        tail, order = "\n    GROUP BY k", "\nORDER BY k" if by_time else "\nORDER BY total DESC, k"
    sql = f"""
SELECT
    {key}sovereign, onshore, offshore, unknown, total, records,
    if(total = 0, NULL, (sovereign + onshore) / total) AS domestic_share,
    if(total = 0, NULL, sovereign / total) AS sovereign_share,
    if(total = 0, NULL, unknown / total) AS unknown_share,
    cost_unconverted
FROM (
    SELECT
        {inner_key}sumIf({v}, tier = 'sovereign') AS sovereign,
        sumIf({v}, tier = 'onshore') AS onshore,
        sumIf({v}, tier = 'offshore') AS offshore,
        sumIf({v}, tier = 'unknown') AS unknown,
        sum({v}) AS total,
        sum(records) AS records,
        sum(cost_unconverted) AS cost_unconverted
    FROM {source}
    WHERE {where}{tail}
)
""".strip()
    return sql + order


def share_sql(
    basis: Basis,
    filters: dict[str, list[str]],
    *,
    source: str = ROLLUP,
    as_classified: AsClassified = AsClassified.then,
) -> str:
    """The headline: per-tier sums of the basis measure and the three shares. `now` reads the
    re-classified rows instead of `source` and needs `registry_now` and `covered` bound (see
    share_parameters and tracker.reclassify.prepare_now)."""
    if as_classified is AsClassified.now:
        source = reclassify.now_source()
    return _share_select(basis, source, where_clause(filters))


# Filters usage_daily can answer: a headline filtered only by these reads whole days there.
DAILY_FILTERS = frozenset(rollups.DAILY_DIMENSIONS)
_MEASURES = (
    "tier, records, requests, input_tokens, output_tokens, cost_reporting, cost_unconverted, "
    "energy_wh"
)


def daily_split(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The whole UTC days [day_from, day_to) inside [start, end); empty (both = end) if none.
    The rest of the range, [start, day_from) and [day_to, end), is read hour by hour."""
    start, end = as_utc(start), as_utc(end)
    day_from = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if day_from < start:
        day_from += timedelta(days=1)
    day_to = end.replace(hour=0, minute=0, second=0, microsecond=0)
    if day_from >= day_to:
        return end, end
    return day_from, day_to


def fast_share_sql(basis: Basis, filters: dict[str, list[str]]) -> str | None:
    """The headline's SELECT over usage_daily for whole days plus usage_hourly for the ragged
    edges: the same sums as `share_sql` (a 2-year national headline reads ~10^5 daily rows
    instead of ~10^7 hourly ones). None when a filter is not a daily dimension. Needs
    `day_from`/`day_to` bound besides share_parameters' (see daily_split)."""
    if not DAILY_FILTERS.issuperset(filters):
        return None
    in_filters = "".join(f" AND {name} IN {{{name}:{FILTERS[name]}}}" for name in sorted(filters))
    source = f"""(
        SELECT {_MEASURES} FROM {DAILY_ROLLUP}
        WHERE day >= toDate({{day_from:DateTime('UTC')}}, 'UTC')
          AND day < toDate({{day_to:DateTime('UTC')}}, 'UTC'){in_filters}
        UNION ALL
        SELECT {_MEASURES} FROM {ROLLUP}
        WHERE ((hour >= {{from_:DateTime('UTC')}} AND hour < {{day_from:DateTime('UTC')}})
            OR (hour >= {{day_to:DateTime('UTC')}} AND hour < {{to:DateTime('UTC')}})){in_filters}
    )"""
    return _share_select(basis, source, "1")


def share_parameters(
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]],
    registry_now: str | None = None,
    covered: list[int] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"from_": start, "to": end, **filters}
    if registry_now is not None:
        params["registry_now"] = registry_now
        params["covered"] = covered or []
    return params


@dataclass(frozen=True)
class Share:
    basis: Basis
    sovereign: float
    onshore: float
    offshore: float
    unknown: float
    total: float
    records: int
    domestic_share: float | None
    sovereign_share: float | None
    unknown_share: float | None
    cost_unconverted_records: int
    # as_classified=now: the version every record was re-classified by (None: each record's
    # own, the one in force when it landed).
    registry_version: str | None = None


def hour_floor(value: datetime) -> datetime:
    """`value` in UTC (no zone: UTC), rounded down to its hour."""
    return as_utc(value).replace(minute=0, second=0, microsecond=0)


def hour_ceil(value: datetime) -> datetime:
    """`value` in UTC (no zone: UTC), rounded up to an hour boundary."""
    floor = hour_floor(value)
    return floor if floor == as_utc(value) else floor + timedelta(hours=1)


def headline(
    client: Client,
    basis: Basis,
    start: datetime,
    end: datetime,
    filters: dict[str, list[str]] | None = None,
    *,
    as_classified: AsClassified = AsClassified.then,
) -> Share:
    filters = filters or {}
    # The rollups' resolution: whole hours, from rounded down and to rounded up. The raw path
    # of "as classified now" filters on occurred_at, so a range within an hour would count a
    # partial hour there and a whole (or no) hour elsewhere (found in review: one range, 2
    # records then, 1 now, 2 now again once the month was reclassified).
    start, end = hour_floor(start), hour_ceil(end)
    prepared, version = None, None
    if as_classified is AsClassified.now:
        # None: no registry ever loaded, nothing to re-classify by; read as classified then.
        prepared = reclassify.prepare_now(client, start, end)
    if prepared is not None:
        version, covered = prepared
        sql = share_sql(basis, filters, as_classified=as_classified)
        params = share_parameters(start, end, filters, registry_now=version, covered=covered)
    elif (fast := fast_share_sql(basis, filters)) is not None:
        day_from, day_to = daily_split(start, end)
        sql = fast
        params = {**share_parameters(start, end, filters), "day_from": day_from, "day_to": day_to}
    else:
        sql, params = share_sql(basis, filters), share_parameters(start, end, filters)
    row = client.query(sql, parameters=params).result_rows[0]
    sov, on, off, unk, total, records, dom, sov_share, unk_share, unconverted = row
    return Share(
        basis=basis,
        sovereign=float(sov),
        onshore=float(on),
        offshore=float(off),
        unknown=float(unk),
        total=float(total),
        records=int(records),
        domestic_share=None if dom is None else float(dom),
        sovereign_share=None if sov_share is None else float(sov_share),
        unknown_share=None if unk_share is None else float(unk_share),
        cost_unconverted_records=int(unconverted),
        registry_version=version,
    )


# Grafana renders of the same SELECT. The ClickHouse data source plugin for Grafana
# (grafana-clickhouse-datasource) expands `$__fromTime` to toDateTime(<unix s>) and
# `$__toTime_ms` to fromUnixTimestamp64Milli(<unix ms>) in its backend; the frontend first
# replaces `$__conditionalAll(cond, $var)` by 1=1 when the variable is "All", then template
# variables. The time clause matches the API's rounding: from is floored to the hour (in UTC,
# whatever the server's time zone), and `hour < to` on hour-aligned buckets is the same set as
# `hour < ceil_to_hour(to)`.
GRAFANA_TIME_WHERE = "hour >= toStartOfHour($__fromTime, 'UTC') AND hour < $__toTime_ms"
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A filter variable's value never reaches the SQL as text: Grafana's `percentencode` format
# leaves only [A-Za-z0-9_.~-] and %XX (encodeURIComponent plus !'()*), so no value can end the
# string literal, escape a quote or name a macro (`singlequote` escapes ' but not \, which
# ClickHouse reads as an escape). A multi-value selection is encoded as one string
# "{v1,v2}"; the commas stay unambiguous because each option's value is itself
# GRAFANA_OPTION_VALUE, the URL encoding of the dimension value (no comma, no brace). So the
# SQL decodes the whole, drops the braces, splits at commas and decodes each part: exactly the
# selected dimension values, whatever characters they hold.
GRAFANA_OPTION_VALUE = "encodeURLComponent({column})"
GRAFANA_SELECTED = (
    "arrayMap(v -> decodeURLComponent(v), splitByChar(',', "
    "trim(BOTH '{}' FROM decodeURLComponent('${<var>:percentencode}'))))"
)


def grafana_where_clause(variables: dict[str, str]) -> str:
    """Dashboard time range plus one IN-filter per (dimension -> Grafana variable name); a
    variable set to "All" drops its filter, like an absent filter in the API."""
    parts = [GRAFANA_TIME_WHERE]
    for name in sorted(variables):
        var = variables[name]
        if name not in FILTERS:
            raise ValueError(f"unknown filter {name!r}")
        if not _VARIABLE_NAME.fullmatch(var):
            raise ValueError(f"not a Grafana variable name: {var!r}")
        selected = GRAFANA_SELECTED.replace("<var>", var)
        parts.append(f"$__conditionalAll({name} IN (SELECT arrayJoin({selected})), ${var})")
    return " AND ".join(parts)


def grafana_share_sql(
    basis: Basis,
    variables: dict[str, str],
    *,
    group_by: str | None = None,
    source: str = ROLLUP,
) -> str:
    """`share_sql` for a Grafana panel: the same SELECT and measure, with the dashboard's time
    range and template variables in place of bound parameters. `group_by` is a dimension of
    the rollup or a Grafana time bucket such as `$__timeInterval(hour)`; it comes back as `k`."""
    if group_by is not None and group_by not in FILTERS and not group_by.startswith("$__"):
        raise ValueError(f"cannot group by {group_by!r}")
    return _share_select(basis, source, grafana_where_clause(variables), group_by)
