"""The rollups' one definition: how usage_key_index, usage_hourly and usage_daily are derived from a
landed batch of usage_raw rows, and the one-off derivation of usage_daily for data that landed
before it existed.

The pipeline writer runs the per-batch statements (pipeline/writer.py explains the protocol);
the migration that created usage_daily runs `backfill_daily`; the benchmarks build their rollups
with the same text, so nothing here can drift from what production writes.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

from tracker import data_version

log = logging.getLogger(__name__)

# The idempotency key of a record in usage_key_index: a space never occurs in an identifier.
KEY_EXPR = "concat(gateway_id, ' ', record_id)"

KEYS_FROM_BATCH = f"""
INSERT INTO usage_key_index (key, occurred_at, batch_id)
SELECT {KEY_EXPR}, occurred_at, batch_id FROM usage_raw WHERE batch_id = {{b:UInt64}}
"""

# The measures both rollups take from raw rows, named as the rollups' columns.
_MEASURES_FROM_RAW = """
    count() AS records,
    sum(request_count) AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cost_reporting) AS cost_reporting,
    countIf(isNotNull(cost) AND cost_converted = 0) AS cost_unconverted,
    sum(ifNull(energy_wh, 0)) AS energy_wh"""

# Dimensions and measures of usage_hourly from raw rows.
HOURLY_FROM_BATCH = f"""
INSERT INTO usage_hourly
SELECT
    toStartOfHour(occurred_at) AS hour,
    agency_id, sector, channel, provider, model, region, tier, operator, facility_country,
    operation, status, registry_version,{_MEASURES_FROM_RAW},
    sum(ifNull(latency_ms, 0)) AS latency_ms_sum,
    countIf(isNotNull(latency_ms)) AS latency_count
FROM usage_raw
WHERE batch_id = {{b:UInt64}}
GROUP BY hour, agency_id, sector, channel, provider, model, region, tier, operator,
         facility_country, operation, status, registry_version
"""

# The daily rollup's measures, named as in usage_hourly so the headline reads either alike.
_DAILY_MEASURES = """
    records, requests, input_tokens, output_tokens, cost_reporting, cost_unconverted, energy_wh
"""
DAILY_DIMENSIONS = ("agency_id", "tier", "sector", "channel", "operation", "status")

DAILY_FROM_BATCH = f"""
INSERT INTO usage_daily (day, {", ".join(DAILY_DIMENSIONS)}, {_DAILY_MEASURES})
SELECT
    toDate(occurred_at, 'UTC') AS day, {", ".join(DAILY_DIMENSIONS)},{_MEASURES_FROM_RAW}
FROM usage_raw
WHERE batch_id = {{b:UInt64}}
GROUP BY day, {", ".join(DAILY_DIMENSIONS)}
"""

_DAILY_FROM_HOURLY = f"""
INSERT INTO usage_daily (day, {", ".join(DAILY_DIMENSIONS)}, {_DAILY_MEASURES})
SELECT
    toDate(hour, 'UTC') AS day, {", ".join(DAILY_DIMENSIONS)},
    sum(records), sum(requests), sum(input_tokens), sum(output_tokens), sum(cost_reporting),
    sum(cost_unconverted), sum(energy_wh)
FROM usage_hourly
WHERE toYYYYMM(hour) = {{m:UInt32}}
GROUP BY day, {", ".join(DAILY_DIMENSIONS)}
"""

LEDGER_COLUMNS = ["batch_id", "rows"]

# The keys step as it was before migration 0006 (usage_keys); used only by backfill_daily,
# which runs as migration 0005's data step, before the key index exists. 0006 then copies
# usage_keys into the index.
_KEYS_BEFORE_0006 = """
INSERT INTO usage_keys (gateway_id, record_id, occurred_at)
SELECT gateway_id, record_id, occurred_at FROM usage_raw WHERE batch_id = {b:UInt64}
"""


def unlanded(client: Client, since_batch: int = 0) -> list[tuple[int, int]]:
    """(batch_id, rows) of batches whose raw rows are in but whose landing never finished."""
    rows = client.query(
        "SELECT batch_id, count() FROM usage_raw WHERE batch_id >= {since:UInt64} "
        "AND batch_id NOT IN (SELECT batch_id FROM landed_batches "
        "WHERE batch_id >= {since:UInt64}) GROUP BY batch_id ORDER BY batch_id",
        parameters={"since": since_batch},
    ).result_rows
    return [(int(b), int(n)) for b, n in rows]


def backfill_daily(client: Client) -> int:
    """Derive usage_daily from usage_hourly for everything landed so far; returns the months.

    Runs while migration 0005 is applied, before any writer of this release starts (the deploy
    runs `tracker migrate` as a one-off job first; the embedded default migrates before it
    serves). It starts from an empty table, so an interrupted run is simply repeated. Batches
    interrupted before the upgrade are finished first, the old way (keys, hourly, ledger), so the
    hourly rollup this reads holds each of them exactly once and no later repair adds it again.
    """
    for batch, rows in unlanded(client):
        log.warning("completing interrupted batch %s (%s rows) before the backfill", batch, rows)
        params = {"b": batch}
        client.command(_KEYS_BEFORE_0006, parameters=params,
                       settings={"insert_deduplication_token": f"keys-{batch}"})  # fmt: skip
        client.command(HOURLY_FROM_BATCH, parameters=params,
                       settings={"insert_deduplication_token": f"hourly-{batch}"})  # fmt: skip
        client.insert("landed_batches", [[batch, rows]], column_names=LEDGER_COLUMNS)
    client.command("TRUNCATE TABLE IF EXISTS usage_daily")
    months = [int(m) for (m,) in client.query(
        "SELECT DISTINCT toYYYYMM(hour) AS m FROM usage_hourly ORDER BY m"
    ).result_rows]  # fmt: skip
    for month in months:  # a month at a time bounds the GROUP BY's memory on a large history
        # Not deduplicated by block hash: a repeated run after a TRUNCATE must insert again.
        client.command(
            _DAILY_FROM_HOURLY, parameters={"m": month}, settings={"insert_deduplicate": 0}
        )
    data_version.bump()
    if months:
        log.info("usage_daily derived from usage_hourly for %d months", len(months))
    return len(months)


def copy_keys(client: Client) -> None:
    """Migration 0006's data step: keys landed before the key index existed, copied from
    usage_keys. An upsert, so an interrupted run is simply repeated."""
    client.command(
        f"INSERT INTO usage_key_index (key, occurred_at, batch_id) "
        f"SELECT {KEY_EXPR}, occurred_at, 0 FROM usage_keys"
    )
