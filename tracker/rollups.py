"""The rollups' one definition: how usage_key_index, usage_hourly and usage_daily are derived from a
landed batch of usage_raw rows, the landing's steps after the raw insert and their repair, and
the one-off derivations for data that landed before a rollup or a measure existed.

The pipeline writer runs the per-batch steps (pipeline/writer.py explains the protocol);
migration 0005 runs `backfill_daily`, 0009 `measure_after_0009`; the benchmarks build their
rollups with the same text, so nothing here can drift from what production writes.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

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

# Which raw rows a rollup statement reads: one batch (every landing), or one batch's rows of one
# month (restore_batch).
_ONE_BATCH = "batch_id = {b:UInt64}"
_ONE_BATCH_MONTH = f"{_ONE_BATCH} AND toYYYYMM(occurred_at) = {{m:UInt32}}"


# usage_hourly's dimensions, in its column order.
HOURLY_DIMENSIONS = (
    "hour", "agency_id", "sector", "channel", "provider", "model", "region", "tier", "operator",
    "facility_country", "operation", "status", "registry_version",
)  # fmt: skip
_HOURLY_KEY = ", ".join(HOURLY_DIMENSIONS)
_HOURLY_MEASURES = ("records, requests, input_tokens, output_tokens, cost_reporting, "
                    "cost_unconverted, energy_wh, latency_ms_sum, latency_count")  # fmt: skip

# The requests behind cost and energy per inference (migration 0009): requests of records with
# a cost converted to the reporting currency, and of records that reported energy; and
# measured_records, the records whose rows carry those two (all of them, once 0009's data step
# has measured what landed before it: tracker/rollups.measure_hourly).
# (usage_raw.energy_wh: the bare name is the summed measure's alias in the hourly step.)
_COST_REQUESTS = "sumIf(request_count, isNotNull(cost) AND cost_converted = 1)"
_ENERGY_REQUESTS = "sumIf(request_count, isNotNull(usage_raw.energy_wh))"
REPORTED_MEASURES = ("cost_requests", "energy_requests", "measured_records")


def _hourly_from(where: str, *, reported: bool = True) -> str:
    """Dimensions and measures of usage_hourly from the raw rows `where` selects; without the
    `reported` measures for a store before migration 0009 (0005's data step)."""
    columns = f"{_HOURLY_KEY}, {_HOURLY_MEASURES}"
    extra = ""
    if reported:
        columns += ", " + ", ".join(REPORTED_MEASURES)
        extra = (
            f",\n    {_COST_REQUESTS} AS cost_requests, {_ENERGY_REQUESTS} AS energy_requests,"
            "\n    count() AS measured_records"
        )
    return f"""
INSERT INTO usage_hourly ({columns})
SELECT
    toStartOfHour(occurred_at) AS hour, {", ".join(HOURLY_DIMENSIONS[1:])},{_MEASURES_FROM_RAW},
    sum(ifNull(latency_ms, 0)) AS latency_ms_sum,
    countIf(isNotNull(latency_ms)) AS latency_count{extra}
FROM usage_raw
WHERE {where}
GROUP BY {_HOURLY_KEY}
"""


HOURLY_FROM_BATCH = _hourly_from(_ONE_BATCH)
# The hourly step as it was before migration 0009; used only by backfill_daily (0005's data
# step, which runs before 0009's columns exist).
HOURLY_BEFORE_0009 = _hourly_from(_ONE_BATCH, reported=False)

# The daily rollup's measures, named as in usage_hourly so the headline reads either alike.
_DAILY_MEASURES = """
    records, requests, input_tokens, output_tokens, cost_reporting, cost_unconverted, energy_wh
"""
DAILY_DIMENSIONS = ("agency_id", "tier", "sector", "channel", "operation", "status")


def _daily_from(where: str) -> str:
    """usage_daily's rows from the raw rows `where` selects."""
    return f"""
INSERT INTO usage_daily (day, {", ".join(DAILY_DIMENSIONS)}, {_DAILY_MEASURES})
SELECT
    toDate(occurred_at, 'UTC') AS day, {", ".join(DAILY_DIMENSIONS)},{_MEASURES_FROM_RAW}
FROM usage_raw
WHERE {where}
GROUP BY day, {", ".join(DAILY_DIMENSIONS)}
"""


DAILY_FROM_BATCH = _daily_from(_ONE_BATCH)

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
    """(batch_id, rows) of batches whose raw rows are in but whose landing never finished.

    A batch counts as landed only when the ledger holds as many rows for it as usage_raw does:
    a member repairing a live member's batch can meet its raw insert half-way (one part per
    month, made visible one by one) and write the ledger for that half; should the owner then
    die before its own steps, the rest shows up here, not as landed."""
    rows = client.query(
        "SELECT r.batch_id, r.n FROM ("
        "  SELECT batch_id, count() AS n FROM usage_raw WHERE batch_id >= {since:UInt64} "
        "  GROUP BY batch_id) AS r "
        "LEFT JOIN ("
        "  SELECT batch_id, max(rows) AS m FROM landed_batches WHERE batch_id >= {since:UInt64} "
        "  GROUP BY batch_id) AS l ON r.batch_id = l.batch_id "
        # join_use_nulls is off: a batch without a ledger row reads m = 0
        "WHERE l.m < r.n ORDER BY r.batch_id",
        parameters={"since": since_batch},
        settings={"join_use_nulls": 0},
    ).result_rows
    return [(int(b), int(n)) for b, n in rows]


# A rollup's totals of one month, in the order of usage_raw's below.
_ROLLUP_TOTALS = """SELECT sum(records), sum(requests), sum(input_tokens) + sum(output_tokens),
    sum(cost_reporting) FROM {table} WHERE toYYYYMM({time}) = {{m:UInt32}}"""
_ROLLUP_TIME = {"usage_hourly": "hour", "usage_daily": "day"}

# (records, requests, tokens, cost): what a rollup month must agree with usage_raw on.
Totals = tuple[int, int, int, Decimal]


def _as_totals(n: object, requests: object, tokens: object, cost: object) -> Totals:
    return int(str(n or 0)), int(str(requests or 0)), int(str(tokens or 0)), Decimal(str(cost or 0))


def _plus(a: Totals, b: Totals) -> Totals:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]


