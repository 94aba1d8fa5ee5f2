"""Effective-dated registry on chdb: ledger, scheduled changes, watcher, "as classified then/now",
and `tracker reclassify` re-deriving the route rollup idempotently."""

from __future__ import annotations

import logging
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from clickhouse_connect.driver.client import Client

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import reclassify, registry_store
from tracker.capacity import registry_in_force
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import UsageRecord, parse_record
from tracker.metrics import AsClassified, Basis, headline
from tracker.registry import Registry, RegistryError, load, parse

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


START = datetime(2026, 3, 30, tzinfo=UTC)  # the data spans two months (March and April)
END = datetime(2026, 5, 1, tzinfo=UTC)


def india() -> tuple[Registry, str]:
    return load()


def variant(text: str) -> tuple[Registry, str]:
    """India, where the NIC now serves api.openai.com from Delhi (a sovereign facility)."""
    data = yaml.safe_load(text)
    data["endpoints"].append({"host": "gw.openai-proxy.nic.in", "facility": "nic-meghraj-delhi"})
    for e in data["endpoints"]:
        if e.get("host") == "api.openai.com":
            e["facility"] = "nic-meghraj-delhi"
    new_text = yaml.safe_dump(data, sort_keys=False)
    return parse(new_text, "variant.yaml"), new_text


def both() -> tuple[tuple[Registry, str], tuple[Registry, str]]:
    """India and its variant, each with its text."""
    a = india()
    return a, variant(a[1])


def make(i: int, **patch: object) -> UsageRecord:
    body = {
        "record_id": f"h{i}", "agency_id": "in-cbse", "provider": "openai", "model": "gpt-4o",
        "endpoint_host": "api.openai.com",
        "occurred_at": (START + timedelta(hours=7 * (i % 100))).isoformat(), "request_count": 2,
        **patch,
    }  # fmt: skip
    return parse_record(body, gateway_id="gw-h")


def land(pool: ClientPool, registry: Registry, records: list[UsageRecord]) -> None:
    rows = Processor(Classifier(registry)).process_records(records).rows
    Writer(pool.get()).write(rows)


def test_ledger_records_every_change_and_refuses_backdating(pool: ClientPool) -> None:
    client = pool.get()
    assert registry_store.current(client) is None
    a, a_text = india()
    first = registry_store.activate(client, a, a_text, author="ana", reason="initial",
                                    source="india.yaml")  # fmt: skip
    assert first is not None and first.previous == ""
    # Loading the version already in force is not a change.
    assert (
        registry_store.activate(client, a, a_text, author="ana", reason="again", source="x") is None
    )
    b, b_text = variant(a_text)
    second = registry_store.activate(client, b, b_text, author="bo", reason="NIC proxy", source="v")
    assert second is not None and second.previous == a.version
    found = registry_store.in_force(client)
    assert found is not None and found[0].version == b.version
    assert found[1].author == "bo" and found[1].reason == "NIC proxy"
    # What was in force just before the second change is still answerable.
    before = registry_store.current(client, second.effective_from - timedelta(milliseconds=1))
    assert before is not None and before.version == a.version
    with pytest.raises(registry_store.ChangeError, match="backdated"):
        registry_store.activate(client, a, a_text, author="x", reason="y", source="z",
                                effective_from=datetime.now(UTC) - timedelta(days=1))  # fmt: skip
    # Revert to a known version: a new change, and capacity's reader agrees.
    revert = registry_store.activate(client, a, a_text, author="ana", reason="revert", source="i")
    assert revert is not None and revert.previous == b.version
    in_force = registry_in_force(client)
    assert in_force is not None and in_force.version == a.version
    assert [c.version for c in registry_store.history(client)][-3:] == [a.version, b.version,
                                                                          a.version]  # fmt: skip


