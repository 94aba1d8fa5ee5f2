"""Aggregate endpoints checked against sums computed independently, in Python, from the very
records that were landed; small-cell suppression; parameter validation."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from pipeline.processor import Processor
from pipeline.writer import Writer
from tests.integration.test_api_support import (
    SMALL_DAY,
    Seeded,
    api_settings,
    app,
    bearer,
    seed,
)
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import MAX_NAME_LEN, MAX_REGION_LEN, UsageRecord
from tracker.registry import load, parse
from tracker.settings import CommonSettings

JUNE = {"from": "2026-06-01", "to": "2026-07-01"}
JUNE_START, JUNE_END = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
SMALL = {"from": SMALL_DAY.isoformat(), "to": (SMALL_DAY + timedelta(days=1)).isoformat()}


# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


@pytest.fixture(scope="module")
def seeded(pool: ClientPool) -> Seeded:
    return seed(pool)


@pytest.fixture(scope="module")
def client(pool: ClientPool, settings: CommonSettings, seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(app(pool, settings)) as c:
        yield c


@pytest.fixture(scope="module")
def auditor(seeded: Seeded) -> dict[str, str]:
    return bearer(seeded.keys["auditor"])


def june(seeded: Seeded) -> list[UsageRecord]:
    return [r for r in seeded.records if JUNE_START <= r.occurred_at < JUNE_END]


def tier_of(seeded: Seeded) -> Callable[[UsageRecord], str]:
    classifier = Classifier(seeded.registry)
    return lambda r: classifier.classify(r.provider, r.region, r.endpoint_host).tier.value


def close(a: float | None, b: float, rel: float = 1e-9) -> bool:
    return a is not None and abs(a - b) <= rel * max(1.0, abs(b))


def test_daily_series_matches_independent_sums(
    client: TestClient, seeded: Seeded, auditor: dict[str, str]
) -> None:
    tier = tier_of(seeded)
    total: dict[str, float] = defaultdict(float)
    domestic: dict[str, float] = defaultdict(float)
    for r in june(seeded):
        day = r.occurred_at.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
        total[day] += r.request_count
        if tier(r) in ("sovereign", "onshore"):
            domestic[day] += r.request_count
    body = client.get("/v1/timeseries", params={**JUNE, "interval": "day"}, headers=auditor)
    buckets = body.json()["buckets"]
    assert [b["key"] for b in buckets] == sorted(total)
    for b in buckets:
        assert b["total"] == total[b["key"]]
        assert close(b["domestic_share"], domestic[b["key"]] / total[b["key"]])


@pytest.mark.parametrize("interval", ["hour", "week", "month"])
def test_every_interval_adds_up_to_the_headline(
    client: TestClient, auditor: dict[str, str], interval: str
) -> None:
    for basis in ("requests", "tokens", "cost", "energy"):
        params = {**JUNE, "interval": interval, "basis": basis}
        buckets = client.get("/v1/timeseries", params=params, headers=auditor).json()["buckets"]
        head = client.get("/v1/share", params={**JUNE, "basis": basis}, headers=auditor).json()
        assert close(sum(b["total"] for b in buckets), head["totals"]["total"], 1e-9)
        if interval == "week":
            assert all(datetime.fromisoformat(b["key"]).weekday() == 0 for b in buckets)


def test_sector_breakdown_by_tokens(
    client: TestClient, seeded: Seeded, auditor: dict[str, str]
) -> None:
    sector = {a.id: a.sector for a in seeded.registry.agencies}
    expected: dict[str, float] = defaultdict(float)
    for r in june(seeded):
        expected[sector[r.agency_id]] += r.input_tokens + r.output_tokens
    body = client.get("/v1/breakdown/sector", params={**JUNE, "basis": "tokens"}, headers=auditor)
    cells = {c["key"]: c["total"] for c in body.json()["cells"]}
    assert cells == expected


@pytest.mark.parametrize(
    "dimension", ["agency", "sector", "channel", "provider", "model", "region", "tier"]
)
def test_every_breakdown_adds_up(
    client: TestClient, auditor: dict[str, str], dimension: str
) -> None:
    head = client.get("/v1/share", params=JUNE, headers=auditor).json()
    r = client.get(f"/v1/breakdown/{dimension}", params={**JUNE, "limit": 1000}, headers=auditor)
    cells = r.json()["cells"]
    assert sum(c["total"] for c in cells) == head["totals"]["total"]
    assert [c["total"] for c in cells] == sorted((c["total"] for c in cells), reverse=True)


def test_cost_of_the_cognitive_layer(
    client: TestClient, seeded: Seeded, auditor: dict[str, str]
) -> None:
    fx = seeded.registry.fx_to_reporting
    rows = june(seeded)
    cost = sum(float(r.cost * fx[r.currency]) for r in rows if r.cost is not None and r.currency)
    requests = sum(r.request_count for r in rows)
    cost_requests = sum(r.request_count for r in rows if r.cost is not None and r.currency)
    energy = sum(r.energy_wh or 0.0 for r in rows)
    body = client.get("/v1/cost", params={**JUNE, "group_by": "tier"}, headers=auditor).json()
    total = body["total"]
    assert body["days"] == 30 and body["currency"] == "INR" and total["exact"] is True
    assert close(total["cost"], cost, 1e-9) and total["requests"] == requests
    # Over the requests that reported a cost; the others are estimated at that mean.
    assert total["cost_reported_requests"] == cost_requests
    assert close(total["cost_per_inference"], cost / cost_requests)
    assert close(total["inferences_per_day"], requests / 30)
    assert close(total["operating_cost_per_day"], cost / cost_requests * requests / 30)
    assert close(total["energy_wh"], energy, 1e-9)
    assert sum(g["requests"] for g in body["groups"]) == requests
    # Only domestic demo routes report energy: energy per inference is over those requests.
    tier = tier_of(seeded)
    reported = sum(r.request_count for r in rows if r.energy_wh is not None)
    assert total["energy_reported_requests"] == reported
    assert close(total["wh_per_inference"], energy / reported)
    assert {g["key"] for g in body["groups"] if g["energy_wh"]} <= {"sovereign", "onshore"}
    assert any(tier(r) == "offshore" for r in rows)


def weighted_quantile(pairs: list[tuple[int, int]], q: float) -> float:
    pairs = sorted(pairs)
    total = sum(w for _, w in pairs)
    acc = 0
    for v, w in pairs:
        acc += w
        if acc >= q * total:
            return float(v)
    return float(pairs[-1][0])


def test_provider_comparison(client: TestClient, seeded: Seeded, auditor: dict[str, str]) -> None:
    tier = tier_of(seeded)
    origin = {"sovereign": "domestic", "onshore": "domestic", "offshore": "foreign"}
    groups: dict[tuple[str, str], list[UsageRecord]] = defaultdict(list)
    for r in june(seeded):
        groups[(r.provider, origin.get(tier(r), "unknown"))].append(r)
    body = client.get("/v1/providers", params=JUNE, headers=auditor).json()
    got = {(p["provider"], p["origin"]): p for p in body["providers"]}
    assert set(got) == set(groups)
    for key, rows in groups.items():
        p = got[key]
        req = sum(r.request_count for r in rows)
        ok = sum(r.request_count for r in rows if r.status.value == "ok")
        tokens = sum(r.input_tokens + r.output_tokens for r in rows)
        assert p["requests"] == req and close(p["success_rate"], ok / req)
        assert p["tokens"] == tokens
        lat = [(r.latency_ms, r.request_count) for r in rows if r.latency_ms is not None]
        # The mean is weighted by requests as the percentiles are (it was per record before).
        mean = sum(v * w for v, w in lat) / sum(w for _, w in lat)
        assert close(p["latency_mean_ms"], mean, 1e-9)
        # t-digest is approximate: within 5% of the exact weighted percentile.
        assert close(p["latency_p50_ms"], weighted_quantile(lat, 0.5), 0.05)
        assert close(p["latency_p95_ms"], weighted_quantile(lat, 0.95), 0.05)
    origins = {o["origin"]: o for o in body["origins"]}
    assert set(origins) == {"domestic", "foreign", "unknown"}
    for name, o in origins.items():
        assert o["requests"] == sum(v["requests"] for (_, og), v in got.items() if og == name)


def test_public_small_cells_are_withheld_with_a_complement(
    client: TestClient, auditor: dict[str, str]
) -> None:
    public = client.get("/v1/breakdown/agency", params=SMALL).json()["cells"]
    shown = {c["key"]: c for c in public}
    assert set(shown) == {"in-sbi", "in-cbse", "in-aiims-delhi"}
    assert shown["in-aiims-delhi"]["suppressed"] and shown["in-aiims-delhi"]["total"] is None
    # 12 records would pass the threshold, but with the national total published it would
    # give away the 3-record cell by subtraction: withheld too.
    assert shown["in-cbse"]["suppressed"] and shown["in-cbse"]["records"] is None
    assert not shown["in-sbi"]["suppressed"] and shown["in-sbi"]["records"] == 30
    full = client.get("/v1/breakdown/agency", params=SMALL, headers=auditor).json()["cells"]
    assert not any(c["suppressed"] for c in full)
    assert {c["key"]: c["records"] for c in full} == {
        "in-sbi": 30,
        "in-cbse": 12,
        "in-aiims-delhi": 3,
    }


def test_public_headline_and_series_withhold_small_answers(client: TestClient) -> None:
    one = client.get("/v1/share", params={**SMALL, "agency": "in-aiims-delhi"}).json()
    assert one["suppressed"] and one["domestic_share"] is None and one["records"] is None
    everyone = client.get("/v1/share", params=SMALL).json()
    assert not everyone["suppressed"] and everyone["records"] == 45
    hours = client.get("/v1/timeseries", params={**SMALL, "interval": "hour"}).json()["buckets"]
    assert all(b["suppressed"] or b["records"] >= 10 for b in hours)
    cost = client.get("/v1/cost", params={**SMALL, "agency": "in-aiims-delhi"}).json()
    assert cost["total"]["suppressed"] and cost["total"]["cost"] is None
    prov = client.get("/v1/providers", params={**SMALL, "agency": "in-aiims-delhi"}).json()
    assert all(p["suppressed"] for p in prov["providers"] + prov["origins"])


def test_a_limit_does_not_undo_the_complement(client: TestClient) -> None:
    # Found in review: limit=2 left the 3-record cell out, showed the 12-record one, and the
    # published total minus the two shown gave the hidden one.
    cut = client.get("/v1/breakdown/agency", params={**SMALL, "limit": 2}).json()["cells"]
    assert [c["key"] for c in cut] == ["in-sbi", "in-cbse"]
    assert not cut[0]["suppressed"] and cut[1]["suppressed"] and cut[1]["records"] is None
    one = client.get("/v1/breakdown/agency", params={**SMALL, "limit": 1}).json()["cells"]
    assert len(one) == 1 and not one[0]["suppressed"]  # two cells left out: 36 in all


def test_cost_groups_left_out_past_the_limit_count_as_withheld(
    client: TestClient, auditor: dict[str, str]
) -> None:
    # Found in review: /v1/cost?group_by= stopped at 1,000 groups without saying so, and the
    # groups past it were not counted as withheld: the published total minus the groups shown
    # gave a small group left out alone. The same rule as the breakdown's `limit` now.
    full = client.get("/v1/cost", params={**SMALL, "group_by": "agency"}, headers=auditor)
    assert [g["key"] for g in full.json()["groups"]] == ["in-sbi", "in-cbse", "in-aiims-delhi"]
    cut = client.get("/v1/cost", params={**SMALL, "group_by": "agency", "limit": 2}).json()
    assert [g["key"] for g in cut["groups"]] == ["in-sbi", "in-cbse"]
    assert not cut["groups"][0]["suppressed"] and cut["groups"][1]["suppressed"]
    assert cut["groups"][1]["requests"] is None and not cut["total"]["suppressed"]
    one = client.get("/v1/cost", params={**SMALL, "group_by": "agency", "limit": 1}).json()
    assert len(one["groups"]) == 1 and not one["groups"][0]["suppressed"]
    keyed = client.get("/v1/cost", params={**SMALL, "group_by": "agency", "limit": 2},
                       headers=auditor).json()  # fmt: skip
    assert not any(g["suppressed"] for g in keyed["groups"]) and len(keyed["groups"]) == 2
    too_many = client.get("/v1/cost", params={**SMALL, "group_by": "agency", "limit": 1001})
    assert too_many.status_code == 422 and "limit" in too_many.text


NESTED_DAY = datetime(2026, 7, 14, tzinfo=UTC)  # between the demo days and SMALL_DAY


def test_providers_are_withheld_within_their_origin(
    client: TestClient, pool: ClientPool, seeded: Seeded
) -> None:
    # Found in review: sarvam 30 and krutrim 3 (domestic), openai 12 (foreign). The complement
    # of krutrim fell on openai, and domestic (published) - sarvam gave krutrim back.
    served = [("sarvam", None, None, 30), ("krutrim", None, None, 3),
              ("openai", None, "api.openai.com", 12)]  # fmt: skip
    records = [
        UsageRecord(
            record_id=f"nested-{p}-{i}",
            gateway_id="gw-nested",
            agency_id="in-sbi",
            occurred_at=NESTED_DAY + timedelta(minutes=i),
            provider=p,
            model="m",
            region=region,
            endpoint_host=host,
        )
        for p, region, host, n in served
        for i in range(n)
    ]
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records(records).rows)
    day = {"from": NESTED_DAY.isoformat(), "to": (NESTED_DAY + timedelta(days=1)).isoformat()}
    body = client.get("/v1/providers", params=day).json()
    origins = {o["origin"]: o for o in body["origins"]}
    assert origins["domestic"]["records"] == 33 and origins["foreign"]["records"] == 12
    per = {p["provider"]: p for p in body["providers"]}
    assert per["krutrim"]["suppressed"] and per["sarvam"]["suppressed"]
    assert not per["openai"]["suppressed"] and per["openai"]["records"] == 12


PROVIDERS_CUT_DAY = datetime(2026, 7, 24, tzinfo=UTC)  # between TIER_DAY and SMALL_DAY


def test_providers_past_the_limit_are_left_out_and_count_as_withheld(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    # Found in review: /v1/providers had no cap; provider names come from the records, so one
    # answer could hold any number of cells. It now stops at `limit` per origin (at most
    # 1,000), and a small provider left out alone is covered by the complement in its origin.
    served = [("sarvam", 30), ("krutrim", 12), ("bhashini", 3)]
    records = [
        UsageRecord(record_id=f"cut-{p}-{i}", gateway_id="gw-cut", agency_id="in-sbi",
                    occurred_at=PROVIDERS_CUT_DAY + timedelta(minutes=i), provider=p,
                    model="m", latency_ms=100 + i)
        for p, n in served
        for i in range(n)
    ]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records(records).rows)
    day = {
        "from": PROVIDERS_CUT_DAY.isoformat(),
        "to": (PROVIDERS_CUT_DAY + timedelta(days=1)).isoformat(),
    }
    full = client.get("/v1/providers", params=day, headers=auditor).json()
    assert [p["provider"] for p in full["providers"]] == ["sarvam", "krutrim", "bhashini"]
    keyed = client.get("/v1/providers", params={**day, "limit": 2}, headers=auditor).json()
    assert [(p["provider"], p["records"]) for p in keyed["providers"]] == [
        ("sarvam", 30),
        ("krutrim", 12),
    ]
    # The percentiles are read for the providers shown.
    assert keyed["providers"][0]["latency_p50_ms"] is not None
    assert keyed["origins"] == full["origins"]
    cut = client.get("/v1/providers", params={**day, "limit": 2}).json()["providers"]
    assert [p["provider"] for p in cut] == ["sarvam", "krutrim"]
    assert not cut[0]["suppressed"] and cut[1]["suppressed"] and cut[1]["records"] is None
    one = client.get("/v1/providers", params={**day, "limit": 1}).json()["providers"]
    assert [(p["provider"], p["suppressed"]) for p in one] == [("sarvam", False)]
    too_many = client.get("/v1/providers", params={**day, "limit": 1001})
    assert too_many.status_code == 422 and "limit" in too_many.text


TIER_DAY = datetime(2026, 7, 20, tzinfo=UTC)  # between NESTED_DAY and SMALL_DAY


def test_the_tier_breakdown_withholds_what_the_headline_withholds(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    # Found in review: the tier breakdown withheld a 3-record tier while /v1/share published
    # that tier's figure for the same range. A tier inside a cell of k records or more is
    # shown (docs/api.md), and the tier breakdown's cells are the headline's own tier figures.
    served = [("sarvam", None, None, 30), ("azure_openai", "centralindia", None, 15),
              ("openai", None, "api.openai.com", 20), ("unlisted-llm", None, None, 3)]  # fmt: skip
    second = TIER_DAY + timedelta(days=1)  # 3 records in all
    records = [
        UsageRecord(record_id=f"tiers-{day:%d}-{p}-{i}", gateway_id="gw-tiers",
                    agency_id="in-sbi", occurred_at=day + timedelta(minutes=i), provider=p,
                    model="m", region=region, endpoint_host=host)
        for day, tiers in ((TIER_DAY, served), (second, served[3:]))
        for p, region, host, n in tiers
        for i in range(n)
    ]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records(records).rows)
    for start, whole in ((TIER_DAY, 68), (second, 3)):
        day = {"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()}
        full = client.get("/v1/share", params=day, headers=auditor).json()
        assert full["records"] == whole
        headline = client.get("/v1/share", params=day).json()["totals"]
        cells = client.get("/v1/breakdown/tier", params=day).json()["cells"]
        assert len(cells) == len({p for p, *_ in (served if whole > 3 else served[3:])})
        for cell in cells:
            assert cell["total"] == headline[cell["key"]], (cell, headline)
            assert cell["suppressed"] == (whole < 10)
            if whole >= 10:
                assert cell["total"] == full["totals"][cell["key"]]


def test_threshold_is_configurable(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded
) -> None:
    with TestClient(app(pool, settings, min_cell_records=2)) as c:
        cells = c.get("/v1/breakdown/agency", params=SMALL).json()["cells"]
        assert not any(cell["suppressed"] for cell in cells)


def test_an_agency_removed_from_the_registry_keeps_its_history_selectable(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded, auditor: dict[str, str]
) -> None:
    # Found in review: after a registry version without in-aiims-delhi came into force, the
    # breakdown still listed its landed usage, but every filter on it was 422 "not in the
    # registry": its effective-dated history could no longer be selected.
    data = yaml.safe_load(load()[1])
    gone = next(a for a in data["agencies"] if a["id"] == "in-aiims-delhi")
    data["agencies"] = [a for a in data["agencies"] if a["id"] != "in-aiims-delhi"]
    without = parse(yaml.safe_dump(data, sort_keys=False), "without-aiims")
    assert gone["sector"] in {a.sector for a in seeded.registry.agencies}
    with TestClient(create_app(pool, api_settings(settings), registry=without)) as c:
        share = c.get("/v1/share", params={**SMALL, "agency": "in-aiims-delhi"}, headers=auditor)
        assert share.status_code == 200 and share.json()["records"] == 3, share.text
        usage = c.get("/v1/usage", params={**SMALL, "agency": "in-aiims-delhi"}, headers=auditor)
        assert usage.status_code == 200, usage.text
        typo = c.get("/v1/share", params={**SMALL, "agency": "in-aiims-dehli"}, headers=auditor)
        assert typo.status_code == 422 and "in-aiims-dehli" in typo.text, typo.text


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/v1/share", {"sector": "astrology"}, "astrology"),
        ("/v1/share", {"agency": "in-nowhere"}, "in-nowhere"),
        ("/v1/share", {"tier": "lunar"}, "tier"),
        ("/v1/share", {"agency": "bad value!"}, "agency"),
        ("/v1/share", {"agency": [f"a{i}" for i in range(101)]}, "agency"),
        ("/v1/breakdown/planet", {}, "dimension"),
        ("/v1/breakdown/sector", {"limit": 0}, "limit"),
        ("/v1/breakdown/sector", {"limit": 1001}, "limit"),
        (
            "/v1/timeseries",
            {"interval": "hour", "from": "2020-01-01", "to": "2026-01-01"},
            "buckets",
        ),
        ("/v1/timeseries", {"interval": "fortnight"}, "interval"),
        ("/v1/cost", {"group_by": "planet"}, "group_by"),
        ("/v1/providers", {"from": "2024-01-01", "to": "2026-01-01"}, "366"),
        ("/v1/share", {"from": "2026-02-01", "to": "2026-01-01"}, "before"),
        ("/v1/usage", {"limit": 20000}, "10000"),
        ("/v1/usage", {"cursor": "not-a-cursor"}, "cursor"),
        ("/v1/usage", {"format": "xlsx"}, "format"),
        ("/v1/audit", {"limit": 5000}, "limit"),
    ],
)
def test_bad_parameters_are_422_with_the_reason(
    client: TestClient, seeded: Seeded, path: str, params: dict[str, Any], reason: str
) -> None:
    r = client.get(path, params=params, headers=bearer(seeded.keys["admin"]))
    assert r.status_code == 422, r.text
    assert reason in r.text


def test_an_unknown_query_parameter_is_422_naming_it(client: TestClient, seeded: Seeded) -> None:
    # FastAPI ignores an undeclared parameter: `?agencies=` (for `agency`) answered the national
    # total as if filtered. Every GET route of the schema, path parameters filled in.
    fill = {"{dimension}": "agency", "{version}": seeded.registry.version,
            "{proposal_id}": "p-000000000000"}  # fmt: skip
    admin = bearer(seeded.keys["admin"])
    spec = client.get("/openapi.json").json()["paths"]
    paths = {p: ops["get"] for p, ops in spec.items() if "get" in ops}
    assert len(paths) >= 14, paths
    for template, operation in paths.items():
        path = template
        for name, value in fill.items():
            path = path.replace(name, value)
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        reply = client.get(path, params={"agencies": "in-moe", "tier": "sovereign"}, headers=admin)
        assert reply.status_code == 422, (path, reply.text)
        errors = reply.json()["detail"]
        unknown = [["query", "agencies"]] + ([] if "tier" in declared else [["query", "tier"]])
        assert [e["loc"] for e in errors] == unknown, (path, errors)
        assert "unknown query parameter" in errors[0]["msg"], errors
    # The declared parameters still pass, on a route whose filters come from a dependency.
    assert client.get("/v1/share", params={"agency": "in-moe", **JUNE}, headers=admin).is_success


def test_a_one_value_parameter_given_twice_is_422_naming_it(
    client: TestClient, seeded: Seeded
) -> None:
    # Found in review: FastAPI answered `?basis=tokens&basis=requests` with the last value (and
    # `from`, `interval`, `format` alike), silently. Every GET route of the schema.
    fill = {"{dimension}": "agency", "{version}": seeded.registry.version,
            "{proposal_id}": "p-000000000000"}  # fmt: skip
    admin = bearer(seeded.keys["admin"])
    spec = client.get("/openapi.json").json()["paths"]
    checked = 0
    for template, ops in spec.items():
        if "get" not in ops:
            continue
        path = template
        for name, value in fill.items():
            path = path.replace(name, value)
        for param in ops["get"].get("parameters", []):
            if param["in"] != "query":
                continue
            name, several = param["name"], "array" in json.dumps(param["schema"])
            reply = client.get(path, params=[(name, "1"), (name, "2")], headers=admin)
            detail = reply.json().get("detail") if reply.status_code == 422 else None
            errors = detail if isinstance(detail, list) else []
            twice = [e for e in errors if "more than once" in str(e.get("msg"))]
            if several:
                assert not twice, (path, name, errors)
            else:
                assert [e["loc"] for e in twice] == [["query", name]], (path, name, reply.text)
                checked += 1
    assert checked >= 30, checked
    # Filters take several values, as before.
    both = client.get("/v1/share", params=[("agency", "in-moe"), ("agency", "in-sbi")],
                      headers=admin)  # fmt: skip
    assert both.is_success, both.text


def test_a_time_at_the_edge_of_the_calendar_is_422_naming_it(
    client: TestClient, seeded: Seeded
) -> None:
    # Year 1 east of UTC and year 9999 west of it cannot be converted to UTC at all: an
    # OverflowError, answered 500 by every route taking a time (found in review).
    admin = bearer(seeded.keys["admin"])
    spec = client.get("/openapi.json").json()["paths"]
    checked = 0
    for path, operations in spec.items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            for name in sorted(names & {"from", "to", "at", "effective_from"}):
                for edge in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
                    url = path.replace("{proposal_id}", "p-000000000000").replace(
                        "{dimension}", "agency"
                    )
                    reply = client.request(method, url, params={name: edge}, headers=admin)
                    assert reply.status_code == 422, (method, path, name, reply.text)
                    assert name in str(reply.json()["detail"]), (path, reply.text)
                    checked += 1
    assert checked >= 2 * 12, checked  # every route that takes a time, both edges


def test_registry_and_freshness(client: TestClient, seeded: Seeded) -> None:
    body = client.get("/v1/registry").json()
    assert body["version"] == seeded.registry.version
    assert len(body["registry"]["agencies"]) == len(seeded.registry.agencies)
    fresh = client.get("/v1/freshness").json()
    newest = max(r.occurred_at for r in seeded.records).replace(minute=0)
    assert datetime.fromisoformat(fresh["latest_hour"]) == newest
    assert datetime.fromisoformat(fresh["latest_ingested_at"]) > datetime(2026, 1, 1, tzinfo=UTC)


# Names records may carry that are not identifiers: spaces, '+', quotes and SQL-looking text,
# letters outside ASCII, and the contract's full 256 characters.
NAMES_DAY = datetime(2026, 4, 14, tzinfo=UTC)
ODD_NAMES = ["Llama 3.1 70B Instruct", "gpt-4o+tools", "m" * MAX_NAME_LEN, "模型 ünï",
             "o'brien\\x\" ) OR 1=1; DROP TABLE usage_raw; --"]  # fmt: skip


def test_filters_accept_every_name_a_record_may_carry(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    # Found in review: /v1/breakdown/model listed "Llama 3.1 70B Instruct", and filtering on
    # it was a 422 (the filters took identifiers only, up to 128 characters).
    records = [
        UsageRecord(record_id=f"names-{j}-{i}", gateway_id="gw-names", agency_id="in-sbi",
                    occurred_at=NAMES_DAY + timedelta(minutes=i), provider=f"{name[:40]} co",
                    model=name, region="Zone 1 / west" if j % 2 else None, request_count=j + 1)
        for j, name in enumerate(ODD_NAMES)
        for i in range(12)
    ]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records(records).rows)
    day = {"from": NAMES_DAY.isoformat(), "to": (NAMES_DAY + timedelta(days=1)).isoformat()}
    cells = client.get("/v1/breakdown/model", params=day).json()["cells"]
    assert sorted(c["key"] for c in cells) == sorted(ODD_NAMES)
    for j, name in enumerate(ODD_NAMES):
        one = {**day, "model": name, "provider": f"{name[:40]} co"}
        share = client.get("/v1/share", params=one)
        assert share.status_code == 200, share.text
        assert share.json()["totals"]["total"] == 12 * (j + 1)  # bound as a value, never SQL
        series = client.get("/v1/timeseries", params={**one, "interval": "hour"})
        assert series.status_code == 200, series.text
        page = client.get("/v1/usage", params=one, headers=auditor)
        assert page.status_code == 200, page.text
        assert [r["model"] for r in page.json()["rows"]] == [name] * 12
    # As the contract does, leading and trailing blanks are not part of the name.
    padded = client.get("/v1/share", params={**day, "model": f"  {ODD_NAMES[0]} "}).json()
    assert padded["totals"]["total"] == 12
    # A region, and none: records without one are stored, and broken down, under "".
    regions = {c["key"]: c["total"] for c in client.get("/v1/breakdown/region", params=day)
               .json()["cells"]}  # fmt: skip
    assert regions == {"Zone 1 / west": 12 * (2 + 4), "": 12 * (1 + 3 + 5)}
    for region, total in regions.items():
        by_region = client.get("/v1/share", params={**day, "region": region})
        assert by_region.json()["totals"]["total"] == total, by_region.text


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/v1/share", {"model": "a\nb"}, "model"),
        ("/v1/share", {"model": "   "}, "model"),
        ("/v1/share", {"provider": "p" * (MAX_NAME_LEN + 1)}, "provider"),
        ("/v1/share", {"region": "r" * (MAX_REGION_LEN + 1)}, "region"),
        ("/v1/share", {"model": [f"m{i}" for i in range(101)]}, "model"),
        ("/v1/share", {"agency": "in sbi"}, "agency"),
        ("/v1/usage", {"model": "a\tb"}, "model"),
        ("/v1/usage", {"gateway": "gw names"}, "gateway"),
        ("/v1/usage", {"provider": "p" * (MAX_NAME_LEN + 1)}, "provider"),
    ],
)
def test_filters_refuse_what_no_record_may_carry(
    client: TestClient, seeded: Seeded, path: str, params: dict[str, Any], reason: str
) -> None:
    r = client.get(path, params=params, headers=bearer(seeded.keys["admin"]))
    assert r.status_code == 422, r.text
    assert [reason] == [e["loc"][1] for e in r.json()["detail"]][:1], r.text


PAIR_DAY = datetime(2026, 7, 16, tzinfo=UTC)  # between NESTED_DAY and TIER_DAY


def test_small_cells_withheld_together_are_not_given_back_nor_ranked(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    # Found in review: two 1-record models withheld together were the published total minus
    # the shown groups (one hospital's whole usage); and a withheld cell left in its place in a
    # table ranked by value was bounded by its neighbours (99 requests between 100 and 98).
    served = [("m-big", "in-sbi", 30, 5), ("m-c", "in-sbi", 20, 5), ("m-secret", "in-sbi", 1, 99),
              ("m-d", "in-sbi", 14, 7), ("m-a", "in-aiims-delhi", 1, 37),
              ("m-b", "in-aiims-delhi", 1, 5)]  # fmt: skip
    records = [
        UsageRecord(record_id=f"pair-{model}-{i}", gateway_id="gw-pair", agency_id=agency,
                    occurred_at=PAIR_DAY + timedelta(minutes=i), provider="sarvam", model=model,
                    request_count=each)
        for model, agency, n, each in served
        for i in range(n)
    ]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records(records).rows)
    day = {"from": PAIR_DAY.isoformat(), "to": (PAIR_DAY + timedelta(days=1)).isoformat()}
    cost = client.get("/v1/cost", params={**day, "group_by": "model"}).json()
    groups = [(g["key"], g["suppressed"]) for g in cost["groups"]]
    # The three small cells hold 3 records together: the next smallest (m-d, 14) goes too, and
    # the withheld go last, by name.
    assert groups == [("m-big", False), ("m-c", False), ("m-a", True), ("m-b", True),
                      ("m-d", True), ("m-secret", True)]  # fmt: skip
    shown = sum(g["requests"] for g in cost["groups"] if not g["suppressed"])
    assert cost["total"]["requests"] - shown == 37 + 5 + 99 + 14 * 7  # 17 records' worth
    cells = client.get("/v1/breakdown/model", params=day).json()["cells"]
    assert [(c["key"], c["suppressed"]) for c in cells] == groups
    full = client.get("/v1/breakdown/model", params=day, headers=auditor).json()["cells"]
    assert [c["key"] for c in full] == ["m-big", "m-c", "m-secret", "m-d", "m-a", "m-b"]


PEAK_DAY = datetime(2026, 7, 17, tzinfo=UTC)


def test_a_peak_hour_is_withheld_when_the_other_hours_are_a_small_cell(
    client: TestClient, pool: ClientPool, seeded: Seeded
) -> None:
    # Found in review: the period's requests (137) minus its published peak hour (100) gave
    # back the one record of the only other hour.
    records = [
        UsageRecord(record_id=f"peak-{i}", gateway_id="gw-peak", agency_id="in-sbi",
                    occurred_at=PEAK_DAY + timedelta(hours=9, minutes=i), provider="sarvam",
                    model="m", request_count=5)
        for i in range(20)
    ] + [UsageRecord(record_id="peak-lone", gateway_id="gw-peak", agency_id="in-aiims-delhi",
                     occurred_at=PEAK_DAY + timedelta(hours=11), provider="sarvam", model="m",
                     request_count=37)]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records(records).rows)
    params = {"from": PEAK_DAY.isoformat(), "to": (PEAK_DAY + timedelta(days=1)).isoformat(),
              "period": "day"}  # fmt: skip
    (period,) = client.get("/v1/capacity", params=params).json()["periods"]
    assert not period["suppressed"] and period["inputs"]["requests"] == 137
    assert period["peak_hour_suppressed"] and period["inputs"]["peak_hour_requests"] is None
    assert period["layers"]["C"] is None and period["index"] is None


ENERGY_HOUR = datetime(2025, 2, 11, 10, tzinfo=UTC)


def test_energy_per_inference_does_not_change_when_parts_merge(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    # Found in review: requests that reported energy were counted part by part of the rollup,
    # so two batches of one rollup row (one gateway reporting energy, one not) gave 10 Wh per
    # request before the parts merged and 5 after: a published figure that changed by itself.
    records = [
        UsageRecord(record_id=f"wh-{gateway}-{i}", gateway_id=gateway, agency_id="in-sbi",
                    occurred_at=ENERGY_HOUR + timedelta(minutes=i), provider="sarvam",
                    model="m-wh", request_count=1, energy_wh=10.0 if gateway == "gw-wh-a" else None)
        for gateway in ("gw-wh-a", "gw-wh-b")
        for i in range(10)
    ]  # fmt: skip
    processor = Processor(Classifier(seeded.registry))
    for gateway in ("gw-wh-a", "gw-wh-b"):  # two batches: two parts of one rollup row
        mine = [r for r in records if r.gateway_id == gateway]
        Writer(pool.get()).write(processor.process_records(mine).rows)
    params = {"from": ENERGY_HOUR.isoformat(), "to": (ENERGY_HOUR + timedelta(hours=1)).isoformat()}

    def energy() -> tuple[int, float]:
        total = client.get("/v1/cost", params=params, headers=auditor).json()["total"]
        return total["energy_reported_requests"], total["wh_per_inference"]

    before = energy()
    pool.get().command("OPTIMIZE TABLE usage_hourly FINAL")
    assert energy() == before
    # Both gateways share the rollup row (it has no gateway), and only gw-wh-a's 10 requests
    # reported energy: since migration 0009 the rollup counts them (20 requests, 5 Wh each,
    # the approximation, before).
    assert before == (10, 10.0)


REPORTING_HOUR = datetime(2025, 2, 12, 9, tzinfo=UTC)


def test_per_inference_figures_count_only_the_requests_that_reported(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    """One rollup row: requests with a converted cost, without a cost, with a cost in a
    currency the registry has no rate for; some reported energy. Each per-inference figure is
    over the requests that reported it, computed here from the records."""
    fx = seeded.registry.fx_to_reporting
    rated = sorted(fx)[0]

    def record(i: int, requests: int, **reported: Any) -> UsageRecord:
        return UsageRecord(record_id=f"rep-{i}", gateway_id="gw-rep", agency_id="in-sbi",
                           occurred_at=REPORTING_HOUR + timedelta(minutes=i), provider="sarvam",
                           model="m-rep", request_count=requests, **reported)  # fmt: skip

    records = [
        record(0, 3, cost=Decimal("1.5"), currency=rated, energy_wh=9.0),
        record(1, 5, cost=Decimal("2.5"), currency=rated),
        record(2, 7),  # no cost, no energy
        record(3, 11, cost=Decimal("4"), currency="ZZZ", energy_wh=0.0),  # no rate for ZZZ
    ]
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records(records).rows)
    params = {"from": REPORTING_HOUR.isoformat(),
              "to": (REPORTING_HOUR + timedelta(hours=1)).isoformat()}  # fmt: skip
    total = client.get("/v1/cost", params=params, headers=auditor).json()["total"]
    cost = float(Decimal("4.0") * fx[rated])
    assert total["exact"] is True and total["requests"] == 26
    assert total["cost_unconverted_records"] == 1
    assert total["cost_reported_requests"] == 8
    assert close(total["cost_per_inference"], cost / 8)
    assert close(total["operating_cost_per_day"], cost / 8 * 26 / (1 / 24))
    assert total["energy_reported_requests"] == 14  # a reported 0 Wh is reported
    assert close(total["wh_per_inference"], 9.0 / 14)
