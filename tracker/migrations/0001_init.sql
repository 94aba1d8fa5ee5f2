-- 0001: raw usage, idempotency keys, landed batches, hourly rollup, gateways, rejects,
-- registry versions.
-- Frozen once released: change the schema with a new numbered file, never by editing this one.

-- Raw usage as landed, one row per record, classification added by the pipeline.
-- ORDER BY (agency_id, occurred_at, ...): auditors and agencies read one agency over a time
-- range; the headline reads the rollup, never this table. Monthly partitions keep late and
-- backfilled records cheap to land and let retention drop whole months.
CREATE TABLE IF NOT EXISTS usage_raw
(
    record_id           String,
    gateway_id          LowCardinality(String),
    agency_id           LowCardinality(String),
    occurred_at         DateTime64(3, 'UTC'),
    provider            LowCardinality(String),
    model               LowCardinality(String),
    operation           LowCardinality(String),
    endpoint_host       String,
    region              LowCardinality(String),
    request_count       UInt64,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cost                Nullable(Decimal(38, 9)),
    currency            LowCardinality(String),
    cost_reporting      Decimal(38, 9),
    cost_converted      UInt8,
    latency_ms          Nullable(UInt32),
    status              LowCardinality(String),
    energy_wh           Nullable(Float64),
    use_case            LowCardinality(String),
    schema_version      UInt8,
    tier                LowCardinality(String),
    facility_id         LowCardinality(String),
    facility_country    LowCardinality(String),
    operator            LowCardinality(String),
    sector              LowCardinality(String),
    channel             LowCardinality(String),
    classification_rule LowCardinality(String),
    registry_version    LowCardinality(String),
    source_partition    Int32,
    source_offset       Int64,
    batch_id            UInt64,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    -- batch_id grows with time, so a minmax index finds one batch's rows in its own part.
    INDEX idx_batch batch_id TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (agency_id, occurred_at, gateway_id, record_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Idempotency keys of landed records. ORDER BY the key itself: the writer's "already landed?"
-- check is a primary-key lookup. Filled by the writer from usage_raw after each raw insert,
-- under the batch's deduplication token (see pipeline/writer.py for the full protocol).
CREATE TABLE IF NOT EXISTS usage_keys
(
    gateway_id  LowCardinality(String),
    record_id   String,
    occurred_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (gateway_id, record_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- One row per batch whose raw rows, keys and rollup rows are all written. A batch in usage_raw
-- but not here was interrupted, and is completed by the writer's repair step before any new
-- work, so the rollups never miss nor double-count a landed record.
CREATE TABLE IF NOT EXISTS landed_batches
(
    batch_id  UInt64,
    rows      UInt64,
    landed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY batch_id;

-- Hourly rollup behind the headline and every breakdown. SummingMergeTree: sum() over it is
-- exact whether or not parts have merged, so no FINAL on the hot path. Filled by the writer
-- from each landed batch (not by a materialized view, whose insert is not atomic with the
-- raw insert: a crash between the two would leave a record landed but never rolled up). Dimensions are the ones
-- the API filters and groups by; registry_version keeps "as classified then" answerable.
CREATE TABLE IF NOT EXISTS usage_hourly
(
    hour             DateTime('UTC'),
    agency_id        LowCardinality(String),
    sector           LowCardinality(String),
    channel          LowCardinality(String),
    provider         LowCardinality(String),
    model            LowCardinality(String),
    region           LowCardinality(String),
    tier             LowCardinality(String),
    operator         LowCardinality(String),
    facility_country LowCardinality(String),
    operation        LowCardinality(String),
    status           LowCardinality(String),
    registry_version LowCardinality(String),
    records          UInt64,
    requests         UInt64,
    input_tokens     UInt64,
    output_tokens    UInt64,
    cost_reporting   Decimal(38, 9),
    cost_unconverted UInt64,
    energy_wh        Float64,
    latency_ms_sum   UInt64,
    latency_count    UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, agency_id, provider, model, region, tier, sector, channel, operator,
          facility_country, operation, status, registry_version)
SETTINGS non_replicated_deduplication_window = 10000;

-- Gateways and their API keys. Only a SHA-256 of the key is stored: keys are 256-bit random,
-- so a slow password hash would add latency to every ingest call without adding safety.
CREATE TABLE IF NOT EXISTS gateways
(
    gateway_id String,
    name       String,
    agencies   Array(String),
    key_hash   String,
    created_at DateTime64(3, 'UTC'),
    revoked    UInt8,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY gateway_id;

-- Records refused by the pipeline (dead letters), queryable by auditors.
CREATE TABLE IF NOT EXISTS usage_rejects
(
    rejected_at      DateTime64(3, 'UTC'),
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    record_index     Int32,
    gateway_id       LowCardinality(String),
    field            String,
    reason           String,
    payload          String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(rejected_at)
ORDER BY (rejected_at, source_partition, source_offset);

-- Every registry version that classified a record, with its full text, so any figure can be
-- re-derived years later from exactly the rules that produced it.
CREATE TABLE IF NOT EXISTS registry_versions
(
    version   String,
    loaded_at DateTime64(3, 'UTC'),
    author    String,
    reason    String,
    content   String
)
ENGINE = ReplacingMergeTree
ORDER BY version;
