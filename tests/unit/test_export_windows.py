"""Export windows (tracker/usage_export.windows): contiguous, covering, about `budget` rows."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta

from tracker.usage_export import windows

START = datetime(2026, 1, 10, 6, 30, tzinfo=UTC)
END = datetime(2026, 3, 2, 12, tzinfo=UTC)


def check_cover(cut: list[tuple[datetime, datetime]], start: datetime, end: datetime) -> None:
    assert cut[0][0] == start and cut[-1][1] == end
    for (_, hi), (lo, _) in itertools.pairwise(cut):
        assert hi == lo  # contiguous: no gap, no overlap
    assert all(lo < hi for lo, hi in cut)


def test_windows_cover_the_range_and_hold_about_the_budget() -> None:
    rng = random.Random(3)
    counts = []
    day = START.date()
    while day <= END.date():
        if rng.random() < 0.8:  # some days have no rows at all
            counts.append((day, rng.randrange(0, 30_000)))
        day += timedelta(days=1)
    cut = windows(START, END, counts, budget=50_000)
    check_cover(cut, START, END)
    for lo, hi in cut:
        held = sum(n for d, n in counts if lo <= datetime(d.year, d.month, d.day, tzinfo=UTC) < hi)
        assert held <= 50_000 or hi - lo <= timedelta(days=1)
    assert len(cut) >= sum(n for _, n in counts) // 50_000


def test_a_day_over_the_budget_is_sliced() -> None:
    day = date(2026, 2, 1)
    cut = windows(START, END, [(day, 230_000)], budget=50_000)
    check_cover(cut, START, END)
    inside = [
        (lo, hi) for lo, hi in cut if lo.date() == day and hi <= datetime(2026, 2, 2, tzinfo=UTC)
    ]
    assert len(inside) == 5  # ceil(230k / 50k) equal slices of that day
    assert len({hi - lo for lo, hi in inside}) == 1


def test_no_counts_is_one_window() -> None:
    assert windows(START, END, []) == [(START, END)]
    hour = START + timedelta(hours=1)
    sliced = windows(START, hour, [(START.date(), 10**6)], budget=100_000)
    check_cover(sliced, START, hour)
    assert len(sliced) == 10  # the day's rows, in a range of one hour of it: still 10 slices
