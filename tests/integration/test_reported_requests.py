"""Migration 0009: the requests behind cost and energy per inference, in usage_hourly.

Rows landed before the rollup carried them are measured by the migration's data step from
their raw rows; a key whose batches are in flight is left for a later run, never counted
twice; readers tell exact figures from approximate ones by measured_records."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.processor import Processor
from pipeline.writer import RAW_COLUMNS, Writer, new_batch_id
from tracker import queries, rollups
from tracker.classify import Classifier
from tracker.cli import app as cli_app
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord, parse_record
from tracker.migrate import migrate
from tracker.registry import Registry, load
from tracker.settings import CommonSettings

BOTH_STORES = True
START = datetime(2024, 3, 1, 8, tzinfo=UTC)


@pytest.fixture
def fresh(pool: ClientPool) -> Iterator[ClientPool]:
    """A store of its own at the latest migration: the data step reads whole tables."""
    database = f"t_reported_{uuid.uuid4().hex[:8]}"
    pool.get().command(f"CREATE DATABASE `{database}`")
    try:
        p = ClientPool(pool._settings, database=database)
        migrate(p.get())
        yield p
    finally:
        pool.get().command(f"DROP DATABASE IF EXISTS `{database}`")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load()[0]


def record(i: int, registry: Registry, gateway: str = "gw-rep", hours: int = 3) -> UsageRecord:
    """Every third record reports a cost in the reporting currency, every seventh one in a
    currency without a rate, every other one energy (0 Wh among them)."""
    fields: dict[str, Any] = {
        "record_id": f"{gateway}-{i}", "agency_id": "in-cbse", "provider": "sarvam",
        "model": "m", "request_count": 1 + i % 4, "input_tokens": 10 + i, "output_tokens": i,
        "occurred_at": (START + timedelta(minutes=(i * 7) % (60 * hours))).isoformat(),
    }  # fmt: skip
    if i % 3 == 0:
        fields |= {"cost": str(Decimal(i) / 100), "currency": registry.reporting_currency}
    elif i % 7 == 0:
        fields |= {"cost": "1", "currency": "ZZZ"}
    if i % 2 == 0:
        fields["energy_wh"] = float(i % 5)
    return parse_record(fields, gateway_id=gateway)


def expected(records: list[UsageRecord]) -> dict[datetime, tuple[int, int, int, int]]:
    """Per hour: (records, requests, cost requests, energy requests), from the records."""
    out: dict[datetime, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in records:
        cell = out[r.occurred_at.replace(minute=0, second=0, microsecond=0)]
        cell[0] += 1
        cell[1] += r.request_count
        cell[2] += r.request_count if r.cost is not None and r.currency != "ZZZ" else 0
        cell[3] += r.request_count if r.energy_wh is not None else 0
    return {h: (a, b, c, d) for h, (a, b, c, d) in out.items()}


def hourly(p: ClientPool) -> dict[datetime, tuple[int, int, int, int, int]]:
    """Per hour: (records, requests, cost requests, energy requests, measured records)."""
    rows = p.query_rows(
        "SELECT hour, sum(records), sum(requests), sum(cost_requests), sum(energy_requests), "
        "sum(measured_records) FROM usage_hourly GROUP BY hour ORDER BY hour"
    )
    return {h.replace(tzinfo=UTC): tuple(int(v) for v in rest) for h, *rest in rows}  # type: ignore[misc]


def land_the_old_way(p: ClientPool, rows: list[tuple[Any, ...]], *, ledger: bool = True) -> int:
    """A batch as a release before 0009 landed it: its hourly rows without the reported
    requests (and, with ledger=False, interrupted before its ledger row)."""
    client = p.get()
    batch = new_batch_id()
    client.insert("usage_raw", [(*r, batch) for r in rows], column_names=RAW_COLUMNS)
    client.command(rollups.KEYS_FROM_BATCH, parameters={"b": batch})
    client.command(rollups.HOURLY_BEFORE_0009, parameters={"b": batch},
                   settings={"insert_deduplication_token": f"hourly-{batch}"})  # fmt: skip
    client.command(rollups.DAILY_FROM_BATCH, parameters={"b": batch},
                   settings={"insert_deduplication_token": f"daily-{batch}"})  # fmt: skip
    if ledger:
        rollups.record_landed(client, batch, len(rows))
    return batch


def test_the_data_step_measures_what_landed_before_it(
    fresh: ClientPool, registry: Registry
) -> None:
    processor = Processor(Classifier(registry))
    old = [record(i, registry, "gw-old") for i in range(120)]
    new = [record(i, registry, "gw-new") for i in range(60)]
    crashed = [record(i, registry, "gw-crash") for i in range(30)]
    land_the_old_way(fresh, processor.process_records(old).rows)
    Writer(fresh.get()).write(processor.process_records(new).rows)  # shares the old rows' keys
    land_the_old_way(fresh, processor.process_records(crashed).rows, ledger=False)
    assert rollups.unmeasured_months(fresh.get()) == [(202403, 150)]

    rollups.measure_after_0009(fresh.get())
    want = expected(old + new + crashed)
    assert hourly(fresh) == {h: (*v, v[0]) for h, v in want.items()}
    assert rollups.unmeasured_months(fresh.get()) == []
    assert (
        rollups.measure_hourly(fresh.get()).measured == 0
    )  # repeated: nothing left, nothing added
    assert hourly(fresh) == {h: (*v, v[0]) for h, v in want.items()}
    raw = fresh.query_rows("SELECT count(), sum(request_count) FROM usage_raw")[0]
    daily = fresh.query_rows("SELECT sum(records), sum(requests) FROM usage_daily")[0]
    assert (
        [int(v) for v in raw] == [int(v) for v in daily] == [210, sum(v[1] for v in want.values())]
    )


def test_a_key_with_a_batch_in_flight_is_left_for_a_later_run(
    fresh: ClientPool, registry: Registry
) -> None:
    """A batch whose rollup is in but not its ledger row (another member, mid-landing) shares
    a key with rows landed before 0009: that key is not measured (the raw side reads ledgered
    batches only), the others are; the next run, after the landing, measures it once."""
    processor = Processor(Classifier(registry))
    old = [record(i, registry, "gw-old", hours=2) for i in range(80)]
    land_the_old_way(fresh, processor.process_records(old).rows)
    first_hour = [r for r in old if r.occurred_at < START + timedelta(hours=1)]
    flying = [record(i, registry, "gw-fly") for i in range(8)]  # the first hour only
    assert all(r.occurred_at < START + timedelta(hours=1) for r in flying)
    client = fresh.get()
    batch = new_batch_id()
    rows = processor.process_records(flying).rows
    client.insert("usage_raw", [(*r, batch) for r in rows], column_names=RAW_COLUMNS)
    rollups.run_steps(client, batch)

    assert rollups.measure_hourly(client).measured == len(old) - len(first_hour)
    second = START + timedelta(hours=1)
    want = expected(old + flying)
    found = hourly(fresh)
    assert found[second] == (*want[second], want[second][0])  # measured
    fly = expected(flying)[START]
    assert found[START][2:] == (fly[2], fly[3], len(flying))  # only the in-flight batch's own
    assert rollups.unmeasured_months(client) == [(202403, len(first_hour))]
    cells = queries.cost(client, None, START, START + timedelta(hours=1), {})
    assert not cells[0].exact  # read approximately, and said so
    assert cells[0].per_inference() == pytest.approx(cells[0].cost / cells[0].requests)

    rollups.record_landed(client, batch, len(rows))
    assert rollups.measure_hourly(client).measured == len(first_hour)
    assert hourly(fresh) == {h: (*v, v[0]) for h, v in want.items()}
    (cell,) = queries.cost(client, None, START, START + timedelta(hours=1), {})
    assert cell.exact and cell.cost_reported_requests == want[START][2]
    assert cell.per_inference() == pytest.approx(cell.cost / want[START][2])


def test_migrate_measure_measures_rows_an_older_release_landed_later(
    settings: CommonSettings, registry: Registry
) -> None:
    """A pipeline of the release before 0009 lands a batch after the migration ran (a rolling
    upgrade): its rows stay unmeasured until `tracker migrate --measure`, which measures them
    and says what is left; `--check --measure` is refused with exit 2."""
    database = f"t_measure_{uuid.uuid4().hex[:8]}"
    env = {"TRACKER_DATA_DIR": str(settings.data_dir), "TRACKER_CLICKHOUSE_DATABASE": database}
    runner = CliRunner()
    assert runner.invoke(cli_app, ["migrate"], env=env).exit_code == 0
    p = ClientPool(settings, database=database)
    try:
        late = [record(i, registry, "gw-late") for i in range(40)]
        land_the_old_way(p, Processor(Classifier(registry)).process_records(late).rows)
        assert rollups.unmeasured_months(p.get()) == [(202403, 40)]
        both = runner.invoke(cli_app, ["migrate", "--check", "--measure"], env=env)
        assert both.exit_code == 2 and "give one of them" in both.output, both.output
        done = runner.invoke(cli_app, ["migrate", "--measure"], env=env)
        assert done.exit_code == 0, done.output
        assert "measured 40 record(s); 0 record(s) left unmeasured" in done.output
        want = expected(late)
        assert hourly(p) == {h: (*v, v[0]) for h, v in want.items()}
    finally:
        p.get().command(f"DROP DATABASE IF EXISTS `{database}`")
