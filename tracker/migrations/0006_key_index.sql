-- 0006: the idempotency key index as a key-value table (issue #4 item 9).
-- Frozen once released: change the schema with a new numbered file, never by editing this one.
--
-- The writer's "already landed?" check looks up every key of a batch. In usage_keys (a
-- MergeTree ordered by the key) 50k random keys touch every granule, so each check read the
-- whole table: ~4 s per batch at 30M keys, growing with history. EmbeddedRocksDB answers
-- `key IN (...)` with point lookups (a multi-get): ~135 ms for 51k keys at 30M, flat as it
-- grows. Written by the writer's keys step (an upsert: repeating it is harmless), from
-- usage_raw after the raw part is in, exactly as usage_keys was. usage_keys is no longer
-- written; keys landed before this migration are copied here when it is applied.
-- The store is local to one ClickHouse server (not replicated): the deploy runs one.
CREATE TABLE IF NOT EXISTS usage_key_index
(
    key         String,               -- gateway_id, a space, record_id (no identifier has one)
    occurred_at DateTime64(3, 'UTC'),
    batch_id    UInt64                -- the batch that landed it; 0 = copied from usage_keys
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY key;