def test_malformed_file_refused_whole_previous_stays(pool: ClientPool, tmp_path: Path) -> None:
    client = pool.get()
    before = registry_store.current(client)
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(india()[1])
    data["country"] = "India"
    data["facilities"][0]["operator"] = "ghost"
    data["endpoints"].append({"cidr": "10.0.0.1/8", "facility": "nic-meghraj-delhi"})
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(RegistryError) as info:
        registry_store.load_file(client, bad, author="a", reason="r")
    paths = {p for p, _ in info.value.errors}
    assert {"country", "facilities.0.operator"} <= paths
    assert any(p.startswith("endpoints.") for p in paths)
    assert info.value.source == str(bad)
    assert registry_store.current(client) == before


def test_scheduled_change_and_watcher(pool: ClientPool) -> None:
    client = pool.get()
    a, a_text = india()
    b, b_text = variant(a_text)
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    classifier = Classifier(a)
    watcher = registry_store.RegistryWatcher(pool.get, [classifier], interval=0.05)
    when = datetime.now(UTC) + timedelta(seconds=1.5)
    registry_store.activate(client, b, b_text, author="t", reason="scheduled", source="t",
                            effective_from=when)  # fmt: skip
    assert watcher.check() is False  # not due yet
    assert classifier.classify("openai", None, "api.openai.com").tier.value == "offshore"
    future = registry_store.current(client, when + timedelta(seconds=1))
    assert future is not None and future.version == b.version
    watcher.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while classifier.version != b.version and datetime.now(UTC) < deadline:
            watcher._stop.wait(0.05)
    finally:
        watcher.stop()
    assert classifier.version == b.version
    assert classifier.classify("openai", None, "api.openai.com").tier.value == "sovereign"
    registry_store.activate(client, a, a_text, author="t", reason="restore", source="t")


def test_the_watcher_swaps_a_change_when_it_comes_due_and_one_made_here_at_once(
    pool: ClientPool,
) -> None:
    """Found in review: records landed up to the poll interval (10 s) after a change came
    into force were classified by the version before it, though the ledger says the new one
    was in force. Polling once a minute here, the watcher still swaps a scheduled change as
    it comes due, and a change recorded in this process at once."""
    client = pool.get()
    a, a_text = india()
    b, b_text = variant(a_text)
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    classifier = Classifier(a)
    when = datetime.now(UTC) + timedelta(seconds=1.5)
    registry_store.activate(client, b, b_text, author="t", reason="scheduled", source="t",
                            effective_from=when)  # fmt: skip
    watcher = registry_store.RegistryWatcher(pool.get, [classifier], interval=60).start()

    def swapped_to(version: str) -> datetime:
        deadline = time.monotonic() + 10
        while classifier.version != version and time.monotonic() < deadline:
            time.sleep(0.01)
        assert classifier.version == version
        return datetime.now(UTC)

    try:
        assert watcher.next_due == when.replace(microsecond=when.microsecond // 1000 * 1000)
        assert classifier.version == a.version
        late = (swapped_to(b.version) - when).total_seconds()
        assert 0 <= late < 1, late
        asked = datetime.now(UTC)
        registry_store.activate(client, a, a_text, author="t", reason="restore", source="t")
        assert (swapped_to(a.version) - asked).total_seconds() < 2
    finally:
        watcher.stop()


def test_as_classified_then_and_now(pool: ClientPool) -> None:
    client = pool.get()
    a, a_text = india()
    b, b_text = variant(a_text)
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    land(pool, a, [make(i) for i in range(100)])  # all offshore under a
    land(pool, a, [make(1000 + i, provider="sarvam", endpoint_host=None) for i in range(10)])
    then = headline(client, Basis.requests, START, END)
    assert (then.offshore, then.sovereign) == (200.0, 20.0)
    registry_store.activate(client, b, b_text, author="t", reason="NIC proxy", source="t")
    # Landed later, under b: these are sovereign then and now.
    land(pool, b, [make(2000 + i) for i in range(5)])
    then = headline(client, Basis.requests, START, END)
    now = headline(client, Basis.requests, START, END, as_classified=AsClassified.now)
    assert (then.offshore, then.sovereign, then.total) == (200.0, 30.0, 230.0)
    assert (now.offshore, now.sovereign, now.total) == (0.0, 230.0, 230.0)
    assert now.domestic_share == 1.0
    # A tier filter applies to the re-classified tier.
    sov = headline(client, Basis.requests, START, END, {"tier": ["sovereign"]},
                   as_classified=AsClassified.now)  # fmt: skip
    assert sov.total == 230.0
    # No month is derived yet: every row was re-classified from usage_raw.
    assert reclassify.covered_months(client, START, END) == []


def test_reclassify_rederives_months_idempotently(pool: ClientPool) -> None:
    client = pool.get()
    found = registry_store.in_force(client)
    assert found is not None
    registry = found[0]
    expected = {b: headline(client, b, START, END, as_classified=AsClassified.now) for b in Basis}
    seen: list[reclassify.MonthResult] = []
    results = reclassify.run(client, registry, START, END, author="t", progress=seen.append)
    assert [r.month.month for r in results] == [3, 4] and seen == results
    assert sum(r.raw_records for r in results) == 115
    assert all(r.raw_records == r.rollup_records == r.hourly_records for r in results)
    assert sum(r.changed_records for r in results) == 100  # the openai rows landed under a
    assert reclassify.covered_months(client, START, END) == [202603, 202604]
    # From the derived route rollup, the figures are the ones re-classified from usage_raw.
    for basis in Basis:
        got = headline(client, basis, START, END, as_classified=AsClassified.now)
        assert got == expected[basis], basis
    # Running it again changes nothing (the month partitions are replaced whole).
    again = reclassify.run(client, registry, START, END, author="t")
    assert [(r.raw_records, r.changed_records) for r in again] == [
        (r.raw_records, r.changed_records) for r in results
    ]
    assert (
        headline(client, Basis.tokens, START, END, as_classified=AsClassified.now)
        == expected[Basis.tokens]
    )
    runs = client.query("SELECT count(), uniqExact(run_id) FROM reclassify_runs").result_rows[0]
    assert tuple(runs) == (4, 2)
    leftovers = client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() "
        "AND name LIKE 'usage_hourly_routes_stage_%'"
    ).result_rows[0][0]
    assert leftovers == 0