def _totals(client: Client, sql: str, month: int, extra: dict[str, Any] | None = None) -> Totals:
    params = {"m": month, **(extra or {})}
    return _as_totals(*client.query(sql, parameters=params).result_rows[0])


# usage_raw's totals of one month, split by landing state.
# {p}: batches the ledger lists but that are being repaired all the same (unlanded(): their raw
# rows outnumber their ledger row), counted as unlanded.
_LANDED_TOTALS = """SELECT count(), sum(request_count), sum(input_tokens) + sum(output_tokens),
    sum(cost_reporting) FROM usage_raw WHERE toYYYYMM(occurred_at) = {m:UInt32}
    AND batch_id IN (SELECT batch_id FROM landed_batches)
    AND NOT has({p:Array(UInt64)}, batch_id)"""
_UNLANDED_BY_BATCH = """SELECT batch_id, count(), sum(request_count),
    sum(input_tokens) + sum(output_tokens), sum(cost_reporting) FROM usage_raw
    WHERE toYYYYMM(occurred_at) = {m:UInt32}
    AND (batch_id NOT IN (SELECT batch_id FROM landed_batches) OR has({p:Array(UInt64)}, batch_id))
    GROUP BY batch_id"""
# Other unlanded batches in a month: beyond this, wait (2^k combinations, ~10 ms at 10).
_MAX_IN_FLIGHT = 10


