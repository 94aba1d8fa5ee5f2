"""Auditor: raw usage explorer, raw-vs-rollup reconciliation, rejects, registry changes."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.panels import (
    AGENCY,
    PROVIDER,
    SECTOR,
    TAGS,
    TIER,
    filter_variable,
    filters_only,
    grid,
    number_stat,
    raw_where,
    variables,
)
from tracker.metrics import grafana_where_clause

UID = "ist-auditor"
FILTERS = (AGENCY, SECTOR, PROVIDER, TIER)
RECORD = "record_id"

# usage_raw carries the same dimension columns as the rollup, so one WHERE serves both once
# the rollup's `hour` is replaced by the raw record's hour.
ROLLUP_WHERE = grafana_where_clause(variables(*FILTERS))
RAW_HOUR_WHERE = raw_where(ROLLUP_WHERE)
RAW_FILTERS = filters_only(ROLLUP_WHERE)

RAW_SQL = f"""
SELECT
    occurred_at, ingested_at, agency_id, gateway_id, record_id, provider, model, operation,
    endpoint_host, region, request_count, input_tokens, output_tokens, cost, currency,
    cost_reporting, latency_ms, status, energy_wh, use_case, tier, facility_id,
    facility_country, operator, classification_rule, registry_version,
    source_partition, source_offset
FROM usage_raw
WHERE $__timeFilter_ms(occurred_at)
  AND {RAW_FILTERS}
  AND $__conditionalAll(record_id = decodeURLComponent('${{{RECORD}:percentencode}}'), ${RECORD})
ORDER BY occurred_at DESC, gateway_id, record_id
LIMIT 1000
""".strip()

# Every landed record must be in the rollup exactly once: the two counts must be equal.
RECONCILE_SQL = f"""
SELECT
    (SELECT count() FROM usage_raw WHERE {RAW_HOUR_WHERE}) AS raw_records,
    (SELECT sum(records) FROM usage_hourly WHERE {ROLLUP_WHERE}) AS rollup_records,
    raw_records - rollup_records AS difference
""".strip()

# The hours every figure of the dashboard reads (found in review: the exact range here counted
# other records than the reconciliation beside it).
RULES_SQL = f"""
SELECT classification_rule, tier, facility_country, operator, registry_version,
    count() AS records, sum(request_count) AS requests
FROM usage_raw
WHERE {RAW_HOUR_WHERE}
GROUP BY classification_rule, tier, facility_country, operator, registry_version
ORDER BY requests DESC
""".strip()

REJECTS_SQL = """
SELECT rejected_at, gateway_id, field, reason, source_topic, source_partition, source_offset,
    record_index, substring(payload, 1, 500) AS payload
FROM usage_rejects
WHERE $__timeFilter_ms(rejected_at)
ORDER BY rejected_at DESC
LIMIT 1000
""".strip()

REJECT_REASONS_SQL = """
SELECT field, reason, count() AS rejects, min(rejected_at) AS first, max(rejected_at) AS last
FROM usage_rejects
WHERE $__timeFilter_ms(rejected_at)
GROUP BY field, reason
ORDER BY rejects DESC
""".strip()

# Registry changes are few and permanent: all of them, not only those in the range. The ledger,
# not registry_versions: that keeps a text's first load, and also the text of a change that lost
# the ledger race and never came into force.
REGISTRY_SQL = """
SELECT effective_from, version, previous, author, reason, source, recorded_at
FROM registry_changes
ORDER BY effective_from DESC, seq DESC
""".strip()

REGISTRY_USE_SQL = f"""
SELECT registry_version, min(hour) AS first_hour, max(hour) AS last_hour,
    sum(records) AS records, sum(requests) AS requests
FROM usage_hourly
WHERE {ROLLUP_WHERE}
GROUP BY registry_version
ORDER BY first_hour
""".strip()


def build() -> db.Dashboard:
    d = (
        db.Dashboard("Inference sovereignty: auditor")
        .uid(UID)
        .description(
            "Raw usage as landed, with its classification; reconciliation of raw records "
            "against the rollup; rejected records; registry versions."
        )
        .tags(TAGS)
        .time("now-7d", "now")
        .timezone("utc")
        .readonly()
    )
    for name in FILTERS:
        d = d.with_variable(filter_variable(name))
    return (
        d.with_variable(
            db.TextBoxVariable(RECORD).label("Record id").description("Exact record_id")
        )
        .with_row(db.Row("Reconciliation"))
        .with_panel(
            number_stat(
                "Raw records",
                RECONCILE_SQL,
                "raw_records",
                "short",
                "Records in usage_raw for the (hour-rounded) range and filters.",
            )
        )
        .with_panel(
            number_stat(
                "Rollup records",
                RECONCILE_SQL,
                "rollup_records",
                "short",
                "The same records as counted by the hourly rollup behind every figure.",
            )
        )
        .with_panel(
            number_stat(
                "Raw - rollup",
                RECONCILE_SQL,
                "difference",
                "short",
                "Must be 0: anything else means a record is missing from or doubled in figures.",
            )
        )
        .with_row(db.Row("Raw usage"))
        .with_panel(
            grid(
                "Raw usage (latest 1000)",
                RAW_SQL,
                "Each landed record with how it was classified and where it came from.",
                height=12,
                span=24,
            )
        )
        .with_panel(
            grid(
                "Classification rules applied",
                RULES_SQL,
                "Which registry rule classified how many records.",
                span=24,
            )
        )
        .with_row(db.Row("Rejects"))
        .with_panel(grid("Rejects by reason", REJECT_REASONS_SQL, "Dead letters grouped.", span=10))
        .with_panel(grid("Rejected records", REJECTS_SQL, "Dead letters, newest first.", span=14))
        .with_row(db.Row("Registry"))
        .with_panel(
            grid(
                "Registry changes",
                REGISTRY_SQL,
                "The registry's change ledger: which version is in force from when, replacing "
                "which, by whom and why (scheduled changes included; each version's full text "
                "is served at /v1/registry/versions/{version}).",
                span=12,
            )
        )
        .with_panel(
            grid(
                "Records per registry version",
                REGISTRY_USE_SQL,
                "Which registry version classified the records in the range.",
                span=12,
            )
        )
    )
