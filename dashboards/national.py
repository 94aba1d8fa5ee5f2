"""National overview for the agency's staff: the headline, its trend against a target, sector
and tier splits. Unsuppressed (Grafana reads ClickHouse directly): the public's figures are the
transparency page and the public API, which withhold small cells."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import piechart as pb
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import piechart as pc

from dashboards.clickhouse import DATASOURCE, Query
from dashboards.panels import (
    BARS_LIMIT,
    PROVIDER,
    SECTOR,
    TAGS,
    TIER,
    bars,
    filter_variable,
    hide_fields,
    note,
    number_stat,
    series,
    share_stat,
    variables,
)
from tracker.metrics import Basis, grafana_share_sql
from tracker.registry import Registry, TargetPoint

UID = "ist-national"
TIME_BUCKET = "$__timeInterval(hour)"


def _midnight_utc(day: date) -> int:
    return int(datetime.combine(day, time(), UTC).timestamp())


def target_sql(points: Sequence[TargetPoint]) -> str | None:
    """The registry's domestic-share target trajectory (targets.domestic_share) as the public
    page draws it: straight lines between the points, each at midnight UTC of its date, nothing
    before the first or after the last. The line's points inside the dashboard's range, plus
    its value interpolated at each end of the range, so it shows across the whole range even
    when no target date falls in it. Written from the registry at build time (no variable: the
    target is the registry's, not a viewer's choice); None when the registry sets none."""
    if not points:
        return None
    times = ", ".join(f"toDateTime({_midnight_utc(p.by)})" for p in points)
    shares = ", ".join(repr(float(p.domestic_share)) for p in points)
    return f"""