def restore_batch(
    client: Client,
    batch: int,
    *,
    repairing: Sequence[int] = (),
    attempts: int = 20,
    pause_seconds: float = 0.5,
) -> None:
    """After a batch's rollup steps were re-run under their tokens, find each month whose rows
    of this batch a rollup still lacks, and insert them; exact beside other members landing at
    the same time.

    Why: the engine records a token in its deduplication log *before* it makes the part it
    names visible (MergeTreeSink). A crash between the two leaves a token without its part, and
    the re-run is then dropped as a duplicate: the month would stay short for good (seen once
    in the kill -9 fault test: usage_hourly 34 records short; tests/integration/
    test_engine_crash.py builds that state).

    Per month M, in this order: L1 = usage_raw's totals of M over landed batches; the rollup's
    totals R; the unlanded batches of M with their totals (this one included); L2 as L1. Every
    landed batch is whole in the rollup and lands (ledger) only after its rollup steps, so if
    L1 == L2, R = L1 + the sum of some unlanded batches of M (those whose part is visible). When
    every combination that explains R agrees on whether this batch is in it, that is the answer;
    otherwise (or when L1 != L2) the month is read again. A re-insert carries its own token, so
    two members restoring the same batch at once insert it once, and is checked like the rest.
    `repairing`: the batches this repair finishes (this one among them), unlanded whatever the
    ledger says. The caller's ledger step, which follows, makes cached answers stale. Nothing
    else is changed: a month that no combination explains (raw rows dropped by hand, say) is
    only reported."""
    marked = {"p": sorted({batch, *repairing})}
    months = [int(m) for (m,) in client.query(
        "SELECT DISTINCT toYYYYMM(occurred_at) AS m FROM usage_raw WHERE batch_id = {b:UInt64} "
        "ORDER BY m", parameters={"b": batch},
    ).result_rows]  # fmt: skip
    for month in months:
        pending = dict(_ROLLUP_TIME)
        inserted: dict[str, int] = {}  # table -> re-inserts so far
        for attempt in range(attempts):
            if attempt:
                time.sleep(pause_seconds)
            before = _totals(client, _LANDED_TOTALS, month, marked)
            found = {
                t: _totals(client, _ROLLUP_TOTALS.format(table=t, time=c), month)
                for t, c in pending.items()
            }
            unlanded = {
                int(b): _as_totals(*rest)
                for b, *rest in client.query(
                    _UNLANDED_BY_BATCH, parameters={"m": month, **marked}
                ).result_rows
            }
            if _totals(client, _LANDED_TOTALS, month, marked) != before:
                continue  # a batch of M landed between the reads: read again
            mine = unlanded.pop(batch, None)  # listed whatever the ledger says (`marked`)
            if mine is None:
                pending.clear()  # its raw rows of M are gone (dropped by hand): nothing to do
                break
            if len(unlanded) > _MAX_IN_FLIGHT:
                continue
            for table in list(pending):
                verdicts = _explanations(before, mine, list(unlanded.values()), found[table])
                if verdicts == {True}:
                    del pending[table]
                elif verdicts == {False}:
                    # Checked again on the next read. Should this insert meet the same fate
                    # (a crash leaving its token without its part), the next one carries the
                    # next token; members restoring at once go through the same tokens.
                    inserted[table] = inserted.get(table, 0) + 1
                    _reinsert(client, table, batch, month, inserted[table])
            if not pending:
                break
        for table in pending:
            log.error(
                "could not tell whether %s holds batch %s's rows of %d after %d reads (other "
                "batches landing all the while?); left as the token re-run left it",
                table, batch, month, attempts,
            )  # fmt: skip


def _explanations(landed: Totals, mine: Totals, others: list[Totals], found: Totals) -> set[bool]:
    """Whether this batch is in the rollup, for every way of explaining `found` as `landed`
    plus some of the unlanded batches."""
    verdicts: set[bool] = set()
    for k in range(len(others) + 1):
        for subset in itertools.combinations(others, k):
            base = landed
            for t in subset:
                base = _plus(base, t)
            if base == found:
                verdicts.add(False)
            if _plus(base, mine) == found:
                verdicts.add(True)
    return verdicts


def _reinsert(client: Client, table: str, batch: int, month: int, generation: int) -> None:
    sql = (_hourly_from if table == "usage_hourly" else _daily_from)(_ONE_BATCH_MONTH)
    log.warning(
        "%s lacks batch %s's rows of %d (its token re-run was dropped); inserting them again",
        table, batch, month,
    )  # fmt: skip
    try:
        client.command(
            sql,
            parameters={"b": batch, "m": month},
            settings={
                "insert_deduplication_token": f"restore-{table}-{batch}-{month}-{generation}",
            },
        )
    finally:
        data_version.bump()  # as in run_steps


# A batch may span every month since the contract's EARLIEST (~140 of them by now, one part
# each): the engine's default cap of 100 partitions per insert block would refuse such a batch
# on every retry and stall its partition, so the cap is raised for a landing's inserts.
MAX_MONTHS_PER_INSERT = 1200
SPAN = {"max_partitions_per_insert_block": MAX_MONTHS_PER_INSERT}


