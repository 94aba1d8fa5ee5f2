"""`tracker demo`'s seed (tracker/demo_seed.py): once per store, and an interrupted seed is
completed by the next run, in the window it began, each record landed once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from itertools import islice

import pytest

from tracker import demo
from tracker.cli.wiring import Core, open_core, seed
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord
from tracker.demo_seed import Window, seed_once
from tracker.settings import CommonSettings


@pytest.fixture()
def core(settings: CommonSettings, pool: ClientPool) -> Core:
    opened = open_core(settings)
    for table in ("usage_raw", "usage_key_index", "usage_hourly", "usage_daily", "demo_seeds"):
        opened.pool.get().command(f"TRUNCATE TABLE {table}")
    return opened


def stored(core: Core) -> tuple[int, int]:
    """Raw rows, and distinct record ids among them."""
    rows = core.pool.query_rows("SELECT count(), uniqExact(record_id) FROM usage_raw")
    return int(rows[0][0]), int(rows[0][1])


def test_an_interrupted_seed_is_completed_in_the_window_it_began(core: Core) -> None:
    def generate(window: Window) -> Iterator[UsageRecord]:
        return demo.generate(core.registry, days=window.days, end=window.end)

    def land(records: Iterable[UsageRecord]) -> int:
        return seed(core, records, total=None, batch=500)

    whole = list(generate(Window(date(2026, 11, 20), 3)))
    part = len(whole) // 3

    def land_then_stop(records: Iterable[UsageRecord]) -> int:
        land(islice(records, part))
        raise KeyboardInterrupt  # Ctrl-C in the middle of the seed

    client = core.pool.get()
    with pytest.raises(KeyboardInterrupt):
        seed_once(client, days=3, today=date(2026, 11, 20), generate=generate, land=land_then_stop)
    assert stored(core) == (part, part)
    # Three days later, asked for 30 days: the seed begun is completed as it began.
    resumed = seed_once(client, days=30, today=date(2026, 11, 23), generate=generate, land=land)
    assert resumed.resumed and resumed.window == Window(date(2026, 11, 20), 3)
    assert resumed.landed == len(whole) - part
    assert stored(core) == (len(whole), len(whole))
    again = seed_once(client, days=30, today=date(2026, 11, 24), generate=generate, land=land)
    assert (again.landed, again.already, again.window) == (0, len(whole), resumed.window)
    assert stored(core) == (len(whole), len(whole))


def test_a_store_with_usage_no_seed_landed_is_not_seeded(core: Core) -> None:
    real = next(demo.generate(core.registry, days=1, end=date(2026, 11, 20)))
    seed(core, [real.model_copy(update={"record_id": "a-real-record"})], total=None)

    def refuse(records: Iterable[UsageRecord]) -> int:
        raise AssertionError("seeded a store that holds usage of its own")

    outcome = seed_once(core.pool.get(), days=3, generate=lambda w: iter(()), land=refuse)
    assert (outcome.window, outcome.landed, outcome.foreign) == (None, 0, 1)
    assert stored(core) == (1, 1)


def test_a_store_an_earlier_release_seeded_is_taken_as_seeded(core: Core) -> None:
    """Found in review (2026-11-26): a demo store seeded before migration 0010 (no window
    recorded) was called "usage already present, not a demo seed's"."""
    landed = seed(core, demo.generate(core.registry, days=1, end=date(2026, 11, 20)), total=None)

    def refuse(records: Iterable[UsageRecord]) -> int:
        raise AssertionError("seeded again")

    outcome = seed_once(core.pool.get(), days=3, generate=lambda w: iter(()), land=refuse)
    assert (outcome.window, outcome.already, outcome.foreign, outcome.landed) == (
        None, landed, 0, 0)  # fmt: skip