def test_records_landed_after_a_run_still_count_now(pool: ClientPool) -> None:
    """A month that received records after it was derived is read from usage_raw again."""
    client = pool.get()
    a = india()[0]
    land(pool, a, [make(3000 + i, occurred_at="2026-04-20T12:00:00Z") for i in range(4)])
    assert reclassify.covered_months(client, START, END) == [202603]
    now = headline(client, Basis.requests, START, END, as_classified=AsClassified.now)
    then = headline(client, Basis.requests, START, END)
    assert now.total == then.total == 238.0
    assert (now.sovereign, then.offshore) == (238.0, 208.0)


def test_a_range_within_hours_reads_whole_hours_on_every_path(pool: ClientPool) -> None:
    # Found in review: over 10:30-11:30, "then" read 2 records (the 11:00 hour), "now" 1 from
    # usage_raw (occurred_at within the range), and 2 again once the month was reclassified.
    client = pool.get()
    (a, a_text), (b, b_text) = both()
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    base = datetime(2026, 6, 10, 10, tzinfo=UTC)  # a month no other test lands in
    records = [make(3000 + m, occurred_at=(base + timedelta(minutes=m)).isoformat())
               for m in (10, 20, 40, 50, 70, 110)]  # fmt: skip
    land(pool, a, records)
    registry_store.activate(client, b, b_text, author="t", reason="NIC proxy", source="t")
    start, end = base + timedelta(minutes=30), base + timedelta(minutes=90)
    then = headline(client, Basis.requests, start, end)
    now_raw = headline(client, Basis.requests, start, end, as_classified=AsClassified.now)
    reclassify.run(client, b, datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC),
                   author="t")  # fmt: skip
    now_derived = headline(client, Basis.requests, start, end, as_classified=AsClassified.now)
    # Whole hours 10:00-12:00: all six records, 2 requests each.
    assert then.total == now_raw.total == now_derived.total == 12.0
    assert (then.offshore, now_raw.sovereign, now_derived.sovereign) == (12.0, 12.0, 12.0)
    registry_store.activate(client, a, a_text, author="t", reason="restore", source="t")


