"""Migrations and idempotent landing on chdb."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord, parse_record
from tracker.migrate import MigrationError, available, migrate
from tracker.registry import load

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
    raw = pool.query_rows("SELECT count(), sum(request_count) FROM usage_raw")[0]
    rollup = pool.query_rows("SELECT sum(records), sum(requests) FROM usage_hourly")[0]
    return int(raw[0]), int(raw[1]), int(rollup[0]), int(rollup[1])


def test_migrate_twice_is_a_no_op(pool: ClientPool) -> None:
    assert migrate(pool.get()) == []
    recorded = pool.query_rows("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in recorded] == [m.version for m in available()]


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


def test_failure_between_steps_is_finished_by_the_retry(pool: ClientPool) -> None:
    """The rollup table is unavailable after the raw rows and keys went in: the write fails;
    the consumer's retry of the same rows must finish that batch, not skip its records."""
    client = pool.get()
    processor = Processor(Classifier(load()[0]))
    writer = Writer(client)
    before = totals(pool)
    records = [make(i, gateway="gw-midway") for i in range(40)]
    rows = processor.process_records(records).rows
    requests = sum(r.request_count for r in records)
    client.command("DETACH TABLE usage_hourly")
    try:
        with pytest.raises(Exception, match="usage_hourly"):
            writer.write(rows)
    finally:
        client.command("ATTACH TABLE usage_hourly")
    assert totals(pool)[:2] == (before[0] + 40, before[1] + requests)  # raw in, rollup not
    retried = writer.write(rows)
    assert (retried.inserted, retried.duplicates) == (0, 40)
    assert totals(pool) == (
        before[0] + 40,
        before[1] + requests,
        before[2] + 40,
        before[3] + requests,
    )
