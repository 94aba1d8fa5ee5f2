"""Migrations and idempotent landing on chdb."""

from __future__ import annotations

import gc
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from typer.testing import CliRunner

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker.classify import Classifier
from tracker.cli import app as cli_app
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord, parse_record
from tracker.migrate import MigrationError, available, migrate
from tracker.registry import load
from tracker.settings import CommonSettings

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


START = datetime(2026, 5, 1, tzinfo=UTC)


def make(i: int, gateway: str = "gw") -> UsageRecord:
    return parse_record(
        {
            "record_id": f"r{i}", "agency_id": "in-cbse", "provider": "sarvam", "model": "m",
            "occurred_at": (START + timedelta(minutes=i)).isoformat(), "request_count": 1 + i % 5,
            "input_tokens": 100 + i, "output_tokens": i,
        },
        gateway_id=gateway,
    )  # fmt: skip


def totals(pool: ClientPool) -> tuple[int, int, int, int]:
    """(raw records, raw requests, rollup records, rollup requests); the two rollups must agree
    at every point a test looks, since each step is part of one batch's landing."""
    raw = pool.query_rows("SELECT count(), sum(request_count) FROM usage_raw")[0]
    rollup = pool.query_rows("SELECT sum(records), sum(requests) FROM usage_hourly")[0]
    daily = pool.query_rows("SELECT sum(records), sum(requests) FROM usage_daily")[0]
    assert (int(daily[0]), int(daily[1])) == (int(rollup[0]), int(rollup[1]))
    return int(raw[0]), int(raw[1]), int(rollup[0]), int(rollup[1])


def fails_without(pool: ClientPool, table: str, land: Callable[[], object]) -> None:
    """`land` with `table` detached: it must fail, naming the table (a step after the raw
    insert, say); the table is back afterwards."""
    client = pool.get()
    client.command(f"DETACH TABLE {table}")
    try:
        with pytest.raises(Exception, match=table):
            land()
    finally:
        client.command(f"ATTACH TABLE {table}")


