"""Building blocks shared by the dashboards: template variables and panel shapes."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat, table, text, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import text as tm

from dashboards.clickhouse import DATASOURCE, Query
from tracker.metrics import GRAFANA_OPTION_VALUE, GRAFANA_TIME_WHERE

# Rollup dimension -> dashboard variable. The same names on every dashboard, so links that
# carry variables (keepTime + includeVars) land on the same selection.
AGENCY = "agency"
SECTOR = "sector"
PROVIDER = "provider"
TIER = "tier"
VARIABLE_COLUMNS = {AGENCY: "agency_id", SECTOR: "sector", PROVIDER: "provider", TIER: "tier"}
LABELS = {AGENCY: "Agency", SECTOR: "Sector", PROVIDER: "Provider", TIER: "Tier"}

ALL_OPTION = dm.VariableOption(selected=True, text="All", value="$__all")
TAGS = ["inference-sovereignty"]


def options_sql(variable: str) -> str:
    """The options a filter variable offers: what the rollup holds. Two columns, which the
    plugin's metricFindQuery reads as (value, text): the text shown is the dimension value, the
    value carried (URL, queries) is its URL encoding, which holds no comma or brace, so a
    multi-value selection encoded by `percentencode` splits back exactly
    (tracker.metrics.GRAFANA_SELECTED)."""
    column = VARIABLE_COLUMNS[variable]
    value = GRAFANA_OPTION_VALUE.format(column=column)
    return f"SELECT DISTINCT {value} AS value, {column} AS text FROM usage_hourly ORDER BY text"


def filter_variable(variable: str, *, multi: bool = True) -> db.QueryVariable:
    """A query variable over the rollup. Multi-select variables default to "All", which the
    plugin's $__conditionalAll turns into no filter at all (as the API without a filter).

    No custom values (the SDK's default allows them): a value typed into the dropdown reaches
    the SQL as typed, while the SQL reads every value as an option's value, the URL encoding
    of a name (options_sql), so a typed `a,b` filtered `a` and `b` and a typed `%41` filtered
    `A` (found in review). Only the options can be picked."""
    v = (
        db.QueryVariable(variable)
        .label(LABELS[variable])
        .datasource(DATASOURCE)
        .query(options_sql(variable))
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
        .allow_custom_value(False)
    )
    if multi:
        v = v.current(ALL_OPTION)
    return v


def variables(*names: str) -> dict[str, str]:
    """Rollup column -> variable name, the shape tracker.metrics.grafana_share_sql takes."""
    return {VARIABLE_COLUMNS[n]: n for n in names}


def raw_where(rollup_where: str) -> str:
    """A rollup WHERE (tracker.metrics.grafana_where_clause) for usage_raw, which carries the
    same dimension columns: the rollup's `hour` becomes the record's hour, so both read the
    same records for a range (the API's raw queries do the same with occurred_at bounds)."""
    if not rollup_where.startswith(GRAFANA_TIME_WHERE):
        raise ValueError("not a WHERE of tracker.metrics.grafana_where_clause")
    time = GRAFANA_TIME_WHERE.replace("hour ", "toStartOfHour(occurred_at) ")
    return time + rollup_where[len(GRAFANA_TIME_WHERE) :]


def filters_only(rollup_where: str) -> str:
    """The variable filters of a grafana_where_clause without its time clause ("1=1" if none),
    for queries that bound time on another column."""
    if not rollup_where.startswith(GRAFANA_TIME_WHERE):
        raise ValueError("not a WHERE of tracker.metrics.grafana_where_clause")
    return rollup_where[len(GRAFANA_TIME_WHERE) :].removeprefix(" AND ") or "1=1"


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds: each (from value, colour), the first from nothing (None)."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=colour) for value, colour in steps])
    )


# A share where higher is better (domestic, sovereign), and one that should be small (unknown:
# requests the registry cannot place).
HIGHER_IS_BETTER = thresholds((None, "red"), (0.4, "orange"), (0.7, "green"))
LOWER_IS_BETTER = thresholds((None, "green"), (0.1, "orange"), (0.25, "red"))


def share_stat(
    title: str, sql: str, field: str, description: str, *, lower_is_better: bool = False
) -> stat.Panel:
    """A stat showing one column of the headline SELECT (the SQL stays the API's, whole).
    Coloured as the domestic share (higher is better) unless `lower_is_better` (found in
    review: the unknown share showed red at 0 % and green at 95 %)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Query(sql))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields(f"/^{field}$/"))
        .unit("percentunit")
        .decimals(1)
        .min(0)
        .max(1)
        .thresholds(LOWER_IS_BETTER if lower_is_better else HIGHER_IS_BETTER)
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .span(4)
        .height(5)
    )


def number_stat(title: str, sql: str, field: str, unit: str, description: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Query(sql))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields(f"/^{field}$/"))
        .unit(unit)
        .color_mode(cm.BigValueColorMode.NONE)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .span(4)
        .height(5)
    )


def series(
    title: str, queries: list[Query], unit: str, description: str, *, stacked: bool = False
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(queries))
        .unit(unit)
        .interval("1h")  # the rollup's resolution: finer buckets would only be empty
        .line_width(2)
        .fill_opacity(10)
        .legend(legend())
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.NONE))
        .span(12)
        .height(8)
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(60)
    return panel


def legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .display_mode(cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs([])
    )


def hide_fields(*names: str) -> dm.DataTransformerConfig:
    """An `organize` transformation hiding helper columns of the shared SELECT."""
    return dm.DataTransformerConfig(
        id_val="organize", options={"excludeByName": dict.fromkeys(names, True)}
    )


def rename_fields(renames: dict[str, str]) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(id_val="organize", options={"renameByName": renames})


def grid(title: str, sql: str, description: str, *, height: int = 9, span: int = 12) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Query(sql))
        .frame_index(0)
        .show_header(True)
        .cell_options(cm.TableAutoCellOptions())
        .filterable(True)
        .span(span)
        .height(height)
    )


# Bars a bar panel draws at most: its first rows, so its SQL must put the rows to show first
# (tracker.metrics.grafana_share_sql orders dimension groups largest total first).
BARS_LIMIT = 50


def bars(title: str, sql: str, field: str, unit: str, description: str) -> bargauge.Panel:
    """Horizontal bars of one column, one bar per row (the group key names the bar), for the
    first BARS_LIMIT rows of the result."""
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(Query(sql))
        .reduce_options(
            cb.ReduceDataOptions().values(True).calcs([]).fields(f"/^{field}$/").limit(BARS_LIMIT)
        )
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .unit(unit)
        .min(0)
        .span(12)
        .height(9)
    )


def note(title: str, markdown: str, *, span: int = 24, height: int = 5) -> text.Panel:
    return (
        text.Panel()
        .title(title)
        .mode(tm.TextMode.MARKDOWN)
        .content(markdown)
        .span(span)
        .height(height)
    )