def test_a_change_within_the_skew_tolerance_is_not_shadowed(pool: ClientPool) -> None:
    # Found in review: B loaded 30 s "ago" (inside the tolerance) after A came into force now
    # was recorded and reported, yet A, starting later, stayed in force for good.
    client = pool.get()
    (a, a_text), (b, b_text) = both()
    registry_store.activate(client, b, b_text, author="t", reason="base", source="t")
    registry_store.activate(client, a, a_text, author="t", reason="a now", source="t")
    change = registry_store.activate(client, b, b_text, author="t", reason="b, skewed clock",
                                     source="t", effective_from=datetime.now(UTC) - timedelta(seconds=30))  # fmt: skip
    assert change is not None
    for later in (timedelta(0), timedelta(hours=1), timedelta(days=365)):
        found = registry_store.current(client, datetime.now(UTC) + later)
        assert found is not None and found.version == b.version, later
    assert change.effective_from <= datetime.now(UTC)


def test_versions_keep_when_they_were_first_recorded_across_merges(pool: ClientPool) -> None:
    # Found in review: a version put back in force is re-inserted, and once the table merged,
    # its "first loaded" time was the revert's and the list's order flipped.
    client = pool.get()
    (a, a_text), (b, b_text) = both()
    registry_store.activate(client, a, a_text, author="t", reason="a", source="t")
    registry_store.activate(client, b, b_text, author="t", reason="b", source="t")
    before = dict(registry_store.versions(client))
    registry_store.activate(client, a, a_text, author="t", reason="a again", source="t")
    client.command("OPTIMIZE TABLE registry_versions FINAL")
    after = dict(registry_store.versions(client))
    assert after[a.version] == before[a.version] < after[b.version] == before[b.version]
    assert [v for v, _ in registry_store.versions(client)].index(a.version) < [
        v for v, _ in registry_store.versions(client)
    ].index(b.version)


def test_versions_from_before_the_ledger_stay_published(pool: ClientPool) -> None:
    # A store from before migration 0002: texts recorded at process starts, no ledger row.
    client = pool.get()
    data = yaml.safe_load(india()[1])
    data["country_name"] = "India (a version from before the ledger)"
    old = yaml.safe_dump(data, sort_keys=False)
    registry = parse(old, "pre-ledger.yaml")
    assert registry.version not in dict(registry_store.versions(client))
    client.insert("registry_versions",
                  [[registry.version, datetime(2024, 1, 1, tzinfo=UTC), "system", "start", old]],
                  column_names=["version", "loaded_at", "author", "reason", "content"])  # fmt: skip
    assert registry.version in dict(registry_store.versions(client))
    assert registry_store.content(client, registry.version, published=True) == old


def test_a_process_starts_with_a_configured_file_this_release_refuses(
    pool: ClientPool, tmp_path: Path
) -> None:
    # Found in the second review: the version in force was read back leniently, but bootstrap
    # also loaded the configured file strictly, only to compare it, and stopped every process.
    client = pool.get()
    data = yaml.safe_load(india()[1])
    data["endpoints"].append({"host": "llm.gov.in.", "facility": "nic-meghraj-delhi"})
    text = yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(RegistryError):
        parse(text, "new.yaml")
    earlier = parse(text, "as an earlier release stored it", stored=True)
    registry_store.activate(client, earlier, text, author="t", reason="earlier", source="t")
    configured = tmp_path / "india.yaml"
    configured.write_text(text)
    registry, kept = registry_store.bootstrap(client, configured)
    assert registry.version == earlier.version and kept == text
    registry_store.activate(client, *india(), author="t", reason="restore", source="t")


