-- 0004: optional request signing per gateway (collector/signing.py, docs/collectors.md).
-- Frozen once released: change the schema with a new numbered file, never by editing this one.

-- The HMAC secret of a gateway that must sign its requests; '' = signing not required. Stored
-- as is, unlike the key: the collector needs the secret itself to verify a signature. Shown
-- once by `tracker gateway add --signed`, never listed, logged or returned afterwards. The
-- DEFAULT keeps existing gateways (and their older row versions) unsigned.
ALTER TABLE gateways ADD COLUMN IF NOT EXISTS signing_secret String DEFAULT '' AFTER version;