SELECT k, target
FROM (
    WITH
        [{times}] AS by_t,
        [{shares}] AS share,
        greatest($__fromTime, by_t[1]) AS lo,
        least($__toTime, by_t[-1]) AS hi
    SELECT
        arrayJoin(arraySort(arrayDistinct(
            arrayConcat([lo, hi], arrayFilter(t -> t > lo AND t < hi, by_t))))) AS k,
        arrayFirstIndex(t -> t >= k, by_t) AS i,
        if(i = 1 OR by_t[i] = k, share[i],
           share[i - 1] + (share[i] - share[i - 1])
               * (toUnixTimestamp(k) - toUnixTimestamp(by_t[i - 1]))
               / (toUnixTimestamp(by_t[i]) - toUnixTimestamp(by_t[i - 1]))) AS target
    WHERE lo <= hi
)
ORDER BY k
""".strip()


def build(registry: Registry) -> db.Dashboard:
    scope = variables(SECTOR, PROVIDER, TIER)
    headline = grafana_share_sql(Basis.requests, scope)
    trend = grafana_share_sql(Basis.requests, scope, group_by=TIME_BUCKET)
    helpers = ("records", "cost_unconverted")
    trend_queries = [Query(trend).time_series().ref_id("A")]
    target = target_sql(registry.targets.domestic_share if registry.targets else [])
    if target is None:
        trend_note = "Domestic and sovereign share per interval (the registry sets no target)."
    else:
        trend_queries.append(Query(target).time_series().ref_id("B"))
        trend_note = (
            "Domestic and sovereign share per interval; the dashed line is the registry's "
            "target trajectory (targets.domestic_share), as on the public page."
        )

    d = (
        db.Dashboard("Inference sovereignty: national overview (internal, unsuppressed)")
        .uid(UID)
        .description(
            "Share of the public sector's AI inferences served on domestic infrastructure. "
            "Domestic = sovereign + onshore; unknown stays in the denominator. INTERNAL: cells "
            "are not small-cell suppressed, so a small agency's usage can be read off them; "
            "never make this dashboard public (anonymous access, public dashboards). The "
            "public figures are the transparency page (/) and the public API."
        )
        .tags(TAGS)
        .time("now-90d", "now")
        .timezone("utc")
        .refresh("15m")
        .readonly()
        .with_variable(filter_variable(SECTOR))
        .with_variable(filter_variable(PROVIDER))
        .with_variable(filter_variable(TIER))
        .with_row(db.Row("Headline"))
        .with_panel(
            share_stat(
                "Domestic share (requests)",
                headline,
                "domestic_share",
                "(sovereign + onshore) / all requests in the range. Same SQL as GET /v1/share, "
                "unsuppressed.",
            )
        )
        .with_panel(
            share_stat(
                "Sovereign share (requests)",
                headline,
                "sovereign_share",
                "Domestic operator on domestic soil, over all requests.",
            )
        )
        .with_panel(
            share_stat(
                "Unknown share (requests)",
                headline,
                "unknown_share",
                "Requests the registry could not place; counted in the denominator.",
                lower_is_better=True,
            )
        )
        .with_panel(
            share_stat(
                "Domestic share (tokens)",
                grafana_share_sql(Basis.tokens, scope),
                "domestic_share",
                "The headline weighted by input + output tokens.",
            )
        )
        .with_panel(
            share_stat(
                "Domestic share (cost)",
                grafana_share_sql(Basis.cost, scope),
                "domestic_share",
                "The headline weighted by cost in the reporting currency.",
            )
        )
        .with_panel(
            number_stat(
                "Requests",
                headline,
                "total",
                "short",
                "All requests in the range (the denominator).",
            )
        )
        .with_row(db.Row("Trend"))
        .with_panel(
            series(
                "Domestic share vs target",
                trend_queries,
                "percentunit",
                trend_note,
            )
            .with_transformation(
                hide_fields(
                    "sovereign",
                    "onshore",
                    "offshore",
                    "unknown",
                    "total",
                    "unknown_share",
                    *helpers,
                )
            )
            .override_by_name(
                "target",
                [
                    dm.DynamicConfigValue(
                        id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                    ),
                    dm.DynamicConfigValue(
                        id_val="color", value={"mode": "fixed", "fixedColor": "blue"}
                    ),
                ],
            )
            .min(0)
            .max(1)
            .span(16)
        )
        .with_panel(
            series(
                "Requests by tier",
                [Query(trend).time_series()],
                "short",
                "Requests per interval, stacked by sovereignty tier.",
                stacked=True,
            )
            .with_transformation(
                hide_fields("total", "domestic_share", "sovereign_share", "unknown_share", *helpers)
            )
            .span(8)
        )
        .with_row(db.Row("Breakdowns"))
        .with_panel(
            pb.Panel()
            .title("Requests by tier")
            .description("The headline's per-tier sums.")
            .datasource(DATASOURCE)
            .with_target(Query(headline))
            .reduce_options(
                cb.ReduceDataOptions()
                .values(False)
                .calcs(["sum"])
                .fields("/^(sovereign|onshore|offshore|unknown)$/")
            )
            .pie_type(pc.PieChartType.DONUT)
            .display_labels([pc.PieChartLabels.PERCENT])
            .legend(
                pb.PieChartLegendOptions()
                .display_mode(cm.LegendDisplayMode.LIST)
                .placement(cm.LegendPlacement.RIGHT)
                .show_legend(True)
                .values([pc.PieChartLegendValues.VALUE])
            )
            .tooltip(
                cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.SINGLE).sort(cm.SortOrder.NONE)
            )
            .unit("short")
            .span(8)
            .height(9)
        )
        .with_panel(
            bars(
                "Domestic share by sector",
                grafana_share_sql(Basis.requests, scope, group_by="sector"),
                "domestic_share",
                "percentunit",
                f"The headline per sector (key k): the {BARS_LIMIT} sectors with the most "
                "requests in the range, largest first.",
            )
            .max(1)
            .span(8)
        )
        .with_panel(
            bars(
                "Domestic share by provider",
                grafana_share_sql(Basis.requests, scope, group_by="provider"),
                "domestic_share",
                "percentunit",
                "The headline per provider as reported by gateways (key k): the top "
                f"{BARS_LIMIT} providers by requests in the range, largest first (as GET "
                "/v1/breakdown/provider ranks them); smaller ones are not drawn.",
            )
            .max(1)
            .span(8)
        )
        .with_panel(
            note(
                "How to read this",
                "Figures come from the same SQL as the public API (`GET /v1/share`): "
                "`tracker.metrics`. The time range is rounded to whole hours like the API. "
                "Filters left on *All* apply no filter.",
                height=3,
            )
        )
    )
    return d