def test_nothing_is_scheduled_while_nothing_is_in_force(pool: ClientPool) -> None:
    # Found in review: on an empty ledger, a version scheduled for tomorrow left nothing in
    # force, and a process starting with that file then recorded it as in force at once.
    # (At the end of the module: it empties the ledger and leaves a change scheduled.)
    client = pool.get()
    client.command("TRUNCATE TABLE registry_changes")
    a, a_text = india()
    with pytest.raises(registry_store.ChangeError, match="no registry version is in force now"):
        registry_store.activate(client, a, a_text, author="t", reason="launch", source="t",
                                effective_from=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    assert registry_store.history(client) == []
    registry_store.activate(client, a, a_text, author="t", reason="now", source="t")
    b, b_text = variant(a_text)
    scheduled = registry_store.activate(client, b, b_text, author="t", reason="launch",
                                        source="t", effective_from=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    assert scheduled is not None
    found = registry_store.current(client)
    assert found is not None and found.version == a.version


def named(text: str, name: str) -> tuple[Registry, str]:
    """`text` under another country name: another version with the same routes."""
    data = yaml.safe_load(text)
    data["country_name"] = name
    new_text = yaml.safe_dump(data, sort_keys=False)
    return parse(new_text, f"{name}.yaml"), new_text


def test_a_change_behind_a_scheduled_one_is_refused_listing_it(pool: ClientPool) -> None:
    # Found in review: with B scheduled for tomorrow, C loaded now was recorded and reported,
    # and tomorrow B replaced it, C's edits gone without a word. (It empties the ledger.)
    client = pool.get()
    client.command("TRUNCATE TABLE registry_changes")
    a, a_text = india()
    (b, b_text), (c, c_text) = named(a_text, "B"), named(a_text, "C")
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    scheduled = registry_store.activate(client, b, b_text, author="bo", reason="B for tomorrow",
                                        source="t", effective_from=tomorrow)  # fmt: skip
    assert scheduled is not None
    # Loading the version in force is no change, and undoes nothing: not refused (found in
    # review).
    assert (
        registry_store.activate(client, a, a_text, author="t", reason="again", source="t") is None
    )
    with pytest.raises(registry_store.ScheduledAhead) as refused:
        registry_store.activate(client, c, c_text, author="cy", reason="C now", source="t")
    assert [p.version for p in refused.value.pending] == [b.version]
    text = refused.value.describe("--before-scheduled")
    assert b.version in text and "bo: B for tomorrow" in text and "--before-scheduled" in text
    assert len(registry_store.history(client)) == 2  # nothing recorded
    # Scheduled ahead but before B: refused alike.
    with pytest.raises(registry_store.ScheduledAhead):
        registry_store.activate(client, c, c_text, author="cy", reason="C at noon", source="t",
                                effective_from=tomorrow - timedelta(hours=1))  # fmt: skip

    # Recorded knowingly: in force now, and only until B.
    now_c = registry_store.activate(client, c, c_text, author="cy", reason="C now", source="t",
                                    before_scheduled=True)  # fmt: skip
    assert now_c is not None and now_c.previous == a.version
    in_force = registry_store.current(client)
    assert in_force is not None and in_force.seq == now_c.seq
    later = registry_store.current(client, tomorrow + timedelta(hours=1))
    assert later is not None and later.version == b.version

    # Folded into B: loaded at B's own time, it replaces B (its greater seq), and says so.
    d, d_text = named(a_text, "B with C's edits")
    folded = registry_store.activate(client, d, d_text, author="bo", reason="B + C", source="t",
                                     effective_from=tomorrow)  # fmt: skip
    assert folded is not None and folded.previous == b.version
    later = registry_store.current(client, tomorrow + timedelta(hours=1))
    assert later is not None and later.version == d.version
    # The version the ledger already has in force then is no change, scheduled or not.
    assert registry_store.activate(client, d, d_text, author="bo", reason="again", source="t",
                                   effective_from=tomorrow) is None  # fmt: skip
    assert registry_store.activate(client, c, c_text, author="cy", reason="again", source="t",
                                   before_scheduled=True) is None  # fmt: skip
    # A change scheduled after another scheduled one replaces that one, not the one in force.
    after = registry_store.activate(client, a, a_text, author="t", reason="back", source="t",
                                    effective_from=tomorrow + timedelta(days=1))  # fmt: skip
    assert after is not None and after.previous == d.version
    assert len(registry_store.history(client)) == 5


def in_dollars(text: str) -> tuple[Registry, str]:
    """`text` reporting in USD, with the same rates."""
    data = yaml.safe_load(text)
    data["reporting_currency"] = "USD"
    data["fx_to_reporting"] = {"USD": 1, "INR": 0.0119, "EUR": 1.0833}
    new_text = yaml.safe_dump(data, sort_keys=False)
    return parse(new_text, "usd.yaml"), new_text


def test_the_reporting_currency_cannot_change_under_landed_usage(pool: ClientPool) -> None:
    # Found in review: costs are converted into the reporting currency as records land, and the
    # rollups keep no currency; after a change from INR to USD, /v1/cost added 84 INR and 1 USD
    # up as 85 USD. (At the end of the module: it empties the ledger and the usage.)
    client = pool.get()
    client.command("TRUNCATE TABLE registry_changes")
    a, a_text = india()
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    Writer(client).write(Processor(Classifier(a)).process_records([make(900)]).rows)
    usd, usd_text = in_dollars(a_text)
    for when in (None, datetime.now(UTC) + timedelta(days=1)):
        with pytest.raises(registry_store.ChangeError, match="reporting_currency USD differs "
                           f"from INR of version {a.version}"):  # fmt: skip
            registry_store.activate(client, usd, usd_text, author="t", reason="in dollars",
                                    source="t", effective_from=when)  # fmt: skip
    assert [c.version for c in registry_store.history(client)] == [a.version]
    # Another change in the same currency is taken; and before any usage, a new currency is.
    b, b_text = named(a_text, "B")
    assert registry_store.activate(client, b, b_text, author="t", reason="b", source="t")
    for table in ("usage_raw", "usage_key_index", "usage_hourly", "usage_daily", "landed_batches"):
        client.command(f"TRUNCATE TABLE {table}")
    changed = registry_store.activate(client, usd, usd_text, author="t", reason="usd", source="t")
    assert changed is not None and changed.previous == b.version


def test_a_reporting_currency_change_cannot_be_scheduled(pool: ClientPool) -> None:
    # Found in review: scheduled on a store with no usage yet, the change came due after usage
    # had landed, and the costs of both currencies were summed. (It empties the ledger.)
    client = pool.get()
    client.command("TRUNCATE TABLE registry_changes")
    a, a_text = india()
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    usd, usd_text = in_dollars(a_text)
    assert not client.query("SELECT count() FROM usage_raw").result_rows[0][0]
    with pytest.raises(registry_store.ChangeError, match="can take effect only now"):
        registry_store.activate(client, usd, usd_text, author="t", reason="usd tomorrow",
                                source="t", effective_from=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    assert [c.version for c in registry_store.history(client)] == [a.version]
    # Now, with no usage landed, it is taken; and then no change back can be scheduled either.
    assert registry_store.activate(client, usd, usd_text, author="t", reason="usd", source="t")
    with pytest.raises(registry_store.ChangeError, match="can take effect only now"):
        registry_store.activate(client, a, a_text, author="t", reason="inr tomorrow",
                                source="t", effective_from=datetime.now(UTC) + timedelta(days=1))  # fmt: skip


def test_a_later_entry_wins_at_one_time_whatever_the_writers_clock(
    pool: ClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: entries at one effective time were ordered by their writers' clocks, so
    # withdrawing a scheduled change from a host whose clock was an hour behind did nothing.
    client = pool.get()
    client.command("TRUNCATE TABLE registry_changes")
    a, a_text = india()
    b, b_text = named(a_text, "B, scheduled")
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    at = datetime.now(UTC) + timedelta(days=1)
    registry_store.activate(client, b, b_text, author="t", reason="b", source="t",
                            effective_from=at)  # fmt: skip
    behind = types.SimpleNamespace(time_ns=lambda: time.time_ns() - 3600 * 10**9)
    monkeypatch.setattr(registry_store, "time", behind)
    withdrawn = registry_store.activate(client, a, a_text, author="t", reason="withdraw b",
                                        source="t", effective_from=at)  # fmt: skip
    assert withdrawn is not None and withdrawn.previous == b.version
    found = registry_store.current(client, at + timedelta(seconds=1))
    assert found is not None and found.version == a.version and found.reason == "withdraw b"


def test_a_change_that_loses_the_ledger_race_rewrites_no_provenance(pool: ClientPool) -> None:
    # Found in review: the loser had already re-inserted the version's text under its own
    # author and reason, which replaced the row that said who first loaded it.
    client = pool.get()
    client.command("TRUNCATE TABLE registry_changes")
    a, a_text = india()
    x, x_text = named(a_text, "X, loaded first")
    registry_store.activate(client, a, a_text, author="t", reason="base", source="t")
    registry_store.activate(client, x, x_text, author="first", reason="x", source="t")
    registry_store.activate(client, a, a_text, author="t", reason="back", source="t")
    stale = registry_store.ledger_length(client) - 1  # another change landed since its checks
    with pytest.raises(registry_store.ChangeConflict):
        registry_store.activate(client, x, x_text, author="loser", reason="lost", source="t",
                                after=stale)  # fmt: skip

    def provenance(version: str) -> tuple[str, str]:
        row = client.query("SELECT author, reason FROM registry_versions FINAL "
                           "WHERE version = {v:String}", parameters={"v": version}).result_rows  # fmt: skip
        return str(row[0][0]), str(row[0][1])

    assert provenance(x.version) == ("first", "x")
    # A text only a lost change wrote (never in force) takes the provenance of the change that
    # puts it in force.
    y, y_text = named(a_text, "Y, first loaded by a lost change")
    with pytest.raises(registry_store.ChangeConflict):
        registry_store.activate(client, y, y_text, author="loser", reason="lost", source="t",
                                after=stale)  # fmt: skip
    assert registry_store.content(client, y.version, published=True) is None
    registry_store.activate(client, y, y_text, author="winner", reason="y", source="t")
    assert provenance(y.version) == ("winner", "y")


def test_a_store_outage_is_logged_when_it_starts_not_at_every_poll(
    pool: ClientPool, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher polls every second: an outage of a minute would have logged 60 tracebacks."""
    a, _ = india()
    down = [True]

    def client() -> Any:
        if down[0]:
            raise OSError("store unreachable")
        return pool.get()

    watcher = registry_store.RegistryWatcher(client, [Classifier(a)], interval=0.02)
    with caplog.at_level(logging.INFO, logger="tracker.registry_store"):
        watcher.start()  # its first check fails too: logged, not raised
        try:
            time.sleep(0.5)  # ~25 polls
            failures = [r for r in caplog.records if "re-read the registry" in r.getMessage()]
            down[0] = False
            deadline = time.monotonic() + 5
            while not any("re-read again" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            watcher.stop()
    # The start's own check, then the poll loop's first failure: two, not ~25.
    assert [r.levelno for r in failures] == [logging.ERROR, logging.ERROR], failures


def test_a_due_change_the_store_cannot_give_is_retried_at_the_next_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: a check failing after a scheduled change came due left `next_due` in
    the past, so the watcher waited 0 s and checked again at once: 377,444 checks in 2 s while
    the store was down."""
    due = datetime.now(UTC) + timedelta(seconds=0.2)
    down, calls = [False], [0]

    def in_force(client: Any, at: datetime | None = None) -> None:
        calls[0] += 1
        if down[0]:
            raise OSError("store unreachable")
        return None

    def scheduled_after(client: Any, at: datetime) -> list[Any]:
        return [types.SimpleNamespace(effective_from=due)] if at < due else []

    monkeypatch.setattr(registry_store, "in_force", in_force)
    monkeypatch.setattr(registry_store, "scheduled_after", scheduled_after)
    watcher = registry_store.RegistryWatcher(lambda: cast(Client, None), [], interval=10).start()
    try:
        assert watcher.next_due == due
        down[0] = True
        time.sleep(1.0)
    finally:
        watcher.stop()
    assert calls[0] <= 3, calls  # the start's check, the due one, nothing more within 10 s
