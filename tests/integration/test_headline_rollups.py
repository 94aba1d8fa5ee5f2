"""The headline's daily path (usage_daily for whole days, usage_hourly for the edges) gives the
same figures as the hourly rollup alone, for every basis, filter and kind of range."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import demo
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.metrics import (
    Basis,
    Share,
    daily_split,
    fast_share_sql,
    headline,
    hour_ceil,
    hour_floor,
    share_parameters,
    share_sql,
)
from tracker.registry import load

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


END_DAY = date(2026, 4, 1)
DAYS = 20
FIRST = datetime.combine(END_DAY - timedelta(days=DAYS), datetime.min.time(), UTC)


@pytest.fixture(scope="module")
def seeded(pool: ClientPool) -> ClientPool:
    registry, _ = load()
    records = list(demo.generate(registry, days=DAYS, end=END_DAY))
    processor = Processor(Classifier(registry))
    writer = Writer(pool.get())
    # Several batches, as the pipeline lands them: the daily rows of one day come from many.
    rows = processor.process_records(records).rows
    for start in range(0, len(rows), 700):
        writer.write(rows[start : start + 700])
    return pool


def hourly_only(pool: ClientPool, basis: Basis, start: datetime, end: datetime,
                filters: dict[str, list[str]]) -> tuple[float, ...]:  # fmt: skip
    """The hourly rollup alone over the whole hours covering [start, end), as headline() reads
    every range."""
    start, end = hour_floor(start), hour_ceil(end)
    row = pool.query_rows(share_sql(basis, filters), share_parameters(start, end, filters))[0]
    return tuple(float(0 if v is None else v) for v in row)


def figures(share: Share) -> tuple[float, ...]:
    return tuple(
        float(0 if v is None else v)
        for v in (
            share.sovereign, share.onshore, share.offshore, share.unknown, share.total,
            share.records, share.domestic_share, share.sovereign_share, share.unknown_share,
            share.cost_unconverted_records,
        )
    )  # fmt: skip


def ranges() -> list[tuple[datetime, datetime]]:
    rng = random.Random(7)
    fixed = [
        (FIRST, FIRST + timedelta(days=DAYS)),  # whole days only
        (FIRST + timedelta(hours=9), FIRST + timedelta(days=3, hours=14)),  # ragged both ends
        (FIRST + timedelta(days=2, hours=3), FIRST + timedelta(days=2, hours=17)),  # inside a day
        (FIRST + timedelta(days=4, minutes=30), FIRST + timedelta(days=6)),  # off the hour
        (FIRST - timedelta(days=5), FIRST + timedelta(days=40)),  # wider than the data
        (FIRST + timedelta(days=3), FIRST + timedelta(days=3)),  # empty
    ]
    randoms = []
    for _ in range(12):
        a = FIRST + timedelta(minutes=rng.randrange(0, DAYS * 24 * 60))
        b = a + timedelta(minutes=rng.randrange(1, 10 * 24 * 60))
        randoms.append((a, b))
    return fixed + randoms


@pytest.mark.parametrize("basis", list(Basis))
def test_daily_path_equals_hourly_rollup(seeded: ClientPool, basis: Basis) -> None:
    agencies = [str(r[0]) for r in seeded.query_rows(
        "SELECT DISTINCT agency_id FROM usage_daily ORDER BY agency_id LIMIT 3"
    )]  # fmt: skip
    filter_sets: list[dict[str, list[str]]] = [
        {},
        {"agency_id": agencies},
        {"tier": ["sovereign", "onshore"]},
        {"status": ["error"], "agency_id": agencies[:1]},
        {"sector": ["education", "health"], "operation": ["chat", "embeddings"]},
    ]
    client = seeded.get()
    compared = 0
    for filters in filter_sets:
        assert fast_share_sql(basis, filters) is not None
        for start, end in ranges():
            got = figures(headline(client, basis, start, end, filters))
            want = hourly_only(seeded, basis, start, end, filters)
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (filters, start, end)
            compared += got[5] > 0
    assert compared > 20  # most cases compared real, non-empty figures


def test_filters_outside_the_daily_rollup_read_hourly(seeded: ClientPool) -> None:
    assert fast_share_sql(Basis.requests, {"provider": ["sarvam"]}) is None
    start, end = FIRST + timedelta(hours=5), FIRST + timedelta(days=9, hours=2)
    providers = [str(r[0]) for r in seeded.query_rows("SELECT DISTINCT provider FROM usage_hourly")]
    filters = {"provider": providers[:2]}
    got = figures(headline(seeded.get(), Basis.tokens, start, end, filters))
    assert got == pytest.approx(hourly_only(seeded, Basis.tokens, start, end, filters))
    assert got[5] > 0


def test_daily_split_keeps_whole_utc_days_only() -> None:
    d = datetime(2026, 3, 3, tzinfo=UTC)
    assert daily_split(d, d + timedelta(days=2)) == (d, d + timedelta(days=2))
    assert daily_split(d + timedelta(hours=1), d + timedelta(days=2, hours=5)) == (
        d + timedelta(days=1),
        d + timedelta(days=2),
    )
    # No whole day inside: both ends collapse to `end`, so only the hourly part is read.
    end = d + timedelta(hours=20)
    assert daily_split(d + timedelta(hours=2), end) == (end, end)
    # A naive datetime is read as UTC, as ClickHouse reads it when bound.
    assert daily_split(d.replace(tzinfo=None), (d + timedelta(days=1)).replace(tzinfo=None)) == (
        d,
        d + timedelta(days=1),
    )
