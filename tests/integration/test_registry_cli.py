"""`tracker registry load|show|history|classify` and `tracker reclassify` against chdb."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import registry_store
from tracker.classify import Classifier
from tracker.cli import app
from tracker.clickhouse import ClientPool
from tracker.contract import parse_record
from tracker.registry import load, parse
from tracker.settings import CommonSettings

Invoke = Callable[..., Result]
REGISTRY_DATA = Path(__file__).resolve().parents[2] / "tracker" / "registry_data"


@pytest.fixture(scope="module")
def run(settings: CommonSettings, pool: ClientPool) -> Invoke:
    env = {
        "TRACKER_DATA_DIR": str(settings.data_dir),
        "TRACKER_CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    return invoke


def test_load_show_history(run: Invoke, pool: ClientPool, tmp_path: Path) -> None:
    invoke = run
    india = REGISTRY_DATA / "india.yaml"
    first = invoke("registry", "load", str(india), "--reason", "initial", "--author", "ana")
    assert first.exit_code == 0, first.output
    assert f"{load()[0].version} in force" in first.stdout
    again = invoke("registry", "load", str(india), "--reason", "again", "--author", "ana")
    assert again.exit_code == 0 and "already in force" in again.stdout

    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(india.read_text())
    data["country"] = "India"
    data["facilities"][0]["operator"] = "ghost"
    data["endpoints"].append({"cidr": "not-a-range", "facility": "e2e-mumbai"})
    bad.write_text(yaml.safe_dump(data))
    refused = invoke("registry", "load", str(bad), "--reason", "typo", "--author", "bo")
    assert refused.exit_code == 2
    lines = [ln for ln in refused.stderr.splitlines() if ln.startswith(f"{bad}: ")]
    assert len(lines) == 3, refused.stderr
    assert f"{bad}: facilities.0.operator: unknown operator 'ghost'" in lines
    assert any(ln.startswith(f"{bad}: country: ") for ln in lines)
    shown = invoke("registry", "show")
    assert shown.exit_code == 0 and load()[0].version in shown.stdout  # still in force

    lux = REGISTRY_DATA / "luxembourg.yaml"
    switched = invoke("registry", "load", str(lux), "--reason", "second country", "--author", "cy")
    assert switched.exit_code == 0, switched.output
    history = invoke("registry", "history").stdout.strip().splitlines()
    assert [ln.split("\t")[3:5] for ln in history] == [["ana", "initial"], ["cy", "second country"]]
    text = invoke("registry", "show", "--yaml").stdout
    assert text == lux.read_text()
    past = invoke("registry", "show", "--yaml", "--version", load()[0].version).stdout
    assert past == india.read_text()

    out = invoke("registry", "classify", "mistral", "--host", "10.42.7.20").stdout
    assert "tier=sovereign rule=ip:10.42.7.0/24" in out and "eu-csf:SEAL-3" in out
    scheduled = invoke("registry", "load", str(india), "--reason", "back", "--author", "d",
                       "--effective-from", "2020-01-01")  # fmt: skip
    assert scheduled.exit_code == 2 and "backdated" in scheduled.stderr


def test_reclassify_command(run: Invoke, pool: ClientPool) -> None:
    invoke = run
    india = load()[0]
    start = datetime(2026, 2, 1, 9, tzinfo=UTC)
    records = [
        parse_record(
            {"record_id": f"c{i}", "agency_id": "in-sbi", "provider": "mistral", "model": "m",
             "endpoint_host": "10.42.7.5", "occurred_at": (start + timedelta(days=i)).isoformat()},
            gateway_id="gw",
        )
        for i in range(40)
    ]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(india)).process_records(records).rows)
    # Under India the IP is unknown to the registry: Mistral's default facility, offshore. Under
    # Luxembourg (in force), the range is POST's domestic cloud.
    result = invoke("reclassify", "--from", "2026-02", "--to", "2026-04")
    assert result.exit_code == 0, result.output
    assert "2026-02" in result.stdout and "2026-03" in result.stdout
    rows = pool.query_rows(
        "SELECT month, raw_records, changed_records FROM reclassify_runs ORDER BY month"
    )
    assert [(r[0].month, r[1], r[2]) for r in rows] == [(2, 28, 28), (3, 12, 12)]
    found = registry_store.in_force(pool.get())
    assert found is not None and found[0].country == "LU"
    bad = invoke("reclassify", "--from", "2026-04-01", "--to", "2026-03-01")
    assert bad.exit_code == 2
    # Found in review: a month without raw records made the engine refuse REPLACE PARTITION,
    # so no range with a gap could run; and years before 1000 were an engine traceback.
    gaps = invoke("reclassify", "--from", "2026-02", "--to", "2026-06")
    assert gaps.exit_code == 0, gaps.output
    rows = pool.query_rows(
        "SELECT month, argMax(raw_records, finished_at), argMax(rollup_records, finished_at) "
        "FROM reclassify_runs GROUP BY month ORDER BY month"
    )
    assert [(r[0].month, r[1], r[2]) for r in rows if r[0].year == 2026] == [
        (2, 28, 28), (3, 12, 12), (4, 0, 0), (5, 0, 0)]  # fmt: skip
    for args in (["reclassify", "--from", "0999-01", "--to", "2026-01"],
                 ["share", "--from", "0999-01-01"], ["registry", "show", "--at", "0001-01-01"],
                 ["registry", "show", "--at", "2200-01-01"]):  # fmt: skip
        refused = invoke(*args)
        assert refused.exit_code == 2 and "give a time from 2000" in refused.stderr, refused.output


def test_registry_files_and_ledger_texts_are_checked(
    run: Invoke, pool: ClientPool, tmp_path: Path
) -> None:
    # Found in review: rates of zero or less and lower-case currencies passed; a non-UTF-8 file
    # was a traceback; an author or reason with a newline forged a `registry history` row.
    india = REGISTRY_DATA / "india.yaml"
    data = yaml.safe_load(india.read_text())
    data["fx_to_reporting"] = {"INR": 2, "USD": -84, "usd": 84, "EUR": 0}
    data["country_name"] = "x" * 600
    bad = tmp_path / "fx.yaml"
    bad.write_text(yaml.safe_dump(data))
    refused = run("registry", "check", str(bad))
    assert refused.exit_code == 2, refused.output
    for needle in ("fx_to_reporting.USD", "fx_to_reporting.EUR", "fx_to_reporting.usd",
                   "country_name"):  # fmt: skip
        assert needle in refused.stderr, (needle, refused.stderr)
    data = yaml.safe_load(india.read_text())
    data["fx_to_reporting"]["INR"] = 2
    bad.write_text(yaml.safe_dump(data))
    refused = run("registry", "check", str(bad))
    assert refused.exit_code == 2 and "INR is the reporting currency" in refused.stderr
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"country: IN\ncountry_name: \xff\xfe\n")
    assert "not UTF-8" in run("registry", "check", str(binary)).stderr
    forged = run("registry", "load", str(india), "--reason", "ok", "--author",
                 "evil\tauthor\n2099-01-01T00:00:00+00:00\tr-fake")  # fmt: skip
    assert forged.exit_code == 2 and "--author" in forged.stderr, forged.output
    long = run("registry", "load", str(india), "--reason", "r" * 1001)
    assert long.exit_code == 2 and "--reason: over 1000" in long.stderr, long.output
    far = run("registry", "load", str(india), "--reason", "far", "--effective-from", "9999-12-31")
    assert far.exit_code == 2 and "--effective-from" in far.stderr, far.output
    assert "r-fake" not in run("registry", "history").stdout


def test_registry_check_refuses_zone_ids_and_unknown_region_providers(
    run: Invoke, tmp_path: Path
) -> None:
    # Found in review: both files were "valid", and then classified by the order of the file
    # (a zone id made a second range for the same addresses) or not at all (a typo in a
    # region's providers); an IP literal with a trailing dot was never matched as an IP.
    lux = REGISTRY_DATA / "luxembourg.yaml"
    data = yaml.safe_load(lux.read_text())
    data["endpoints"].append({"cidr": "2001:db8:42::%eth0/48", "facility": "openai-us"})
    data["regions"][0]["providers"] = ["aws_bedrok"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    refused = run("registry", "check", str(bad))
    assert refused.exit_code == 2, refused.output
    n = len(data["endpoints"]) - 1
    assert f"{bad}: endpoints.{n}: cidr: 2001:db8:42::%eth0/48 has a zone id" in refused.stderr
    assert f"{bad}: regions.0.providers.0: unknown provider 'aws_bedrok'" in refused.stderr
    out = run("registry", "classify", "x", "--host", "10.42.7.9.", "--file", str(lux)).stdout
    assert "tier=sovereign rule=ip:10.42.7.0/24" in out


def test_a_load_behind_a_scheduled_change_is_refused_unless_asked(
    run: Invoke, pool: ClientPool, tmp_path: Path
) -> None:
    # Found in review: a load with a change scheduled after it was recorded and reported as in
    # force, then replaced by the scheduled one when it came due.
    # Versions in one reporting currency: the store holds usage, under which it cannot change.
    pool.get().command("TRUNCATE TABLE registry_changes")
    india, lux = REGISTRY_DATA / "india.yaml", tmp_path / "tomorrow.yaml"
    data = yaml.safe_load(india.read_text())
    data["country_name"] = "India, tomorrow"
    lux.write_text(yaml.safe_dump(data, sort_keys=False))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    base = run("registry", "load", str(india), "--reason", "base", "--author", "a")
    assert base.exit_code == 0, base.output
    ahead = run("registry", "load", str(lux), "--reason", "lux tomorrow", "--author", "bo",
                "--effective-from", tomorrow)  # fmt: skip
    assert ahead.exit_code == 0, ahead.output
    data = yaml.safe_load(india.read_text())
    data["country_name"] = "India, edited"
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        refused = run("registry", "load", str(edited), "--reason", "fix now", "--author", "cy")
        assert refused.exit_code == 2, refused.output
        lux_version = load(lux)[0].version
        assert f"{lux_version} from " in refused.stderr and "bo: lux tomorrow" in refused.stderr
        assert "--before-scheduled" in refused.stderr and "Traceback" not in refused.output
        assert "fix now" not in run("registry", "history").stdout
        knowingly = run("registry", "load", str(edited), "--reason", "fix now", "--author", "cy",
                        "--before-scheduled")  # fmt: skip
        assert knowingly.exit_code == 0 and "in force from" in knowingly.stdout, knowingly.output
        again = run("registry", "load", str(lux), "--reason", "again", "--effective-from",
                    tomorrow)  # fmt: skip
        assert again.exit_code == 0, again.output
        assert f"{lux_version} is already the version in force from" in again.stdout
    finally:  # the other tests of this module load "now": nothing left scheduled
        pool.get().command("TRUNCATE TABLE registry_changes")


def broken_registries(text: str) -> list[tuple[str, str]]:
    """The registry `text` broken two ways the loader once took (found in review), each with
    the reason it is now refused for: a key written twice (`country: IN, country: SG` was
    classified as SG) and an impossible date (`2026-02-30`, a traceback or a 500)."""
    old = "  - {id: yotta-navi-mumbai, operator: yotta, country: IN,"
    broken = [
        (text.replace("{by: 2026-12-31,", "{by: 2026-02-30,"),
         "not a valid date: '2026-02-30' (day is out of range for month)"),
        (text.replace(old, old + " country: SG,"), "duplicate key 'country' (first at line"),
    ]  # fmt: skip
    assert all(bad != text for bad, _ in broken)
    return broken


def test_registry_check_refuses_an_impossible_date_or_a_repeated_key(
    run: Invoke, tmp_path: Path
) -> None:
    # Found in review: a date-shaped `2026-02-30` was a traceback (exit 1); `country: IN,
    # country: SG` passed as SG.
    for bad, reason in broken_registries((REGISTRY_DATA / "india.yaml").read_text()):
        path = tmp_path / "bad.yaml"
        path.write_text(bad)
        refused = run("registry", "check", str(path))
        assert refused.exit_code == 2, refused.output
        assert f"{path}: line " in refused.stderr and reason in refused.stderr, refused.stderr
        assert "Traceback" not in refused.output


def test_a_process_starts_with_a_configured_file_it_cannot_read(
    settings: CommonSettings, pool: ClientPool, tmp_path: Path
) -> None:
    # Found in review: bootstrap only compares a configured file with the version in force and
    # must not stop on one it refuses, but an impossible date raised a plain ValueError: every
    # process's start failed. And a version stored with a repeated key (accepted before it was
    # refused) must still be read back, so a store holding one starts.
    client = pool.get()
    india = REGISTRY_DATA / "india.yaml"
    text = india.read_text()
    old = "  - {id: yotta-navi-mumbai, operator: yotta, country: IN,"
    twice = text.replace(old, old + " country: SG,")
    stored = parse(twice, "as an earlier release stored it", stored=True)
    bad_date = tmp_path / "bad-date.yaml"
    bad_date.write_text(text.replace("{by: 2026-12-31,", "{by: 2026-02-30,"))
    repeated = tmp_path / "repeated.yaml"
    repeated.write_text(twice)
    env = {
        "TRACKER_DATA_DIR": str(settings.data_dir),
        "TRACKER_CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }
    cases = [(load(india)[0], text, bad_date), (stored, twice, repeated)]
    try:
        for in_force, registry_text, configured in cases:
            registry_store.activate(
                client, in_force, registry_text, author="t", reason="t", source="t"
            )
            with_file = {**env, "TRACKER_REGISTRY_PATH": str(configured)}
            started = CliRunner().invoke(app, ["key", "list"], env=with_file)
            assert started.exit_code == 0, (configured.name, started.output, started.exception)
            found = registry_store.in_force(client)
            assert found is not None and found[0].version == in_force.version
    finally:  # the other tests of this module load "now": nothing left behind
        client.command("TRUNCATE TABLE registry_changes")
