-- 0007: a gateway or API key name is claimed by exactly one `add`, even when two run at once.
-- Frozen once released: change the schema with a new numbered file, never by editing this one.
--
-- `tracker gateway add` and `tracker key add` check that the name is free, then insert. On a
-- ClickHouse server two adds of one name can both pass the check; ReplacingMergeTree would then
-- keep the later row and the earlier command's printed key would silently never work. Each add
-- now inserts with the token `<kind>-add-<name>`: with a deduplication window the engine keeps
-- the first such insert and drops the second (the check and the commit happen under one lock),
-- and each command reads back whose key hash the row holds (tracker/gateways.py,
-- tracker/access.py). Names are never reused (a revoked name stays taken), so a token is used
-- once; the window only has to outlast a race, and 1000 admin inserts do.
ALTER TABLE gateways MODIFY SETTING non_replicated_deduplication_window = 1000;
ALTER TABLE api_keys MODIFY SETTING non_replicated_deduplication_window = 1000;