def run_steps(client: Client, batch: int) -> None:
    """Steps 2-3 of a landing, for a batch whose raw rows are in; each deduplicated by its
    token, so a re-run adds nothing the first run wrote."""
    params = {"b": batch}
    try:
        for step, sql in (
            ("keys", KEYS_FROM_BATCH),
            ("hourly", HOURLY_FROM_BATCH),
            ("daily", DAILY_FROM_BATCH),
        ):
            client.command(
                sql,
                parameters=params,
                settings={**SPAN, "insert_deduplication_token": f"{step}-{batch}"},
            )
    finally:
        # Answers cached before these steps are stale once any of them committed, whether or
        # not the landing goes on (found in review: a ledger insert that failed after the
        # rollups left the public answer short until some later landing). One bump too many
        # costs one recomputation.
        data_version.bump()


def record_landed(client: Client, batch: int, count: int) -> None:
    """Step 4: the batch is landed, with as many rows as usage_raw holds for it. (Answers
    cached before the landing were made stale by the rollup steps, which changed them.)"""
    client.insert("landed_batches", [[batch, count]], column_names=LEDGER_COLUMNS)


def complete_again(client: Client, batch: int, count: int, repairing: Sequence[int]) -> None:
    """Steps 2-4 for a batch whose steps may have run before: the token re-runs, then any
    rollup month whose re-run the engine dropped restored, then the ledger."""
    run_steps(client, batch)
    restore_batch(client, batch, repairing=repairing)  # logs what it restores or cannot tell
    record_landed(client, batch, count)


def repair(client: Client, since_batch: int = 0) -> int:
    """Finish every interrupted batch from `since_batch` on; returns how many were completed.
    The caller keeps other landings of its process out meanwhile (pipeline.writer's lock)."""
    pending = unlanded(client, since_batch)
    for i, (batch, count) in enumerate(pending):
        log.warning("completing interrupted batch %s (%s rows)", batch, count)
        # The batches still to finish: those finished before this one are landed (rollups
        # checked, ledger written); counted as others in flight, they left every batch of a
        # month with more interrupted batches than the repair can tell among undecided, 10 s
        # each (found in review), not only the first.
        complete_again(client, batch, count, [b for b, _ in pending[i:]])
    return len(pending)


# Migration 0009's top-up of one day of usage_hourly: for each rollup row (summed to its full
# key) whose records are not all measured, the reported requests its unmeasured records hold,
# read from their raw rows. Exact beside live landings: the raw side reads only batches the
# ledger listed at {t0} (read before this statement), every one of which had its rollup steps
# done before its ledger row; a key is topped up only when the rollup holds exactly those
# batches' records, requests, tokens and cost for it (a batch whose rollup is in but not yet its
# ledger row, or a raw insert half-way, makes them differ: that key is left for a later run).
# The ledger is read for the batches of that day's raw rows only, so its set stays small.
_RAW_DAY = ("occurred_at >= {d:DateTime64(3, 'UTC')} "
            "AND occurred_at < {d:DateTime64(3, 'UTC')} + INTERVAL 1 DAY")  # fmt: skip
_MEASURE_DAY = f"""
INSERT INTO usage_hourly ({_HOURLY_KEY}, {", ".join(REPORTED_MEASURES)})
SELECT {", ".join(f"h.{c}" for c in HOURLY_DIMENSIONS)},
       r.r_cost_requests - h.h_cost_requests, r.r_energy_requests - h.h_energy_requests,
       h.h_records - h.h_measured
FROM (
    SELECT {_HOURLY_KEY}, sum(records) AS h_records, sum(requests) AS h_requests,
           sum(input_tokens) + sum(output_tokens) AS h_tokens, sum(cost_reporting) AS h_cost,
           sum(cost_requests) AS h_cost_requests, sum(energy_requests) AS h_energy_requests,
           sum(measured_records) AS h_measured
    FROM usage_hourly WHERE toDate(hour, 'UTC') = toDate({{d:DateTime64(3, 'UTC')}}, 'UTC')
    GROUP BY {_HOURLY_KEY}
    HAVING h_measured < h_records
) AS h
INNER JOIN (
    SELECT toDateTime(toStartOfHour(occurred_at), 'UTC') AS hour,
           {", ".join(HOURLY_DIMENSIONS[1:])},
           count() AS r_records, sum(request_count) AS r_requests,
           sum(input_tokens) + sum(output_tokens) AS r_tokens, sum(cost_reporting) AS r_cost,
           {_COST_REQUESTS} AS r_cost_requests, {_ENERGY_REQUESTS} AS r_energy_requests
    FROM usage_raw
    WHERE {_RAW_DAY} AND batch_id IN (
        SELECT batch_id FROM landed_batches WHERE landed_at <= {{t0:DateTime64(3, 'UTC')}}
        AND batch_id IN (SELECT DISTINCT batch_id FROM usage_raw WHERE {_RAW_DAY}))
    GROUP BY {_HOURLY_KEY}
) AS r USING ({_HOURLY_KEY})
WHERE h.h_records = r.r_records AND h.h_requests = r.r_requests AND h.h_tokens = r.r_tokens
  AND h.h_cost = r.r_cost AND r.r_cost_requests >= h.h_cost_requests
  AND r.r_energy_requests >= h.h_energy_requests
"""

