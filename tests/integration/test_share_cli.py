"""`tracker share`: the headline from the CLI, as classified then and now, same SQL as the API."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker.classify import Classifier
from tracker.cli import app
from tracker.clickhouse import ClientPool
from tracker.demo import generate
from tracker.metrics import Basis, headline, hour_ceil
from tracker.registry import load, record_version
from tracker.settings import CommonSettings


def test_cli_share_then_and_now(
    settings: CommonSettings, pool: ClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = load()[0]
    records = list(generate(registry, days=20, end=datetime(2026, 3, 1, tzinfo=UTC).date()))
    Writer(pool.get()).write(Processor(Classifier(registry)).process_records(records).rows)
    monkeypatch.setenv("TRACKER_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    runner = CliRunner()
    args = [
        "share",
        "--from",
        "2026-02-01",
        "--to",
        "2026-03-01",
        "--data-dir",
        str(settings.data_dir),
    ]
    then = runner.invoke(app, [*args, "--basis", "tokens"])
    assert then.exit_code == 0, then.output
    figure = json.loads(then.output)
    api = headline(
        pool.get(), Basis.tokens, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert figure["domestic_share"] == pytest.approx(api.domestic_share)
    assert figure["records"] == api.records > 0
    now = runner.invoke(app, [*args, "--basis", "tokens", "--as-classified", "now"])
    assert now.exit_code == 0, now.output
    # Same registry version in force: re-classifying changes nothing.
    assert json.loads(now.output)["domestic_share"] == pytest.approx(figure["domestic_share"])
    # Without --to: the API's default end, now rounded up to the hour (it was an hour later).
    asked = datetime.now(UTC)
    default = runner.invoke(app, args[:3] + args[5:])
    assert default.exit_code == 0, default.output
    ends = {hour_ceil(asked).isoformat(), hour_ceil(datetime.now(UTC)).isoformat()}
    assert json.loads(default.output)["to"] in ends  # two only when an hour turned meanwhile
    bad = runner.invoke(app, [*args, "--basis", "vibes"])
    assert bad.exit_code == 2, bad.output
    shown = " ".join(bad.output.replace("│", " ").split())  # typer's box wraps its message
    assert "'--basis'" in shown and "'requests', 'tokens', 'cost', 'energy'" in shown, shown


def test_cli_share_refuses_an_agency_not_in_the_registry(
    settings: CommonSettings, pool: ClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: a mistyped --agency printed a null share with exit code 0.
    registry, text = load()
    record_version(pool.get(), registry, text, author="test", reason="share cli")
    monkeypatch.setenv("TRACKER_CLICKHOUSE_DATABASE", settings.clickhouse_database)
    args = ["share", "--from", "2026-02-01", "--to", "2026-03-01",
            "--data-dir", str(settings.data_dir)]  # fmt: skip
    typo = CliRunner().invoke(app, [*args, "--agency", "in-sbi", "--agency", "in-nope"])
    assert typo.exit_code == 2 and "no usage landed under it: in-nope" in typo.output, typo.output
    known = CliRunner().invoke(app, [*args, "--agency", registry.agencies[0].id])
    assert known.exit_code == 0, known.output
