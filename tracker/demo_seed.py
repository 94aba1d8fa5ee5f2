"""`tracker demo`'s seed, once per store and completed when interrupted (migration 0010)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

from clickhouse_connect.driver.client import Client

from tracker.contract import UsageRecord

# The newest row; `completed` sorts after `started` when both were written in one millisecond.
_LAST = "SELECT end_date, days, state, records FROM demo_seeds ORDER BY at DESC, state DESC LIMIT 1"


@dataclass(frozen=True)
class Window:
    end: date
    days: int


@dataclass(frozen=True)
class SeedOutcome:
    """What a run did: `landed` records now, in `window`; or nothing, and why."""

    window: Window | None
    landed: int = 0
    resumed: bool = False  # completed a seed an earlier run started
    already: int = 0  # records of a completed seed (nothing landed now); window None: one
    # of a release before migration 0010
    foreign: int = 0  # usage that no demo seed landed: the store is left as it is


def _last(client: Client) -> tuple[Window, str, int] | None:
    rows = client.query(_LAST).result_rows
    if not rows:
        return None
    end, days, state, records = rows[0]
    return Window(end, int(days)), str(state), int(records)


def _note(client: Client, window: Window, state: str, records: int) -> None:
    client.insert("demo_seeds", [[window.end, window.days, state, records]],
                  column_names=["end_date", "days", "state", "records"])  # fmt: skip


def seed_once(
    client: Client,
    *,
    days: int,
    generate: Callable[[Window], Iterator[UsageRecord]],
    land: Callable[[Iterable[UsageRecord]], int],
    today: date | None = None,
) -> SeedOutcome:
    """Seed the window of `days` ending `today`, unless a seed completed before; complete a
    seed an earlier run started (its own window, whatever `days` and `today` are now). A store
    holding usage that no seed landed is not seeded: demo records would mix with real ones."""
    last = _last(client)
    if last is not None and last[1] == "completed":
        return SeedOutcome(last[0], already=last[2])
    if last is None:
        # Demo records only: a seed of a release before migration 0010, which recorded no
        # window (found in review: called "not a demo seed's"); taken as done, as it was then.
        present, demo_records = (int(n) for n in client.query(
            "SELECT count(), countIf(startsWith(record_id, 'demo-')) FROM usage_raw"
        ).result_rows[0])  # fmt: skip
        if present:
            if demo_records == present:
                return SeedOutcome(None, already=present)
            return SeedOutcome(None, foreign=present)
        window = Window(today or datetime.now(UTC).date(), days)
        _note(client, window, "started", 0)
    else:
        window = last[0]
    landed = land(generate(window))
    total = int(client.query("SELECT count() FROM usage_raw").result_rows[0][0])
    _note(client, window, "completed", total)
    return SeedOutcome(window, landed=landed, resumed=last is not None)
