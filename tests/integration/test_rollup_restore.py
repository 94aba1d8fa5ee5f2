"""rollups.restore_batch on a real store, for the month it cannot explain: it must report the
month and change nothing (tests/integration/test_engine_crash.py covers the month it can)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import rollups
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import parse_record
from tracker.registry import load

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


JUNE = datetime(2023, 6, 1, tzinfo=UTC)


def month_totals(pool: ClientPool, table: str, time: str) -> tuple[int, int]:
    row = pool.query_rows(
        f"SELECT sum(records), sum(requests) FROM {table} WHERE toYYYYMM({time}) = 202306"
    )[0]
    return int(row[0] or 0), int(row[1] or 0)


def test_a_month_no_combination_explains_is_reported_and_left_alone(
    pool: ClientPool, caplog: pytest.LogCaptureFixture
) -> None:
    client = pool.get()
    records = [
        parse_record(
            {"record_id": f"june{i}", "agency_id": "in-cbse", "provider": "sarvam", "model": "m",
             "occurred_at": (JUNE + timedelta(hours=i)).isoformat(), "request_count": 3},
            gateway_id="gw-restore",
        )
        for i in range(48)  # two days, 48 hourly rows
    ]  # fmt: skip
    landed = Writer(client).write(Processor(Classifier(load()[0])).process_records(records).rows)
    assert landed.inserted == 48
    (batch,) = [int(b) for (b,) in pool.query_rows("SELECT DISTINCT batch_id FROM usage_raw")]
    assert month_totals(pool, "usage_hourly", "hour") == (48, 144)
    # A rollup row nobody's batch accounts for (written by hand, say): June's hourly total is
    # now the batch plus one of its hours, which neither "batch present" nor "batch absent"
    # explains.
    client.command(
        "INSERT INTO usage_hourly SELECT * FROM usage_hourly WHERE toYYYYMM(hour) = 202306 "
        "ORDER BY hour LIMIT 1",
        settings={"insert_deduplicate": 0},
    )
    hourly = month_totals(pool, "usage_hourly", "hour")
    daily = month_totals(pool, "usage_daily", "day")
    assert (hourly, daily) == ((49, 147), (48, 144))

    with caplog.at_level(logging.WARNING, logger="tracker.rollups"):
        rollups.restore_batch(client, batch, repairing=[batch], attempts=3, pause_seconds=0.0)

    reported = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(reported) == 1, reported
    assert f"usage_hourly holds batch {batch}'s rows of 202306 after 3 reads" in reported[0]
    # Nothing re-inserted, into the unexplained table or the explained one.
    assert not [r for r in caplog.records if "inserting them again" in r.getMessage()]
    assert month_totals(pool, "usage_hourly", "hour") == hourly
    assert month_totals(pool, "usage_daily", "day") == daily
