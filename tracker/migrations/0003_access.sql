-- 0003: read-API keys with roles, and the append-only audit log of keyed reads.
-- Frozen once released: change the schema with a new numbered file, never by editing this one.

-- API keys of agencies, auditors and admins (the public needs none). Only a SHA-256 of the key
-- is stored: keys are 256-bit random tokens, so a slow password hash would add latency to every
-- request without adding safety (the same reasoning as gateway keys in 0001). Revocation and
-- changes insert a newer version of the row; ReplacingMergeTree(version) keeps the latest, and
-- readers use FINAL (the table is tiny).
CREATE TABLE IF NOT EXISTS api_keys
(
    key_id     String,
    name       String,
    role       LowCardinality(String),
    agency_id  String,
    key_hash   String,
    created_at DateTime64(3, 'UTC'),
    created_by String,
    revoked    UInt8,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id;

-- One row per phase of every keyed read: `begin` is written before any data is produced (if it
-- cannot be written the request fails closed with 503), `end` after the last byte with the
-- status and the number of rows returned. Plain MergeTree: the product only ever INSERTs here
-- and offers no route that updates or deletes. ORDER BY (at, request_id): admins read it by
-- time range, newest first; request_id pairs a begin with its end.
CREATE TABLE IF NOT EXISTS audit_log
(
    at          DateTime64(6, 'UTC'),
    request_id  String,
    phase       LowCardinality(String),
    key_id      String,
    role        LowCardinality(String),
    agency_id   String,
    client_ip   String,
    method      LowCardinality(String),
    path        String,
    query       String,
    status      UInt16,
    rows        UInt64,
    duration_ms UInt32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (at, request_id);
