"""Every panel and variable query of the committed dashboards runs on chdb over a seeded
dataset, expanded as Grafana and the ClickHouse plugin would; headline panels return the
API's figures for the same filters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from dashboards.build import GENERATED
from dashboards.expand import ALL, Context, Variable, expand
from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import demo
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.metrics import Basis, headline
from tracker.registry import load, record_version

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


END_DAY = date(2026, 3, 1)
DAYS = 30
SEED_START = datetime(2026, 1, 30, tzinfo=UTC)
# Deliberately off the hour on both ends: the API rounds from down and to up.
FROM = datetime(2026, 2, 3, 10, 37, 12, 345000, tzinfo=UTC)
TO = datetime(2026, 2, 20, 17, 5, 0, 1000, tzinfo=UTC)


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(GENERATED.glob("*.json"))}


DASHBOARDS = load_dashboards()


def panel(uid: str, title: str) -> dict[str, Any]:
    matches = [p for p in DASHBOARDS[uid]["panels"] if p.get("title") == title]
    assert len(matches) == 1, f"{uid}: {len(matches)} panels titled {title!r}"
    found: dict[str, Any] = matches[0]
    return found


def sql_of(uid: str, title: str, ref: str = "A") -> str:
    targets = [t for t in panel(uid, title)["targets"] if t["refId"] == ref]
    assert len(targets) == 1
    return str(targets[0]["rawSql"])


@pytest.fixture(scope="module")
def seeded(pool: ClientPool) -> ClientPool:
    registry, text = load()
    records = list(demo.generate(registry, days=DAYS, end=END_DAY))
    processor = Processor(Classifier(registry))
    writer = Writer(pool.get())
    assert writer.write(processor.process_records(records).rows).inserted == len(records)
    rejected = processor.process_message(b"this is not json", partition=0, offset=41)
    rejected.rejections += processor.process_message(
        b'[{"record_id": "x", "agency_id": "in-cbse"}]', partition=0, offset=42
    ).rejections
    assert len(rejected.rejections) >= 2
    writer.write_rejections("usage.v1", {(0, 41): rejected.rejections})
    record_version(pool.get(), registry, text, "test", "seed")
    return pool


@pytest.fixture(scope="module")
def api(seeded: ClientPool) -> Iterator[TestClient]:
    with TestClient(create_app(seeded)) as client:
        yield client


def options(pool: ClientPool, column: str) -> list[str]:
    rows = pool.query_rows(f"SELECT DISTINCT {column} FROM usage_hourly ORDER BY {column}")
    return [str(r[0]) for r in rows]


def context(
    pool: ClientPool,
    start: datetime = FROM,
    end: datetime = TO,
    interval: timedelta = timedelta(hours=1),
    **selected: list[str],
) -> Context:
    """Dashboard state: every filter variable on "All" unless selected."""
    columns = {"agency": "agency_id", "sector": "sector", "provider": "provider", "tier": "tier"}
    variables = {
        name: Variable(selected=selected.get(name, [ALL]), options=options(pool, column))
        for name, column in columns.items()
    }
    variables["target"] = Variable(selected=selected.get("target", ["0.7"]))
    variables["record_id"] = Variable(selected=selected.get("record_id", [""]))
    return Context(start=start, end=end, interval=interval, variables=variables)


def run(pool: ClientPool, sql: str, ctx: Context, **settings: Any) -> list[dict[str, Any]]:
    result = pool.get().query(expand(sql, ctx), settings=settings or None)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def all_queries() -> Iterator[tuple[str, str, str]]:
    for uid, d in DASHBOARDS.items():
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                yield uid, f"variable {v['name']}", str(v["query"])
        for p in d["panels"]:
            for t in p.get("targets", []):
                yield uid, f"{p['title']} [{t['refId']}]", str(t["rawSql"])


QUERIES = list(all_queries())


def test_dashboards_have_queries() -> None:
    assert set(DASHBOARDS) == {"ist-national", "ist-agency", "ist-auditor", "ist-pipeline"}
    assert len(QUERIES) > 30


@pytest.mark.parametrize(("uid", "name", "sql"), QUERIES, ids=[f"{u}:{n}" for u, n, _ in QUERIES])
def test_every_query_runs_and_returns_rows(
    seeded: ClientPool, uid: str, name: str, sql: str
) -> None:
    # A range covering both the seeded usage and "now", when records and rejects landed.
    # The agency dashboard's agency variable is single-valued: no "All" there.
    agency = {"agency": options(seeded, "agency_id")[:1]} if uid == "ist-agency" else {}
    end = datetime.now(UTC) + timedelta(hours=1)
    ctx = context(seeded, SEED_START, end, timedelta(days=1), **agency)
    rows = run(seeded, sql, ctx)
    assert rows, f"{uid} / {name} returned no rows on the seeded dataset"


def test_every_query_runs_with_filters_selected(seeded: ClientPool) -> None:
    agency = options(seeded, "agency_id")[3]
    ctx = context(
        seeded,
        SEED_START,
        datetime.now(UTC) + timedelta(hours=1),
        agency=[agency],
        sector=options(seeded, "sector")[:2],
        provider=["sarvam", "openai", "azure_openai"],
        tier=["sovereign", "offshore"],
        record_id=["demo-o'brien"],  # a quote must be escaped, not break the SQL
    )
    for uid, name, sql in QUERIES:
        run(seeded, sql, ctx)  # raises on any SQL error
        assert "$" not in expand(sql, ctx), f"{uid} / {name}"


def share_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1
    return rows[0]


def assert_same_share(row: dict[str, Any], api_body: dict[str, Any]) -> None:
    assert api_body["records"] > 0
    assert row["records"] == api_body["records"]
    for key in ("domestic_share", "sovereign_share", "unknown_share"):
        assert row[key] == pytest.approx(api_body[key], rel=1e-12), key
    for tier, value in api_body["totals"].items():
        assert row[tier] == pytest.approx(value, rel=1e-12), tier


def api_share(api: TestClient, basis: str, agency: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"from": FROM.isoformat(), "to": TO.isoformat(), "basis": basis}
    if agency:
        params["agency"] = agency
    response = api.get("/v1/share", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("title", "basis"),
    [
        ("Domestic share (requests)", "requests"),
        ("Sovereign share (requests)", "requests"),
        ("Unknown share (requests)", "requests"),
        ("Requests", "requests"),
        ("Domestic share (tokens)", "tokens"),
        ("Domestic share (cost)", "cost"),
    ],
)
def test_national_headline_equals_api(
    seeded: ClientPool, api: TestClient, title: str, basis: str
) -> None:
    row = share_row(run(seeded, sql_of("ist-national", title), context(seeded)))
    assert_same_share(row, api_share(api, basis))


@pytest.mark.parametrize(
    ("title", "basis"),
    [
        ("Domestic share (requests)", "requests"),
        ("Sovereign share (requests)", "requests"),
        ("Domestic share (cost)", "cost"),
        ("Requests", "requests"),
        ("Cost (reporting currency)", "cost"),
    ],
)
def test_agency_headline_equals_api(
    seeded: ClientPool, api: TestClient, title: str, basis: str
) -> None:
    for agency in options(seeded, "agency_id")[:5]:
        ctx = context(seeded, agency=[agency])
        row = share_row(run(seeded, sql_of("ist-agency", title), ctx))
        assert_same_share(row, api_share(api, basis, agency))


def test_headline_with_filters_equals_metrics(seeded: ClientPool) -> None:
    sectors = options(seeded, "sector")[1:4]
    providers = ["sarvam", "azure_openai", "openai", "anthropic", "self_hosted"]
    tiers = ["sovereign", "onshore", "unknown"]
    ctx = context(seeded, sector=sectors, provider=providers, tier=tiers)
    row = share_row(run(seeded, sql_of("ist-national", "Domestic share (requests)"), ctx))
    start = FROM.replace(minute=0, second=0, microsecond=0)
    end = TO.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    filters = {"sector": sectors, "provider": providers, "tier": tiers}
    share = headline(seeded.get(), Basis.requests, start, end, filters)
    assert share.records > 0
    assert row["records"] == share.records
    assert row["domestic_share"] == pytest.approx(share.domestic_share, rel=1e-12)
    assert row["unknown"] == pytest.approx(share.unknown, rel=1e-12)
    # and the filters really filtered: fewer records than with everything on "All"
    everything = share_row(run(seeded, sql_of("ist-national", "Requests"), context(seeded)))
    assert row["records"] < everything["records"]


def test_headline_does_not_depend_on_server_time_zone(seeded: ClientPool) -> None:
    """India is UTC+05:30: flooring `from` to the hour in the server's zone would move it by
    half an hour. The panel floors in UTC, like the API."""
    sql = sql_of("ist-national", "Domestic share (requests)")
    utc = share_row(run(seeded, sql, context(seeded)))
    kolkata = share_row(run(seeded, sql, context(seeded), session_timezone="Asia/Kolkata"))
    assert kolkata == utc


def test_sector_breakdown_equals_headline_per_sector(seeded: ClientPool) -> None:
    rows = run(seeded, sql_of("ist-national", "Domestic share by sector"), context(seeded))
    assert len(rows) == len(options(seeded, "sector"))
    start = FROM.replace(minute=0, second=0, microsecond=0)
    end = TO.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    for row in rows:
        share = headline(seeded.get(), Basis.requests, start, end, {"sector": [row["k"]]})
        assert row["records"] == share.records
        assert row["domestic_share"] == pytest.approx(share.domestic_share, rel=1e-12)


def test_trend_buckets_equal_headline_per_day(seeded: ClientPool) -> None:
    start, end = datetime(2026, 2, 5, tzinfo=UTC), datetime(2026, 2, 12, tzinfo=UTC)
    ctx = context(seeded, start, end, timedelta(days=1))
    rows = run(seeded, sql_of("ist-national", "Domestic share vs target"), ctx)
    assert [r["k"].replace(tzinfo=UTC) for r in rows] == [
        start + timedelta(days=i) for i in range(7)
    ]
    for row in rows:
        day = row["k"].replace(tzinfo=UTC)
        share = headline(seeded.get(), Basis.requests, day, day + timedelta(days=1))
        assert row["domestic_share"] == pytest.approx(share.domestic_share, rel=1e-12)
    target = run(seeded, sql_of("ist-national", "Domestic share vs target", "B"), ctx)
    assert [r["target"] for r in target] == [0.7, 0.7]


def test_auditor_reconciles_raw_with_rollup(seeded: ClientPool) -> None:
    row = share_row(run(seeded, sql_of("ist-auditor", "Raw - rollup"), context(seeded)))
    assert row["raw_records"] > 0
    assert row["difference"] == 0
    raw = seeded.query_rows(
        "SELECT count() FROM usage_raw WHERE occurred_at >= {f:DateTime64(3)} "
        "AND occurred_at < {t:DateTime64(3)}",
        {"f": FROM.replace(minute=0, second=0, microsecond=0),
         "t": TO.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)},
    )[0][0]  # fmt: skip
    assert row["raw_records"] == raw


def test_auditor_finds_one_record_by_id(seeded: ClientPool) -> None:
    record_id, agency = seeded.query_rows(
        "SELECT record_id, agency_id FROM usage_raw WHERE occurred_at >= {f:DateTime64(3)} "
        "ORDER BY record_id LIMIT 1",
        {"f": FROM},
    )[0]
    ctx = context(seeded, record_id=[record_id])
    rows = run(seeded, sql_of("ist-auditor", "Raw usage (latest 1000)"), ctx)
    assert [(r["record_id"], r["agency_id"]) for r in rows] == [(record_id, agency)]
    everything = run(seeded, sql_of("ist-auditor", "Raw usage (latest 1000)"), context(seeded))
    assert len(everything) == 1000


def test_pipeline_counts_rejects_and_landing(seeded: ClientPool) -> None:
    ctx = context(seeded, datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC))
    rate = share_row(run(seeded, sql_of("ist-pipeline", "Reject rate"), ctx))
    landed = seeded.query_rows("SELECT count() FROM usage_raw")[0][0]
    rejects = seeded.query_rows("SELECT count() FROM usage_rejects")[0][0]
    assert (rate["landed"], rate["rejects"]) == (landed, rejects)
    assert rate["reject_rate"] == pytest.approx(rejects / (rejects + landed))
