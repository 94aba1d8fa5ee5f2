"""National transparency: the headline, its trend against a target, sector and tier splits."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import piechart as pb
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import piechart as pc

from dashboards.clickhouse import DATASOURCE, Query
from dashboards.panels import (
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

UID = "ist-national"
TARGETS = ["0.5", "0.6", "0.7", "0.8", "0.9"]
TIME_BUCKET = "$__timeInterval(hour)"

# A straight line at the chosen target across the dashboard's range.
TARGET_SQL = (
    "SELECT $__fromTime AS k, toFloat64(${target:raw}) AS target\n"
    "UNION ALL\n"
    "SELECT $__toTime AS k, toFloat64(${target:raw}) AS target\n"
    "ORDER BY k"
)


def build() -> db.Dashboard:
    scope = variables(SECTOR, PROVIDER, TIER)
    headline = grafana_share_sql(Basis.requests, scope)
    trend = grafana_share_sql(Basis.requests, scope, group_by=TIME_BUCKET)
    helpers = ("records", "cost_unconverted")

    d = (
        db.Dashboard("Inference sovereignty: national transparency")
        .uid(UID)
        .description(
            "Share of the public sector's AI inferences served on domestic infrastructure. "
            "Domestic = sovereign + onshore; unknown stays in the denominator."
        )
        .tags(TAGS)
        .time("now-90d", "now")
        .timezone("utc")
        .refresh("15m")
        .readonly()
        .with_variable(filter_variable(SECTOR))
        .with_variable(filter_variable(PROVIDER))
        .with_variable(filter_variable(TIER))
        .with_variable(
            db.CustomVariable("target")
            .label("Domestic share target")
            .values(",".join(TARGETS))
            .current(dm.VariableOption(selected=True, text="0.7", value="0.7"))
        )
        .with_row(db.Row("Headline"))
        .with_panel(
            share_stat(
                "Domestic share (requests)",
                headline,
                "domestic_share",
                "(sovereign + onshore) / all requests in the range. Same SQL as GET /v1/share.",
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
                [
                    Query(trend).time_series().ref_id("A"),
                    Query(TARGET_SQL).time_series().ref_id("B"),
                ],
                "percentunit",
                "Domestic and sovereign share per interval; the dashed line is the target.",
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
                "The headline per sector (key k).",
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
                "The headline per provider as reported by gateways (key k).",
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
