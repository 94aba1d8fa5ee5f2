"""`tracker reclassify` when a month keeps receiving records (the run goes on, the month is
skipped and named), and the scratch tables of runs killed with kill -9 (dropped by a later run
once stale, never while a run may still be using them)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import reclassify, registry_store
from tracker.classify import Classifier
from tracker.cli import app
from tracker.clickhouse import ClientPool
from tracker.contract import parse_record
from tracker.registry import Registry, load
from tracker.settings import CommonSettings

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True

Invoke = Callable[..., Result]


@pytest.fixture(scope="module")
def registry(pool: ClientPool) -> Registry:
    india, text = load()
    registry_store.activate(pool.get(), india, text, author="t", reason="base", source="t")
    return india


@pytest.fixture(scope="module")
def invoke(settings: CommonSettings, store: str, request: pytest.FixtureRequest) -> Invoke:
    env = {
        "TRACKER_DATA_DIR": str(settings.data_dir),
        "TRACKER_CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }
    if store == "server":
        env["TRACKER_CLICKHOUSE_DSN"] = request.getfixturevalue("server_dsn")

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    return run


def land(pool: ClientPool, registry: Registry, month: date, n: int) -> None:
    """`n` records in `month`, one a day from its first."""
    records = [
        parse_record(
            {"record_id": f"r-{uuid.uuid4().hex}", "agency_id": "in-sbi", "provider": "mistral",
             "model": "m", "endpoint_host": "10.42.7.5", "request_count": 2,
             "occurred_at": datetime(month.year, month.month, 1 + i, 9, tzinfo=UTC).isoformat()},
            gateway_id="gw",
        )
        for i in range(n)
    ]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(registry)).process_records(records).rows)


def keep_landing(
    monkeypatch: pytest.MonkeyPatch, pool: ClientPool, registry: Registry, month: date
) -> list[date]:
    """From now on, a record lands in `month` right after each swap of its route rollup
    partition (REPLACE or DROP PARTITION), before the run compares counts: as under landing
    heavy enough that the month never settles. Real records, landed by the writer, on the real
    engine; returns the list of landings so far."""
    cls = type(pool.get())
    real = cls.command
    partition = re.compile(rf"\bPARTITION {month.year * 100 + month.month}\b")
    landed: list[date] = []

    def command(self: Any, cmd: str, *args: Any, **kwargs: Any) -> Any:
        out = real(self, cmd, *args, **kwargs)
        if isinstance(cmd, str) and partition.search(cmd) and "usage_hourly_routes" in cmd:
            landed.append(month)
            land(pool, registry, month, 1)
        return out

    monkeypatch.setattr(cls, "command", command)
    return landed


def runs_by_month(pool: ClientPool, first: date, last: date) -> dict[date, tuple[int, int]]:
    """Per month of reclassify_runs in [first, last]: (rows, raw_records of the latest)."""
    rows = pool.query_rows(
        "SELECT month, count(), argMax(raw_records, finished_at) FROM reclassify_runs "
        "WHERE month BETWEEN {a:Date} AND {b:Date} GROUP BY month ORDER BY month",
        {"a": first, "b": last},
    )
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def stages(pool: ClientPool) -> set[str]:
    rows = pool.query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND startsWith(name, 'usage_hourly_routes_stage_')"
    )
    return {str(r[0]) for r in rows}


def test_a_month_that_never_settles_is_skipped_and_the_later_months_are_done(
    pool: ClientPool, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    jul, aug, sep = date(2025, 7, 1), date(2025, 8, 1), date(2025, 9, 1)
    for m, n in ((jul, 5), (aug, 6), (sep, 7)):
        land(pool, registry, m, n)
    landed = keep_landing(monkeypatch, pool, registry, aug)
    seen: list[reclassify.MonthResult] = []
    with pytest.raises(reclassify.ReclassifyError) as info:
        reclassify.run(pool.get(), registry, datetime(2025, 7, 1, tzinfo=UTC),
                       datetime(2025, 10, 1, tzinfo=UTC), author="t",
                       progress=seen.append)  # fmt: skip
    # July and September are done and recorded; August (3 attempts, a record landed after each
    # swap) records nothing.
    assert runs_by_month(pool, jul, sep) == {jul: (1, 5), sep: (1, 7)}
    assert [r.month for r in seen] == [jul, sep]
    assert len(landed) == 3
    assert reclassify.covered_months(pool.get(), datetime(2025, 7, 1, tzinfo=UTC),
                                     datetime(2025, 10, 1, tzinfo=UTC)) == [202507, 202509]  # fmt: skip
    exc = info.value
    assert isinstance(exc, reclassify.MonthsSkipped)
    assert exc.done == seen
    assert [s.month for s in exc.skipped] == [aug]
    assert "after 3 attempts" in exc.skipped[0].reason and "2025-08" in str(exc)
    assert stages(pool) == set()  # every attempt dropped its own scratch table
    # Once landing calms down, the month is done by running again for it.
    monkeypatch.undo()
    again = reclassify.run(pool.get(), registry, datetime(2025, 8, 1, tzinfo=UTC),
                           datetime(2025, 9, 1, tzinfo=UTC), author="t")  # fmt: skip
    assert [(r.month, r.raw_records, r.attempts) for r in again] == [(aug, 9, 1)]


def test_reclassify_command_names_the_skipped_month_and_exits_2(
    pool: ClientPool, registry: Registry, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    oct_, nov, dec = date(2025, 10, 1), date(2025, 11, 1), date(2025, 12, 1)
    for m, n in ((oct_, 3), (nov, 4), (dec, 5)):
        land(pool, registry, m, n)
    stale = f"usage_hourly_routes_stage_{server_now(pool) - 7 * 3600}_{uuid.uuid4().hex[:8]}"
    pool.get().command(f"CREATE TABLE `{stale}` AS usage_hourly_routes")
    keep_landing(monkeypatch, pool, registry, nov)
    result = invoke("reclassify", "--from", "2025-10", "--to", "2026-01")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    # The months done are in the table and in reclassify_runs; November is not.
    assert "2025-10" in result.stdout and "2025-12" in result.stdout, result.output
    assert "2025-11" not in result.stdout
    assert runs_by_month(pool, oct_, dec) == {oct_: (1, 3), dec: (1, 5)}
    assert "tracker: 1 of 3 month(s) skipped, nothing recorded for them: 2025-11;" in (
        result.stderr
    ), result.stderr
    assert "tracker: 2025-11: route rollup still differs from usage_raw after 3 attempts" in (
        result.stderr
    )
    assert "tracker reclassify --from 2025-11 --to 2025-12" in result.stderr
    assert f"dropped 1 scratch table(s) left by interrupted runs: {stale}" in result.stdout
    assert stages(pool) == set()
    monkeypatch.undo()
    again = invoke("reclassify", "--from", "2025-11", "--to", "2025-12")
    assert again.exit_code == 0, again.output
    assert runs_by_month(pool, nov, nov) == {nov: (1, 7)}  # 4, and one landing per attempt


def server_now(pool: ClientPool) -> int:
    return int(pool.query_rows("SELECT toUnixTimestamp(now())")[0][0])


def test_a_run_drops_stale_scratch_tables_and_keeps_those_of_runs_still_going(
    pool: ClientPool, registry: Registry
) -> None:
    client = pool.get()
    now = server_now(pool)
    stale = f"usage_hourly_routes_stage_{now - 7 * 3600}_{uuid.uuid4().hex[:8]}"
    going = f"usage_hourly_routes_stage_{now - 60}_{uuid.uuid4().hex[:8]}"  # a run still going
    legacy = f"usage_hourly_routes_stage_{uuid.uuid4().hex[:12]}"  # an earlier release's, new
    other = "usage_hourly_routes_stage_notes"  # not a stage name: never dropped
    for name in (stale, going, legacy, other):
        client.command(f"CREATE TABLE `{name}` AS usage_hourly_routes")
    land(pool, registry, date(2026, 1, 1), 2)
    done = reclassify.run(client, registry, datetime(2026, 1, 1, tzinfo=UTC),
                          datetime(2026, 2, 1, tzinfo=UTC), author="t")  # fmt: skip
    assert [r.raw_records for r in done] == [2]
    assert stages(pool) == {going, legacy, other}
    # The run still going can use its table as before.
    client.command(f"INSERT INTO `{going}` SELECT * FROM usage_hourly_routes")
    assert int(pool.query_rows(f"SELECT sum(records) FROM `{going}`")[0][0]) > 0
    # Once old enough, an earlier release's stage (aged by its creation) goes too.
    time.sleep(1.1)
    dropped = reclassify.drop_stale_stages(client, older_than=timedelta(0))
    assert sorted(dropped) == sorted([going, legacy])
    assert stages(pool) == {other}
    client.command(f"DROP TABLE `{other}`")


def test_a_months_last_second_counts_when_it_is_a_part_of_its_own(
    pool: ClientPool, registry: Registry
) -> None:
    """Found in review: usage_raw's DateTime64 occurred_at was bounded by DateTime parameters,
    and the engine's part pruning then dropped a part whose rows all fell in the last second
    before the month's end (a batch of one second's records, before any merge), though row by
    row the comparison held: `as_classified=now` and `tracker reclassify` left them out."""
    client = pool.get()
    client.command("SYSTEM STOP MERGES usage_raw")  # the parts stay as they landed
    try:
        land(pool, registry, date(2024, 2, 1), 4)
        last = [
            parse_record(
                {"record_id": f"last-{i}", "agency_id": "in-sbi", "provider": "mistral",
                 "model": "m", "endpoint_host": "10.42.7.5",
                 "occurred_at": f"2024-02-29T23:59:59.{100 + i}Z"},
                gateway_id="gw",
            )
            for i in range(3)
        ]  # fmt: skip
        Writer(client).write(Processor(Classifier(registry)).process_records(last).rows)
        start, end = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
        # Read from usage_raw, no month covered by the route rollup yet:
        params = {"from_": start, "to": end, "registry_now": registry.version, "covered": []}
        assert int(pool.query_rows(
            f"SELECT sum(records) FROM {reclassify.now_source()}", params
        )[0][0]) == 7  # fmt: skip
        [done] = reclassify.run(client, registry, start, end, author="t")
        assert (done.raw_records, done.hourly_records) == (7, 7)
        assert int(pool.query_rows(
            "SELECT sum(records) FROM usage_hourly_routes WHERE toYYYYMM(hour) = 202402"
        )[0][0]) == 7  # fmt: skip
    finally:
        client.command("SYSTEM START MERGES usage_raw")
