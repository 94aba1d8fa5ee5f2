-- 0002: effective-dated registry (change ledger, proposals), "as classified now" (route rollup,
-- route -> classification per registry version) and the ledger of reclassification runs.
-- No materialized views: landing writes each table explicitly under batch tokens (0001).
-- Frozen once released: change the schema with a new numbered file, never by editing this one.

-- Which registry version is in force from when: one row per change, never updated. The version
-- in force at time t is the row with the greatest (effective_from, seq) where effective_from <= t
-- (tracker/registry_store.py). The full text of each version stays in registry_versions (0001).
-- ORDER BY (effective_from, seq): the pointer lookup reads the newest rows up to a time.
CREATE TABLE IF NOT EXISTS registry_changes
(
    seq            UInt64,               -- time_ns when recorded: orders equal effective_from
    version        String,
    previous       String,               -- the version in force when this change was recorded
    effective_from DateTime64(3, 'UTC'),
    recorded_at    DateTime64(3, 'UTC'),
    author         String,
    reason         String,
    source         String                -- file name, or `proposal:<id>` for the API
)
ENGINE = MergeTree
ORDER BY (effective_from, seq);

-- Registry changes proposed through the API, validated exactly like `tracker registry load`;
-- applying one appends to registry_changes. A newer row (greater `updated`) records the apply.
CREATE TABLE IF NOT EXISTS registry_proposals
(
    proposal_id  String,
    created_at   DateTime64(3, 'UTC'),
    author       String,
    reason       String,
    content      String,
    version      String,
    base_version String,                 -- in force when proposed; apply refuses if it moved
    status       LowCardinality(String), -- proposed | applied
    applied_at   Nullable(DateTime64(3, 'UTC')),
    applied_by   String,
    updated      UInt64
)
ENGINE = ReplacingMergeTree(updated)
ORDER BY proposal_id;

-- How each route (provider, region, endpoint_host, as stored in usage_raw) classifies under a
-- registry version. Computed by the Python classifier (the one implementation of the rules), on
-- demand for the routes a query or a reclassification run meets; deterministic, so re-inserting
-- a row is harmless and ReplacingMergeTree keeps one. ORDER BY the join key under one version.
CREATE TABLE IF NOT EXISTS registry_routes
(
    version          String,
    provider         String,
    region           String,
    endpoint_host    String,
    tier             LowCardinality(String),
    facility_id      LowCardinality(String),
    facility_country LowCardinality(String),
    operator         LowCardinality(String),
    rule             String,
    facility_grade   LowCardinality(String),
    operator_grade   LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (version, provider, region, endpoint_host);

-- The hourly rollup per route: usage_hourly's filter dimensions plus endpoint_host, the one
-- piece of evidence usage_hourly lacks, so "as classified now" can re-classify every row from a
-- rollup instead of scanning usage_raw. Written only by `tracker reclassify`, one month
-- partition at a time (derived from usage_raw into a scratch table, swapped in with REPLACE
-- PARTITION, then checked against usage_raw). A month counts as covered while its sum(records)
-- equals usage_hourly's; other months are re-classified from usage_raw at query time.
-- ORDER BY (hour, provider, region, endpoint_host, ...): range reads, grouped by route.
CREATE TABLE IF NOT EXISTS usage_hourly_routes
(
    hour             DateTime('UTC'),
    agency_id        LowCardinality(String),
    sector           LowCardinality(String),
    channel          LowCardinality(String),
    provider         LowCardinality(String),
    model            LowCardinality(String),
    region           LowCardinality(String),
    endpoint_host    String,
    tier             LowCardinality(String),
    operation        LowCardinality(String),
    status           LowCardinality(String),
    registry_version LowCardinality(String),
    records          UInt64,
    requests         UInt64,
    input_tokens     UInt64,
    output_tokens    UInt64,
    cost_reporting   Decimal(38, 9),
    cost_unconverted UInt64,
    energy_wh        Float64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, provider, region, endpoint_host, agency_id, model, tier, sector, channel,
          operation, status, registry_version);

-- One row per month re-derived by `tracker reclassify`: what was checked and what changed.
CREATE TABLE IF NOT EXISTS reclassify_runs
(
    run_id          String,
    month           Date,
    version         String,               -- registry version the month was re-classified by
    started_at      DateTime64(3, 'UTC'),
    finished_at     DateTime64(3, 'UTC'),
    author          String,
    raw_records     UInt64,               -- count() of usage_raw in the month
    rollup_records  UInt64,               -- sum(records) of usage_hourly_routes after the swap
    hourly_records  UInt64,               -- sum(records) of usage_hourly (as classified then)
    changed_records UInt64,               -- records whose tier differs now from then
    attempts        UInt8
)
ENGINE = MergeTree
ORDER BY (month, started_at);
