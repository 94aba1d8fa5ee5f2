-- 0005: a daily rollup for the headline over long ranges (issue #4 item 5).
-- Frozen once released: change the schema with a new numbered file, never by editing this one.
--
-- usage_hourly holds ~200 rows an hour (agency x route x status ...), so a two-year headline
-- summed ~4M of them. usage_daily keeps only the dimensions a headline may be filtered by
-- (tracker/metrics.DAILY_FILTERS), a few hundred rows a day: the headline reads whole days here
-- and only the ragged edges of its range from usage_hourly. Written by the pipeline writer as one
-- more idempotent step of every batch (token daily-B, pipeline/writer.py), from usage_raw like
-- usage_hourly, so both rollups always hold the same landed batches. Existing rows are derived
-- from usage_hourly once, when this migration is applied (tracker/rollups.backfill_daily).
CREATE TABLE IF NOT EXISTS usage_daily
(
    day              Date,
    agency_id        LowCardinality(String),
    tier             LowCardinality(String),
    sector           LowCardinality(String),
    channel          LowCardinality(String),
    operation        LowCardinality(String),
    status           LowCardinality(String),
    records          UInt64,
    requests         UInt64,
    input_tokens     UInt64,
    output_tokens    UInt64,
    cost_reporting   Decimal(38, 9),
    cost_unconverted UInt64,
    energy_wh        Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYear(day)
ORDER BY (day, agency_id, tier, sector, channel, operation, status)
SETTINGS non_replicated_deduplication_window = 10000;
