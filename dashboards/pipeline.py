"""Pipeline health from what ClickHouse already holds: landing delay, throughput, rejects.

Broker-side signals (consumer lag per partition, collector spool depth, batches in flight)
are process metrics, exported with prometheus-client; they need a Prometheus data source and
are described in docs/dashboards.md, not queried here.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from dashboards.clickhouse import Query
from dashboards.panels import TAGS, grid, note, number_stat, series

UID = "ist-pipeline"

# Delay from the request (occurred_at) to landing (ingested_at), for records landed in the
# range. Pre-aggregated gateway windows and backfills raise it by design. quantileDeterministic:
# a sample as bounded as quantile()'s, drawn by each record's id, so a refresh over the same
# records gives the same figure (quantile() sampled at random: 59,988,811 s to 60,323,960 s
# for one range in review); quantileExact would hold every delay of the range in memory.
DELAY_SQL = """
WITH dateDiff('millisecond', occurred_at, ingested_at) AS delay_ms, cityHash64(record_id) AS draw
SELECT
    count() AS landed,
    quantileDeterministic(0.5)(delay_ms, draw) / 1000 AS p50_delay_s,
    quantileDeterministic(0.95)(delay_ms, draw) / 1000 AS p95_delay_s,
    max(ingested_at) AS last_landed
FROM usage_raw
WHERE $__timeFilter_ms(ingested_at)
""".strip()

THROUGHPUT_SQL = """
SELECT
    $__timeInterval(ingested_at) AS k,
    count() / $__interval_s AS records_per_s,
    sum(request_count) / $__interval_s AS requests_per_s
FROM usage_raw
WHERE $__timeFilter_ms(ingested_at)
GROUP BY k
ORDER BY k
""".strip()

DELAY_TREND_SQL = """
WITH dateDiff('millisecond', occurred_at, ingested_at) AS delay_ms, cityHash64(record_id) AS draw
SELECT
    $__timeInterval(ingested_at) AS k,
    quantileDeterministic(0.5)(delay_ms, draw) / 1000 AS p50_delay_s,
    quantileDeterministic(0.95)(delay_ms, draw) / 1000 AS p95_delay_s
FROM usage_raw
WHERE $__timeFilter_ms(ingested_at)
GROUP BY k
ORDER BY k
""".strip()

# Refused records, not rows: usage_rejects holds a row per refused field (a record missing four
# fields is four rows), and counting rows put a 20% reject rate at 50% (found in review). A
# message refused whole (not JSON) is one.
REJECTS_SQL = """
SELECT $__timeInterval(rejected_at) AS k,
    uniqExact(source_topic, source_partition, source_offset, record_index) AS rejects
FROM usage_rejects
WHERE $__timeFilter_ms(rejected_at)
GROUP BY k
ORDER BY k
""".strip()

REJECT_TOTAL_SQL = """
SELECT
    (SELECT uniqExact(source_topic, source_partition, source_offset, record_index)
     FROM usage_rejects WHERE $__timeFilter_ms(rejected_at)) AS rejects,
    (SELECT count() FROM usage_raw WHERE $__timeFilter_ms(ingested_at)) AS landed,
    if(rejects + landed = 0, NULL, rejects / (rejects + landed)) AS reject_rate
""".strip()

# Consumer progress as ClickHouse saw it: the highest Kafka offset landed per partition.
PARTITIONS_SQL = """
SELECT source_partition AS partition, count() AS records, min(source_offset) AS first_offset,
    max(source_offset) AS last_offset, max(ingested_at) AS last_landed
FROM usage_raw
WHERE $__timeFilter_ms(ingested_at)
GROUP BY partition
ORDER BY partition
""".strip()

PROMETHEUS_NOTE = (
    "Not shown yet, because they live in process memory, not in ClickHouse: **consumer lag** "
    "per partition (`tracker_pipeline_lag`), **batch write time** and failures "
    "(`tracker_pipeline_write_seconds`, `tracker_pipeline_write_failures_total`), records by "
    "outcome (`tracker_pipeline_records_total`). The pipeline exports them with "
    "prometheus-client; they arrive with a Prometheus data source. The collector's **spool "
    "depth** is not exported yet. See docs/dashboards.md."
)


def build() -> db.Dashboard:
    return (
        db.Dashboard("Inference sovereignty: pipeline health")
        .uid(UID)
        .description("Landing delay, throughput and rejects, from ClickHouse itself.")
        .tags(TAGS)
        .time("now-24h", "now")
        .timezone("utc")
        .refresh("1m")
        .readonly()
        .with_row(db.Row("Now"))
        .with_panel(
            number_stat(
                "Records landed", DELAY_SQL, "landed", "short", "Records landed in the range."
            )
        )
        .with_panel(
            number_stat(
                "Landing delay p95",
                DELAY_SQL,
                "p95_delay_s",
                "s",
                "95th percentile of occurred_at -> ingested_at for records landed in range.",
            )
        )
        .with_panel(
            number_stat(
                "Reject rate",
                REJECT_TOTAL_SQL,
                "reject_rate",
                "percentunit",
                "Refused records / (refused + landed) in the range (a message refused whole: one).",
            )
        )
        .with_row(db.Row("Over time"))
        .with_panel(
            series(
                "Throughput",
                [Query(THROUGHPUT_SQL).time_series()],
                "reqps",
                "Records and requests landed per second, by ingestion time.",
            ).interval("1m")
        )
        .with_panel(
            series(
                "Landing delay",
                [Query(DELAY_TREND_SQL).time_series()],
                "s",
                "p50 and p95 delay from request to landing, by ingestion time.",
            ).interval("1m")
        )
        .with_panel(
            series(
                "Rejects",
                [Query(REJECTS_SQL).time_series()],
                "short",
                "Records refused by the pipeline (dead letters) per interval.",
            ).interval("1m")
        )
        .with_panel(
            grid(
                "Partitions",
                PARTITIONS_SQL,
                "Highest Kafka offset landed per partition (-1: embedded hand-off).",
            )
        )
        .with_row(db.Row("Spool and consumer lag"))
        .with_panel(note("Needs a Prometheus data source", PROMETHEUS_NOTE, height=4))
    )
