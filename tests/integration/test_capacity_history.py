"""The capacity index's D layer over a registry change: each past period's agencies are the
ones the registry in force at its end lists under the sector, as its rows were classified then.
A module of its own: its ledger begins in 2019, which would change the past of the other
capacity tests' stores."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.integration.test_capacity_api import at, land, rec
from tracker import registry as registry_mod
from tracker.capacity import Period, capacity_series
from tracker.clickhouse import ClientPool
from tracker.registry import load, parse

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True

MOVED = (
    "{id: in-kvs, name: Kendriya Vidyalaya Sangathan, sector: education",
    "{id: in-kvs, name: Kendriya Vidyalaya Sangathan, sector: health",
)


def test_a_past_periods_agencies_are_the_registrys_of_that_time(pool: ClientPool) -> None:
    """Found in review: D's agencies were always today's registry's while its activity is read
    from rows by the sector they landed under: after an agency moved sector, its old sector's
    past periods left it out of D (its requests in C and S), and its new sector counted it
    inactive there until one late record made it active at 100% (D 0.151 -> 0.318)."""
    client = pool.get()
    before, text = load()
    after = parse(text.replace(*MOVED), "moved.yaml")
    assert after.version != before.version
    # A store whose ledger began in 2019: in-kvs under education, moved to health in June.
    for registry, body in ((before, text), (after, text.replace(*MOVED))):
        registry_mod.record_version(client, registry, body, author="t", reason="t")
    client.insert(
        "registry_changes",
        [[before.version, "", datetime(2019, 1, 1, tzinfo=UTC), datetime.now(UTC), "t", "t",
          "t", 0],
         [after.version, before.version, datetime(2019, 6, 1, tzinfo=UTC), datetime.now(UTC),
          "t", "moved", "t", 1]],
        column_names=["version", "previous", "effective_from", "recorded_at", "author",
                      "reason", "source", "seq"],
    )  # fmt: skip
    land(pool, before, [rec("h-1", "in-kvs", at(5, 10, year=2019), "sarvam", 100),
                        rec("h-2", "in-cbse", at(6, 10, year=2019), "openai", 100)])  # fmt: skip
    # A late record of March, landed after the move: classified by `after`, under health.
    land(pool, after, [rec("h-3", "in-kvs", at(7, 10, year=2019), "sarvam", 1)])
    land(pool, after, [rec("h-4", "in-kvs", at(8, 10, month=7, year=2019), "sarvam", 50)])
    march = (datetime(2019, 3, 1, tzinfo=UTC), datetime(2019, 4, 1, tzinfo=UTC))

    def agencies(sector: str, span: tuple[datetime, datetime]) -> dict[str, float]:
        (p,) = capacity_series(client, after, *span, Period.month, sector)
        return {a: req for a, req, _ in p.facts.agencies}

    # March: in-kvs was education's, and counts there with its March rows (100 requests);
    # health's March does not list it, whatever landed late under health.
    education = agencies("education", march)
    assert education["in-kvs"] == 100 and education["in-cbse"] == 100
    assert "in-kvs" not in agencies("health", march)
    # July, after the move: health's, active with its July record.
    july = (datetime(2019, 7, 1, tzinfo=UTC), datetime(2019, 8, 1, tzinfo=UTC))
    assert agencies("health", july)["in-kvs"] == 50
    assert "in-kvs" not in agencies("education", july)
    # A period before the ledger's first change (rows landed before any was recorded, as a
    # store's history does before its first start): the first version's agencies, the best
    # known of that time, not today's (found in review, 2026-11-26: a demo store's closed
    # months took agencies registered since, and their D fell).
    march_2018 = (datetime(2018, 3, 1, tzinfo=UTC), datetime(2018, 4, 1, tzinfo=UTC))
    assert "in-kvs" in agencies("education", march_2018)
    assert "in-kvs" not in agencies("health", march_2018)
