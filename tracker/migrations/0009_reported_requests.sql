-- 0009: the requests behind cost and energy per inference, exactly (usage_hourly: /v1/cost
-- reads it).
-- Frozen once released: change the schema with a new numbered file, never by editing this one.
--
-- The rollup summed cost and energy but not how many requests reported them, so cost per
-- inference divided by every request (those without a converted cost too) and energy per
-- inference by the requests of rollup rows with any energy. Written by the pipeline writer from
-- each batch's raw rows like the other measures (tracker/rollups.py):
--   cost_requests    requests of records with a cost converted to the reporting currency
--   energy_requests  requests of records that reported energy
--   measured_records records whose rows carry the two above: equal to records once the data
--                    step (tracker/rollups.measure_hourly) has measured what landed before,
--                    so a reader can tell exact figures from approximate ones.
-- SummingMergeTree sums added numeric columns like the others.
ALTER TABLE usage_hourly ADD COLUMN IF NOT EXISTS cost_requests UInt64;
ALTER TABLE usage_hourly ADD COLUMN IF NOT EXISTS energy_requests UInt64;
ALTER TABLE usage_hourly ADD COLUMN IF NOT EXISTS measured_records UInt64;
