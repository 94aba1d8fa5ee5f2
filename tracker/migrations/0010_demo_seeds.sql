-- 0010: `tracker demo` records the window it seeds, so an interrupted seed is completed.
-- Frozen once released: change the schema with a new numbered file, never by editing this one.
--
-- The demo's records depend on the day it runs (the window ends today) and on `--days`. It
-- took any usage in the store for its own finished seed, so a seed stopped half-way (Ctrl-C,
-- a kill) stayed half-seeded for good. A row `started` before the first record and one
-- `completed` after the last let the next run land the same window again (the key index lands
-- each record once) and say what it did. Append-only, a few rows per store.
CREATE TABLE IF NOT EXISTS demo_seeds
(
    end_date Date,
    days     UInt16,
    state    Enum8('started' = 1, 'completed' = 2),
    records  UInt64,
    at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY at;