def test_migrate_twice_is_a_no_op(pool: ClientPool) -> None:
    assert migrate(pool.get()) == []
    recorded = pool.query_rows("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in recorded] == [m.version for m in available()]


def test_migrate_check_waits_on_pending_migrations(settings: CommonSettings) -> None:
    # What deploy/k8s's init containers loop on: 1 while the migrate Job has not applied the
    # schema, 0 once it has, and nothing applied by the check itself.
    database = f"migcheck_{uuid.uuid4().hex[:8]}"
    env = {"TRACKER_DATA_DIR": str(settings.data_dir), "TRACKER_CLICKHOUSE_DATABASE": database}
    runner = CliRunner()
    first = runner.invoke(cli_app, ["migrate", "--check"], env=env)
    assert first.exit_code == 1, first.output
    assert f"{len(available())} migration(s) pending" in first.output
    assert "pending 0001_init" in first.output
    again = runner.invoke(cli_app, ["migrate", "--check"], env=env)
    assert again.exit_code == 1  # the check applied nothing
    assert runner.invoke(cli_app, ["migrate"], env=env).exit_code == 0
    done = runner.invoke(cli_app, ["migrate", "--check"], env=env)
    assert done.exit_code == 0 and "0 migration(s) pending" in done.output, done.output
    ClientPool(settings, database=database).get().command(f"DROP DATABASE `{database}`")


def test_edited_migration_is_refused(pool: ClientPool) -> None:
    client = pool.get()
    client.command("ALTER TABLE schema_migrations UPDATE checksum = 'edited' WHERE version = 1 "
                   "SETTINGS mutations_sync = 2")  # fmt: skip
    try:
        with pytest.raises(MigrationError, match="frozen"):
            migrate(client)
    finally:
        client.command(
            "ALTER TABLE schema_migrations UPDATE checksum = {c:String} WHERE version = 1 "
            "SETTINGS mutations_sync = 2",
            parameters={"c": available()[0].checksum},
        )


def test_record_counts_once_in_raw_and_rollup(pool: ClientPool) -> None:
    processor = Processor(Classifier(load()[0]))
    writer = Writer(pool.get())
    records = [make(i) for i in range(1000)]
    rows = processor.process_records(records).rows
    expected_requests = sum(r.request_count for r in records)

    first = writer.write(rows)
    assert (first.inserted, first.duplicates) == (1000, 0)
    # The same batch replayed (redelivery after a crash before the commit).
    assert writer.write(rows).inserted == 0
    # 10% resent inside a different batch, mixed with new records, and duplicated in-batch.
    resent = rows[::10]
    fresh = processor.process_records([make(i) for i in range(1000, 1100)]).rows
    mixed = writer.write(resent + fresh + fresh[:5])
    assert (mixed.inserted, mixed.duplicates) == (100, 105)
    # The same record_id from another gateway is another record.
    other = writer.write(processor.process_records([make(0, gateway="gw2")]).rows)
    assert other.inserted == 1

    extra = (
        sum(r.request_count for r in [make(i) for i in range(1000, 1100)]) + make(0).request_count
    )
    assert totals(pool) == (1101, expected_requests + extra, 1101, expected_requests + extra)


def test_a_landed_batch_leaves_its_rows_to_reference_counting(pool: ClientPool) -> None:
    """clickhouse-connect's insert context holds the rows it was given and sits in a reference
    cycle: the rows lived on until the next cyclic collection, which had to scan them all
    first (a batch's memory held twice; the pipeline's young collections ~20% of its CPU)."""
    processor = Processor(Classifier(load()[0]))
    writer = Writer(pool.get())
    # A gateway of its own: the store is shared with this module's other tests.
    writer.write(processor.process_records([make(i, "gw-refs") for i in range(10)]).rows)
    rows = processor.process_records([make(i, "gw-refs") for i in range(100, 5_100)]).rows
    gc.collect()
    gc.disable()
    try:
        assert writer.write(rows).inserted == 5_000
        del rows
        left = gc.collect()
    finally:
        gc.enable()
    assert left < 1_000, f"{left} objects freed only by the cyclic collector"


def test_of_a_key_repeated_inside_one_batch_the_first_lands(pool: ClientPool) -> None:
    processor = Processor(Classifier(load()[0]))
    first, second = make(5000), make(5000).model_copy(update={"input_tokens": 7})
    rows = processor.process_records([make(5001), first, make(5002), second, first]).rows
    result = Writer(pool.get()).write(rows)
    assert (result.inserted, result.duplicates) == (3, 2)
    landed = pool.query_rows(
        "SELECT input_tokens FROM usage_raw WHERE record_id = 'r5000' AND gateway_id = 'gw'"
    )
    assert landed == [(first.input_tokens,)]


def test_interrupted_batch_is_completed_by_repair(pool: ClientPool) -> None:
    """A crash after the raw insert, before keys/rollup/ledger: repair finishes the batch, and
    redelivery of the same records afterwards counts nothing twice."""
    from pipeline.writer import RAW_COLUMNS, new_batch_id

    client = pool.get()
    processor = Processor(Classifier(load()[0]))
    writer = Writer(client)
    before = totals(pool)
    records = [make(i, gateway="gw-crash") for i in range(50)]
    rows = processor.process_records(records).rows
    batch = new_batch_id()
    client.insert("usage_raw", [(*r, batch) for r in rows], column_names=RAW_COLUMNS)
    requests = sum(r.request_count for r in records)
    raw_only = totals(pool)
    assert raw_only[:2] == (before[0] + 50, before[1] + requests)
    assert raw_only[2:] == before[2:]  # not rolled up yet: the state a crash leaves

    assert writer.repair() == 1
    assert writer.repair() == 0
    after = totals(pool)
    assert after == (before[0] + 50, before[1] + requests, before[2] + 50, before[3] + requests)
    assert writer.write(rows).inserted == 0  # redelivery after the restart
    assert totals(pool) == after


def test_a_batch_spanning_every_month_since_the_earliest_lands(pool: ClientPool) -> None:
    """A backfill batch with one record in each of 130 months (the engine refuses more than 100
    partitions per insert block by default): it lands whole, counted once in every month of the
    raw table and both rollups, instead of failing on every retry."""
    from tracker.contract import EARLIEST

    processor = Processor(Classifier(load()[0]))
    writer = Writer(pool.get())
    records = [
        parse_record(
            {"record_id": f"span{i}", "agency_id": "in-cbse", "provider": "sarvam", "model": "m",
             "occurred_at": datetime(EARLIEST.year + i // 12, i % 12 + 1, 15, tzinfo=UTC)
             .isoformat()},
            gateway_id="gw-span",
        )
        for i in range(130)
    ]  # fmt: skip
    assert writer.write(processor.process_records(records).rows).inserted == 130
    per_month = {}
    for table, time, measure in (
        ("usage_raw", "occurred_at", "count()"),
        ("usage_hourly", "hour", "sum(records)"),
        ("usage_daily", "day", "sum(records)"),
    ):
        per_month[table] = pool.query_rows(
            f"SELECT toYYYYMM({time}) AS m, {measure} FROM {table} "
            f"WHERE toYYYYMM({time}) < 202511 GROUP BY m ORDER BY m"
        )
    assert len(per_month["usage_raw"]) == 130
    assert {int(n) for _, n in per_month["usage_raw"]} == {1}
    assert per_month["usage_hourly"] == per_month["usage_raw"]
    assert per_month["usage_daily"] == per_month["usage_raw"]


def test_a_batch_repaired_half_way_through_its_raw_insert_is_finished_later(
    pool: ClientPool,
) -> None:
    """Another member's repair meets a live batch while its raw insert is half-way (its months
    become visible one part at a time) and ledgers that half; the owner then writes the rest
    of the raw rows and dies. The next repair must finish the rest, or those records would sit
    in usage_raw with no key and no rollup, and land a second time when read again."""
    from pipeline.writer import RAW_COLUMNS, new_batch_id

    client = pool.get()
    processor = Processor(Classifier(load()[0]))
    writer = Writer(client)
    before = totals(pool)
    start = datetime(2024, 1, 1, tzinfo=UTC)  # months no other test of this module writes to
    records = [
        parse_record(
            {"record_id": f"half{i}", "agency_id": "in-cbse", "provider": "sarvam", "model": "m",
             "occurred_at": (start + timedelta(days=i)).isoformat(), "request_count": 2},
            gateway_id="gw-half",
        )
        for i in range(90)  # January to March
    ]  # fmt: skip
    rows = processor.process_records(records).rows
    batch = new_batch_id()
    client.insert("usage_raw", [(*r, batch) for r in rows[:60]], column_names=RAW_COLUMNS)
    assert writer.repair() == 1  # the other member: January and February only
    client.insert("usage_raw", [(*r, batch) for r in rows[60:]], column_names=RAW_COLUMNS)
    assert writer.repair() == 1  # the owner died before its steps: March is finished here
    assert writer.repair() == 0
    after = totals(pool)
    assert after == (before[0] + 90, before[1] + 180, before[2] + 90, before[3] + 180)
    again = writer.write(rows)  # read again after the owner's death
    assert (again.inserted, again.duplicates) == (0, 90)
    assert totals(pool) == after


@pytest.mark.parametrize("missing", ["usage_hourly", "usage_daily"])
def test_failure_between_steps_is_finished_by_the_retry(pool: ClientPool, missing: str) -> None:
    """A rollup table is unavailable after the raw rows and keys (and, for the daily one, the
    hourly rollup) went in: the write fails; the consumer's retry of the same rows must finish
    that batch, not skip its records nor count the finished steps twice."""
    client = pool.get()
    processor = Processor(Classifier(load()[0]))
    writer = Writer(client)
    before = totals(pool)
    records = [make(i, gateway=f"gw-midway-{missing}") for i in range(40)]
    rows = processor.process_records(records).rows
    requests = sum(r.request_count for r in records)
    fails_without(pool, missing, lambda: writer.write(rows))
    raw = pool.query_rows("SELECT count(), sum(request_count) FROM usage_raw")[0]
    assert (int(raw[0]), int(raw[1])) == (before[0] + 40, before[1] + requests)  # raw in
    retried = writer.write(rows)
    assert (retried.inserted, retried.duplicates) == (0, 40)
    assert totals(pool) == (
        before[0] + 40,
        before[1] + requests,
        before[2] + 40,
        before[3] + requests,
    )


@pytest.mark.parametrize("missing", ["usage_daily", "landed_batches"])
def test_a_landing_failing_after_a_rollup_step_makes_cached_answers_stale(
    pool: ClientPool, missing: str
) -> None:
    """Found in review: the exact public cache (api/cache.py) is emptied when data_version
    moves, which happened only after the ledger row; a landing failing after the hourly rollup
    went in (daily rollup or ledger unavailable) left the public answer short of it."""
    from tracker import data_version

    writer = Writer(pool.get())
    rows = (
        Processor(Classifier(load()[0]))
        .process_records([make(i, gateway=f"gw-stale-{missing}") for i in range(12)])
        .rows
    )
    before = data_version.current()
    fails_without(pool, missing, lambda: writer.write(rows))
    assert data_version.current() > before
    again = writer.write(rows)  # the retry finishes the batch
    assert (again.inserted, again.duplicates) == (0, 12)


def test_daily_backfill_derives_history_and_finishes_interrupted_batches(
    pool: ClientPool,
) -> None:
    """Migration 0005's data step on a store that predates usage_daily: the daily rollup is
    derived from usage_hourly, an interrupted pre-upgrade batch is finished first (counted once
    in both rollups, and not again by a later repair), and repeating the step changes nothing."""
    from pipeline.writer import RAW_COLUMNS, new_batch_id
    from tracker.rollups import backfill_daily

    client = pool.get()
    processor = Processor(Classifier(load()[0]))
    writer = Writer(client)
    writer.write(processor.process_records([make(i, gateway="gw-old") for i in range(300)]).rows)
    # A batch that crashed after its raw insert, before the upgrade.
    crashed = [make(i, gateway="gw-old-crash") for i in range(25)]
    batch = new_batch_id()
    rows = processor.process_records(crashed).rows
    client.insert("usage_raw", [(*r, batch) for r in rows], column_names=RAW_COLUMNS)
    client.command("TRUNCATE TABLE usage_daily")  # the state before migration 0005

    assert backfill_daily(client) >= 1
    after = totals(pool)  # asserts daily == hourly
    assert after[0] == after[2]
    assert backfill_daily(client) >= 1  # repeated (an interrupted migration): same result
    assert totals(pool) == after
    assert writer.repair() == 0  # the crashed batch was finished by the backfill
    assert totals(pool) == after
    by_day = pool.query_rows("SELECT day, sum(records) FROM usage_daily GROUP BY day ORDER BY day")
    from_raw = pool.query_rows(
        "SELECT toDate(occurred_at, 'UTC') AS d, count() FROM usage_raw GROUP BY d ORDER BY d"
    )
    assert [(d, int(n)) for d, n in by_day] == [(d, int(n)) for d, n in from_raw]


def test_keys_landed_before_the_key_index_still_count_as_landed(pool: ClientPool) -> None:
    """Migration 0006's data step: keys in the old usage_keys table are copied into the index,
    so a record landed before the upgrade and redelivered after it is still a duplicate."""
    from tracker.rollups import copy_keys

    client = pool.get()
    old = make(7, gateway="gw-pre-0006")
    client.insert(
        "usage_keys",
        [[old.gateway_id, old.record_id, old.occurred_at]],
        column_names=["gateway_id", "record_id", "occurred_at"],
    )
    copy_keys(client)
    copy_keys(client)  # repeated (an interrupted migration): an upsert, nothing doubles
    hits = pool.query_rows(
        "SELECT count() FROM usage_key_index WHERE key = {k:String}",
        {"k": f"{old.gateway_id} {old.record_id}"},
    )
    assert hits[0][0] == 1
    rows = Processor(Classifier(load()[0])).process_records([old]).rows
    assert Writer(client).write(rows).duplicates == 1


def test_upgrade_from_a_store_before_the_daily_rollup_and_key_index(
    settings: CommonSettings, pool: ClientPool
) -> None:
    """A store at migration 0004 with landed batches (landed the old way: raw, usage_keys,
    hourly, ledger) and one batch interrupted after its raw insert: migrating to the latest
    finishes that batch, derives usage_daily, copies the keys into the index, and afterwards
    every figure agrees and a redelivered old record is a duplicate."""
    import uuid

    from pipeline.writer import RAW_COLUMNS, new_batch_id
    from tracker.migrate import applied
    from tracker.rollups import _KEYS_BEFORE_0006, HOURLY_BEFORE_0009

    database = f"t_upgrade_{uuid.uuid4().hex[:8]}"
    client = pool.get()
    client.command(f"CREATE DATABASE `{database}`")
    try:
        old = ClientPool(settings.model_copy(update={"clickhouse_database": database}))
        c = old.get()
        applied(c)  # the ledger table
        for m in available()[:4]:
            for statement in m.statements():
                c.command(statement)
            c.insert("schema_migrations", [[m.version, m.name, m.checksum]],
                     column_names=["version", "name", "checksum"])  # fmt: skip
        processor = Processor(Classifier(load()[0]))
        records = [make(i, gateway="gw-up") for i in range(120)]
        rows = processor.process_records(records).rows
        for part, landed in ((rows[:100], True), (rows[100:], False)):
            batch = new_batch_id()
            c.insert("usage_raw", [(*r, batch) for r in part], column_names=RAW_COLUMNS)
            if landed:
                c.command(_KEYS_BEFORE_0006, parameters={"b": batch})
                c.command(HOURLY_BEFORE_0009, parameters={"b": batch})
                c.insert("landed_batches", [[batch, len(part)]], column_names=["batch_id", "rows"])

        assert [m.version for m in migrate(c)] == [m.version for m in available()[4:]]
        requests = sum(r.request_count for r in records)
        assert totals(old) == (120, requests, 120, requests)  # daily == hourly == raw
        assert c.query("SELECT count() FROM usage_key_index").result_rows[0][0] == 120
        # 0009: every hourly row carries its reported requests, the crashed batch's too.
        measured = c.query("SELECT sum(measured_records) FROM usage_hourly").result_rows[0][0]
        assert measured == 120
        writer = Writer(c)
        assert writer.repair() == 0
        again = writer.write(processor.process_records(records[::7]).rows)
        assert (again.inserted, again.duplicates) == (0, len(records[::7]))
        assert totals(old) == (120, requests, 120, requests)
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")


def test_every_client_opens_with_the_options_its_engine_has(
    pool: ClientPool, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A client per thread: a fresh thread opens a fresh one.
    opened: list[object] = []
    with caplog.at_level("WARNING", logger="clickhouse_connect"):
        worker = threading.Thread(target=lambda: opened.append(pool.get()))
        worker.start()
        worker.join()
    assert opened and opened[0] is not pool.get()
    assert not [r for r in caplog.records if "Ignoring arguments" in r.getMessage()]
    # Over HTTP, Native data goes through the compiled codec (clickhouse-connect-core).
    transform = type(getattr(opened[0], "_transform", None)).__name__
    assert (transform == "_RustNativeTransform") == (store == "server"), transform


def test_refusals_of_one_original_in_several_copies_are_each_recorded_once(
    pool: ClientPool,
) -> None:
    # Found in review: a replay cuts the refused records of one message of another topic into
    # copies by shard, each may land in its own batch, and the check "any row of this message
    # means all of it is in" dropped every copy after the first.
    from pipeline.processor import Rejection

    writer = Writer(pool.get())
    source = ("backup-" + uuid.uuid4().hex[:6], 0, 7)

    def refusal(index: int, field: str = "input_tokens") -> Rejection:
        return Rejection(index, "gw", field, "must be >= 0", "{}")

    writer.write_rejections({source: [refusal(0), refusal(0, "model"), refusal(2)]})
    writer.write_rejections({source: [refusal(1), refusal(3)]})  # the next copy, another batch
    writer.write_rejections({source: [refusal(0), refusal(0, "model"), refusal(2)]})  # again
    rows = pool.query_rows(
        "SELECT record_index, field FROM usage_rejects WHERE source_topic = {t:String} "
        "ORDER BY record_index, field",
        parameters={"t": source[0]},
    )
    assert [tuple(r) for r in rows] == [
        (0, "input_tokens"), (0, "model"), (1, "input_tokens"), (2, "input_tokens"),
        (3, "input_tokens"),
    ]  # fmt: skip


@pytest.mark.parametrize("missing", ["usage_hourly", "usage_daily"])
def test_the_embedded_sinks_retry_finishes_the_batch_a_failed_delivery_left(
    pool: ClientPool, missing: str
) -> None:
    """Found in review: the embedded default landed each HTTP request with a writer of its own,
    so the batch a failed request left half-landed was forgotten with it; the gateway's retry
    of the same records then landed them again (the key step failed: counted twice for good
    after the next start's repair) or called them duplicates (a rollup step failed: missing
    from the rollups until a restart)."""
    from tracker.cli.wiring import DirectSink

    sink = DirectSink(pool, Processor(Classifier(load()[0])))
    before = totals(pool)
    records = [make(i, gateway=f"gw-sink-{missing}") for i in range(30)]
    requests = sum(r.request_count for r in records)
    fails_without(pool, missing, lambda: sink.deliver(records))
    sink.deliver(records)  # the gateway's retry, after a 5xx
    expected = (before[0] + 30, before[1] + requests, before[2] + 30, before[3] + requests)
    assert totals(pool) == expected
    assert Writer(pool.get()).repair() == 0  # nothing left for the next start
    assert totals(pool) == expected


def test_many_interrupted_batches_in_one_month_are_each_decided(
    pool: ClientPool, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review: with 8 interrupted batches in one month each waited 10 s and was left
    undecided ("could not tell"), a lost rollup part with it: the repair can now tell among
    up to 10 others in flight (rollups._MAX_IN_FLIGHT)."""
    from pipeline.writer import RAW_COLUMNS, new_batch_id

    client = pool.get()
    processor = Processor(Classifier(load()[0]))
    before = totals(pool)
    for b in range(8):  # raw rows only: eight crashes after the raw insert, one month
        rows = processor.process_records(
            [make(b * 10 + i, gateway="gw-many") for i in range(5)]
        ).rows
        batch = new_batch_id()
        client.insert("usage_raw", [(*r, batch) for r in rows], column_names=RAW_COLUMNS)
    with caplog.at_level("ERROR", logger="tracker.rollups"):
        assert Writer(client).repair() == 8
    assert not [r for r in caplog.records if "could not tell" in r.getMessage()]
    after = totals(pool)
    assert (after[0] - before[0], after[2] - before[2]) == (40, 40)
    assert after[1] - before[1] == after[3] - before[3]


def test_a_repair_counts_the_batches_it_finished_as_landed(
    pool: ClientPool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a repair counted the batches it had already finished as others still in
    flight. With room to tell among 2 others, 4 interrupted batches in one month: the first
    sees 3 and cannot tell, but each later one sees only those not finished yet (all 4 were
    left undecided before)."""
    from pipeline.writer import RAW_COLUMNS, new_batch_id
    from tracker import rollups

    monkeypatch.setattr(rollups, "_MAX_IN_FLIGHT", 2)
    client = pool.get()
    processor = Processor(Classifier(load()[0]))
    batches = []
    for b in range(4):
        rows = processor.process_records(
            [make(b * 10 + i, gateway="gw-finished") for i in range(5)]
        ).rows
        batches.append(new_batch_id())
        client.insert("usage_raw", [(*r, batches[-1]) for r in rows], column_names=RAW_COLUMNS)
    with caplog.at_level("ERROR", logger="tracker.rollups"):
        assert Writer(client).repair() == 4
    undecided = [r.getMessage() for r in caplog.records if "could not tell" in r.getMessage()]
    assert len(undecided) == 2, undecided  # usage_hourly and usage_daily, of one batch
    assert all(f"batch {batches[0]}'s" in message for message in undecided), undecided


class _LateRawInsert:
    """A client whose first raw insert times out on the client's side while the server goes on
    with it: the insert is held and committed later, when the test says (`commit_late`)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._held: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self.timed_out = False

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        if table == "usage_raw" and not self.timed_out:
            self.timed_out = True
            self._held = ((table, *args), kwargs)
            raise OperationalError("HTTPConnectionPool: Read timed out. (read timeout=300)")
        return self._client.insert(table, *args, **kwargs)

    def commit_late(self) -> None:
        assert self._held is not None
        args, kwargs = self._held
        self._client.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize("late", ["before the retry", "after the retry"])
def test_a_raw_insert_committing_after_the_client_gave_up_counts_once(
    pool: ClientPool, late: str
) -> None:
    """Found in review: over HTTP, an insert the client gave up on (a read timeout) may still
    commit on the server. The retry found none of the batch's rows yet and landed the records
    under a new batch; the first insert's rows then came too, and the next repair finished
    that batch as well: every record counted twice, raw and rollups."""
    client = _LateRawInsert(pool.get())
    writer = Writer(cast(Client, client))
    before = totals(pool)
    records = [make(i, gateway=f"gw-late-{late[0]}") for i in range(0, 2000, 40)]  # 2 months
    rows = Processor(Classifier(load()[0])).process_records(records).rows
    requests = sum(r.request_count for r in records)
    with pytest.raises(OperationalError):
        writer.write(rows)
    if late == "before the retry":
        client.commit_late()
    retried = writer.write(rows)
    assert (retried.inserted, retried.duplicates) == (0, 50)
    if late == "after the retry":
        client.commit_late()
    assert Writer(pool.get()).repair() == 0
    expected = (before[0] + 50, before[1] + requests, before[2] + 50, before[3] + requests)
    assert totals(pool) == expected