# A top-up statement the engine has not finished by then is cancelled by the engine itself,
# before the client gives up waiting (clickhouse-connect: 300 s). One the client gave up on
# could still commit on a server after a re-run had read the same keys unmeasured, and both
# would top them up (found in review). A day is small enough to finish well within it.
MEASURE_MAX_SECONDS = 240


def _unmeasured(client: Client, bucket: str) -> list[tuple[Any, int]]:
    """(bucket, records) of the hourly rollup's records not measured yet, per `bucket` of
    `hour` (an expression written here, never a caller's)."""
    rows = client.query(
        f"SELECT {bucket} AS b, sum(records) - sum(measured_records) AS n "
        "FROM usage_hourly GROUP BY b HAVING n > 0 ORDER BY b"
    ).result_rows
    return [(b, int(n)) for b, n in rows]


def unmeasured_months(client: Client) -> list[tuple[int, int]]:
    """(YYYYMM, records) of the months whose hourly rollup holds records not yet measured."""
    return [(int(m), n) for m, n in _unmeasured(client, "toYYYYMM(hour)")]


class Measured(NamedTuple):
    measured: int  # records this run measured
    left: int  # records still not measured after it


def measure_hourly(client: Client) -> Measured:
    """Migration 0009's data step, after a repair: the reported requests of rows that landed
    before the rollup carried them, day by day.

    Safe beside landings (see _MEASURE_DAY) and to repeat one run after another: a measured
    key is not read again. Two runs at once could both top up a key, so, like 0005's backfill,
    it runs from the one-off `tracker migrate` (the deploy's order) or the embedded process."""
    days = [(datetime(d.year, d.month, d.day, tzinfo=UTC), n)
            for d, n in _unmeasured(client, "toDate(hour, 'UTC')")]  # fmt: skip
    before = sum(n for _, n in days)
    for i, (day, _) in enumerate(days, 1):
        t0 = client.query("SELECT now64(3, 'UTC')").result_rows[0][0]
        client.command(
            _MEASURE_DAY,
            parameters={"d": day, "t0": t0},
            # Not deduplicated by block hash: a later top-up may equal an earlier one by chance,
            # and a re-run after an error reads what committed (measured keys are not read).
            settings={"max_execution_time": MEASURE_MAX_SECONDS, "insert_deduplicate": 0},
        )
        if i % 30 == 0 or i == len(days):
            log.info("measured %d of %d days (up to %s)", i, len(days), f"{day:%Y-%m-%d}")
    left = sum(n for _, n in _unmeasured(client, "toYYYYMM(hour)")) if days else 0
    if left:
        log.warning("%d records of the hourly rollup are not measured (their rollup rows and raw "
                    "rows disagree: batches landing meanwhile, or a month the repair could not "
                    "decide); cost and energy per inference read them approximately; run "
                    "`tracker migrate --measure` again", left)  # fmt: skip
    data_version.bump()
    return Measured(before - left, left)


def measure_after_0009(client: Client) -> Measured:
    """Migration 0009's data step (and `tracker migrate --measure`): interrupted batches
    finished first (their rollup rows may be in without their ledger row, which would keep their
    keys from being measured), then the top-up."""
    repair(client)
    return measure_hourly(client)


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
        client.command(HOURLY_BEFORE_0009, parameters=params,
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
