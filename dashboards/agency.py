"""Agency: one public body's usage, its providers, cost and domestic share."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.clickhouse import Query
from dashboards.panels import (
    AGENCY,
    PROVIDER,
    TAGS,
    filter_variable,
    grid,
    hide_fields,
    number_stat,
    raw_where,
    rename_fields,
    series,
    share_stat,
    variables,
)
from tracker.metrics import Basis, grafana_share_sql, grafana_where_clause

UID = "ist-agency"
TIME_BUCKET = "$__timeInterval(hour)"

SCOPE = variables(AGENCY, PROVIDER)
WHERE = grafana_where_clause(SCOPE)
GROUP = "provider, model, region, tier, facility_country"

# Providers of the agency: volume, tokens, cost, latency and where they served it. Not a
# headline figure, so written here; it reads the same rollup under the same WHERE. The mean
# latency is GET /v1/providers' (tracker.queries.providers_sql): weighted by request_count, a
# record may stand for many requests, over the raw records that report a latency. The rollup
# keeps only a per-record latency sum, so it is read from usage_raw, same filters and hours.
PROVIDERS_SQL = f"""
SELECT
    {GROUP},
    r.total_requests AS total_requests, r.tokens AS tokens, r.cost AS cost,
    l.avg_latency_ms AS avg_latency_ms, r.error_rate AS error_rate
FROM (
    SELECT
        {GROUP},
        sum(requests) AS total_requests,
        sum(input_tokens + output_tokens) AS tokens,
        sum(cost_reporting) AS cost,
        sumIf(requests, status = 'error') / total_requests AS error_rate
    FROM usage_hourly
    WHERE {WHERE}
    GROUP BY {GROUP}
) AS r
LEFT JOIN (
    SELECT
        {GROUP},
        CAST(sum(toFloat64(latency_ms) * request_count) / sum(request_count)
             AS Nullable(Float64)) AS avg_latency_ms
    FROM usage_raw
    WHERE {raw_where(WHERE)} AND latency_ms IS NOT NULL
    GROUP BY {GROUP}
) AS l USING ({GROUP})
ORDER BY total_requests DESC, {GROUP}
""".strip()

# Operations of the agency, under the same filters as every other panel here (provider too).
USE_CASES_SQL = f"""
SELECT operation, sum(requests) AS requests, sum(cost_reporting) AS cost
FROM usage_hourly
WHERE {WHERE}
GROUP BY operation
ORDER BY requests DESC, operation
""".strip()


def build() -> db.Dashboard:
    headline = grafana_share_sql(Basis.requests, SCOPE)
    cost = grafana_share_sql(Basis.cost, SCOPE)
    helpers = ("records", "cost_unconverted", "unknown_share")
    return (
        db.Dashboard("Inference sovereignty: agency")
        .uid(UID)
        .description("One agency's AI usage: providers, cost and domestic share.")
        .tags(TAGS)
        .time("now-90d", "now")
        .timezone("utc")
        .refresh("15m")
        .readonly()
        .with_variable(filter_variable(AGENCY, multi=False))
        .with_variable(filter_variable(PROVIDER))
        .with_row(db.Row("${agency:text}"))
        .with_panel(
            share_stat(
                "Domestic share (requests)",
                headline,
                "domestic_share",
                "Same SQL as GET /v1/share?agency=<agency>.",
            )
        )
        .with_panel(
            share_stat(
                "Sovereign share (requests)",
                headline,
                "sovereign_share",
                "Domestic operator on domestic soil.",
            )
        )
        .with_panel(
            share_stat(
                "Domestic share (cost)",
                cost,
                "domestic_share",
                "Share of spend (reporting currency) on domestic infrastructure.",
            )
        )
        .with_panel(
            number_stat("Requests", headline, "total", "short", "All requests in the range.")
        )
        .with_panel(
            number_stat(
                "Cost (reporting currency)",
                cost,
                "total",
                "none",
                "Sum of cost converted to the registry's reporting currency.",
            )
        )
        .with_panel(
            number_stat(
                "Records with unconverted cost",
                cost,
                "cost_unconverted",
                "short",
                "Records whose currency has no rate in the registry (left out of cost).",
            )
        )
        .with_row(db.Row("Over time"))
        .with_panel(
            series(
                "Domestic share",
                [
                    Query(
                        grafana_share_sql(Basis.requests, SCOPE, group_by=TIME_BUCKET)
                    ).time_series()
                ],
                "percentunit",
                "Domestic and sovereign share per interval.",
            )
            .with_transformation(
                hide_fields("sovereign", "onshore", "offshore", "unknown", "total", *helpers)
            )
            .min(0)
            .max(1)
        )
        .with_panel(
            series(
                "Cost by tier",
                [Query(grafana_share_sql(Basis.cost, SCOPE, group_by=TIME_BUCKET)).time_series()],
                "none",
                "Spend per interval, stacked by sovereignty tier.",
                stacked=True,
            ).with_transformation(
                hide_fields("total", "domestic_share", "sovereign_share", *helpers)
            )
        )
        .with_row(db.Row("Providers"))
        .with_panel(
            grid(
                "Providers and models",
                PROVIDERS_SQL,
                "Where the agency's requests went, with cost and mean latency per request "
                "(weighted by requests, as GET /v1/providers).",
                span=16,
            )
            .with_transformation(rename_fields({"facility_country": "country"}))
            # Units said (found in review: 0.0180 read as no percentage, latency and cost
            # without theirs).
            .override_by_name(
                "error_rate",
                [
                    dm.DynamicConfigValue(id_val="unit", value="percentunit"),
                    dm.DynamicConfigValue(id_val="displayName", value="error rate"),
                ],
            )
            .override_by_name(
                "avg_latency_ms",
                [
                    dm.DynamicConfigValue(id_val="unit", value="ms"),
                    dm.DynamicConfigValue(id_val="displayName", value="mean latency"),
                ],
            )
            .override_by_name(
                "cost",
                [
                    dm.DynamicConfigValue(id_val="displayName", value="cost (reporting currency)"),
                ],
            )
        )
        .with_panel(
            grid(
                "By operation",
                USE_CASES_SQL,
                "Requests and cost per operation (chat, embeddings, ...).",
                span=8,
            )
        )
    )
