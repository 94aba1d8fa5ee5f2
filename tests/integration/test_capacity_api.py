"""GET /v1/capacity and GET /v1/outlook on chdb: hand-built usage with hand-computed layers,
and the demo dataset landed through the real processor and writer."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from pipeline.processor import Processor
from pipeline.writer import Writer
from tracker import demo
from tracker.access import Role, add_key
from tracker.capacity import Period, capacity_series
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.contract import Status, UsageRecord
from tracker.registry import Registry, load, parse, record_version

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


def rec(
    rid: str,
    agency: str,
    when: datetime,
    provider: str,
    requests: int,
    *,
    region: str | None = None,
    latency: int | None = None,
    status: Status = Status.ok,
) -> UsageRecord:
    return UsageRecord(
        record_id=rid,
        gateway_id=f"gw-{agency}",
        agency_id=agency,
        occurred_at=when,
        provider=provider,
        model="m",
        region=region,
        request_count=requests,
        latency_ms=latency,
        status=status,
    )


def at(day: int, hour: int, minute: int = 0, month: int = 3, year: int = 2024) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# March 2024, national declared capacity 90 000 req/h (shipped registry), objective 1500 ms.
HAND = [
    # 5 Mar 10:00 hour: 50k sovereign (900 ms) + 70k offshore = 120k, the peak hour
    rec("k1", "in-kvs", at(5, 10), "sarvam", 50_000, latency=900),
    rec("k2", "in-kvs", at(5, 10, 20), "openai", 70_000, latency=800),
    # 5 Mar 11:00: onshore ok row of two records, mean (2000 + 800) / 2 = 1400 <= 1500, so the
    # whole row (100k) is within objective at the rollup's granularity; 10k errors are not
    rec("s1", "in-sbi", at(5, 11), "azure_openai", 90_000, region="centralindia", latency=2000),
    rec("s2", "in-sbi", at(5, 11, 30), "azure_openai", 10_000, region="centralindia", latency=800),
    rec(
        "s3",
        "in-sbi",
        at(5, 11),
        "azure_openai",
        10_000,
        region="centralindia",
        latency=500,
        status=Status.error,
    ),
    # 12 Mar 09:00: 30k sovereign without latency (unmeasured) + 10k sovereign at 1000 ms
    rec("i1", "in-iitm", at(12, 9), "sarvam", 30_000),
    rec("i2", "in-iitm", at(12, 9), "krutrim", 10_000, latency=1000),
]
# Jan-Apr 2023: monthly domestic shares .10 .20 .20 .30 of 100 requests (one agency).
TREND = [
    r
    for m, dom in enumerate((10, 20, 20, 30), start=1)
    for r in (
        rec(f"t{m}d", "in-cbse", at(10, 12, month=m, year=2023), "sarvam", dom, latency=900),
        rec(f"t{m}f", "in-cbse", at(10, 12, month=m, year=2023), "openai", 100 - dom),
    )
]
DEMO_END = date(2025, 10, 1)  # 92 demo days: 1 Jul .. 30 Sep 2025


def land(pool: ClientPool, registry: Registry, records: list[UsageRecord]) -> None:
    rows = Processor(Classifier(registry)).process_records(records).rows
    Writer(pool.get()).write(rows)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load()[0]


@pytest.fixture(scope="module")
def api(pool: ClientPool) -> Iterator[TestClient]:
    with TestClient(create_app(pool)) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(pool: ClientPool, registry: Registry, api: TestClient) -> Iterator[TestClient]:
    """An auditor's client on the seeded store: the hand-built months are smaller than the
    public answers' record threshold, and these tests check the arithmetic, not withholding
    (test_public_answers_withhold_small_periods does)."""
    registry_obj, text = load()
    record_version(pool.get(), registry_obj, text, author="test", reason="capacity tests")
    land(pool, registry, HAND + TREND)
    land(pool, registry, list(demo.generate(registry, days=92, end=DEMO_END)))
    key = add_key(pool.get(), registry_obj, "capacity-auditor", Role.auditor)[1]
    with TestClient(create_app(pool), headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


def get(api: TestClient, path: str, **params: Any) -> dict[str, Any]:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_no_registry_loaded_is_503(api: TestClient) -> None:
    # runs first: nothing recorded in registry_versions yet, and the app was given none
    response = api.get("/v1/capacity")
    assert response.status_code == 503
    assert "registry" in response.json()["detail"]


def test_the_registry_given_to_the_app_answers(pool: ClientPool, registry: Registry) -> None:
    # Found in review: capacity and outlook read an `app.state.registry` that nothing set, so
    # with nothing recorded yet they answered 503 while /v1/share used the registry given.
    with TestClient(create_app(pool, registry=registry)) as given:
        for path in ("/v1/capacity", "/v1/outlook", "/v1/share"):
            response = given.get(path)
            assert response.status_code == 200, (path, response.text)


def test_national_month_hand_computed(seeded: TestClient) -> None:
    body = get(seeded, "/v1/capacity", **{"from": "2024-03-01", "to": "2024-05-01"})
    assert body["period"] == "month"
    assert body["latency_objective_ms"] == 1500
    assert body["declared_domestic_capacity_rph"] == 90_000
    march, april = body["periods"]
    assert march["start"].startswith("2024-03-01") and march["end"].startswith("2024-04-01")
    i = march["inputs"]
    assert i["peak_hour_requests"] == 120_000
    assert i["requests"] == 270_000
    assert i["domestic_requests"] == 200_000
    assert i["domestic_within_objective"] == 160_000  # 50k + 100k (row mean 1400) + 10k
    assert i["domestic_latency_unmeasured"] == 30_000
    assert i["registered_agencies"] == 40
    assert i["active_agencies"] == 3
    layers = march["layers"]
    assert layers["C"] == pytest.approx(0.75)  # 90k / 120k
    assert layers["S"] == pytest.approx(0.8)  # 160k / 200k
    assert layers["D"] == pytest.approx(29 / 480)  # (50/120 + 1 + 1) / 40
    assert march["index"] == pytest.approx(0.75 * 0.8 * 29 / 480)  # 0.03625
    m = (0.75 + 0.8 + 29 / 480) / 3
    assert march["asynchrony_penalty"] == pytest.approx(1 - 0.03625 / m**3)
    assert march["binding"] == "D"
    # April: no usage at all -> C and S unknown, D = 0, no index
    assert april["layers"] == {"C": None, "S": None, "D": 0.0}
    assert april["index"] is None and april["binding"] is None
    assert body["latest"]["start"] == march["start"]


def test_sector_scores_hand_computed(seeded: TestClient) -> None:
    window = {"from": "2024-03-01", "to": "2024-04-01"}
    edu = get(seeded, "/v1/capacity", sector="education", **window)["periods"][0]
    # capacity 90k * 160k/270k; peak hour 120k; S = 60k / 90k; D = (5/12 + 1) / 10
    assert edu["inputs"]["capacity_rph"] == pytest.approx(90_000 * 160 / 270)
    assert edu["inputs"]["registered_agencies"] == 10
    assert edu["layers"]["C"] == pytest.approx(4 / 9)
    assert edu["layers"]["S"] == pytest.approx(2 / 3)
    assert edu["layers"]["D"] == pytest.approx(17 / 120)
    fin = get(seeded, "/v1/capacity", sector="finance", **window)["periods"][0]
    # capacity 90k * 110/270, peak 110k -> 1/3; S = 100k / 110k; D = 1 / 5
    assert fin["layers"]["C"] == pytest.approx(1 / 3)
    assert fin["layers"]["S"] == pytest.approx(10 / 11)
    assert fin["layers"]["D"] == pytest.approx(1 / 5)
    assert fin["binding"] == "D"


def test_week_and_day_periods_bucket_like_python(seeded: TestClient) -> None:
    weeks = get(seeded, "/v1/capacity", period="week", **{"from": "2024-03-05", "to": "2024-03-13"})
    assert [p["start"][:10] for p in weeks["periods"]] == ["2024-03-04", "2024-03-11"]
    assert [p["inputs"]["requests"] for p in weeks["periods"]] == [230_000, 40_000]
    days = get(seeded, "/v1/capacity", period="day", **{"from": "2024-03-12", "to": "2024-03-13"})
    (day,) = days["periods"]
    # 40k domestic, 10k within objective, 30k unmeasured; peak 40k < 90k capacity
    assert day["layers"]["C"] == 1.0
    assert day["layers"]["S"] == pytest.approx(0.25)
    assert day["layers"]["D"] == pytest.approx(1 / 40)


def test_demo_data_layers_are_consistent(seeded: TestClient) -> None:
    body = get(seeded, "/v1/capacity", **{"from": "2025-07-01", "to": "2025-10-01"})
    assert len(body["periods"]) == 3
    for p in body["periods"]:
        c, s, d = (p["layers"][k] for k in ("C", "S", "D"))
        for layer in (c, s, d):
            assert 0 < layer <= 1
        assert p["index"] == pytest.approx(c * s * d)
        assert p["index"] <= min(c, s, d)
        assert 0 <= p["asynchrony_penalty"] <= 1
        assert p["binding"] == "CSD"[[c, s, d].index(min(c, s, d))]
        assert p["inputs"]["active_agencies"] == 40  # the demo has every registered agency
        # the demo is mostly foreign and spread over ~11 hours a day: capacity is not binding
        assert p["inputs"]["peak_hour_requests"] > 0


def test_outlook_hand_computed(seeded: TestClient) -> None:
    body = get(seeded, "/v1/outlook", **{"from": "2023-01-01", "to": "2023-05-01"})
    assert [h["share"] for h in body["history"]] == pytest.approx([0.1, 0.2, 0.2, 0.3])
    assert body["fit"]["slope_per_month"] == pytest.approx(0.06)
    assert body["fit"]["intercept"] == pytest.approx(0.11)
    assert body["fit"]["dof"] == 2
    assert body["status"] == "on_track"
    assert body["target"]["target"] == 0.5
    assert body["reached"] == "2023-08-01"  # 0.11 + 0.06 * 7 = 0.53
    assert body["reached_earliest"] == "2023-05-01"  # upper edge 0.35 + 0.215
    assert body["reached_latest"] is None  # lower edge never climbs to 0.5
    assert body["window_closes"] == "2028-12-31"
    assert body["window"]["share"] == 1.0
    first = body["projection"][0]
    assert first["month"] == "2023-05-01"
    assert first["share"] == pytest.approx(0.35)
    assert first["lower"] == pytest.approx(0.35 - 4.302653 * 0.05, abs=1e-5)
    assert [t["by"] for t in body["trajectory"]] == [
        "2025-12-31",
        "2026-12-31",
        "2027-12-31",
        "2028-12-31",
    ]


def test_outlook_sector_without_history(seeded: TestClient) -> None:
    body = get(seeded, "/v1/outlook", sector="legal", **{"from": "2023-01-01", "to": "2023-05-01"})
    assert body["status"] == "no_history"
    assert body["history"] == [] and body["projection"] == []


def test_outlook_single_month(seeded: TestClient) -> None:
    body = get(seeded, "/v1/outlook", **{"from": "2023-02-01", "to": "2023-03-01"})
    assert body["status"] == "insufficient_history"
    assert body["fit"] is None


def test_public_answers_withhold_small_periods(seeded: TestClient, api: TestClient) -> None:
    # Found in review: a sector's month of 3 records went out whole (requests, peak hour), and
    # so did the outlook's history, though /v1/share withheld the same figures.
    march = {"from": "2024-03-01", "to": "2024-04-01"}
    public = get(api, "/v1/capacity", **march)
    assert public["periods"][0]["suppressed"] and public["periods"][0]["inputs"] is None
    assert public["periods"][0]["index"] is None and public["latest"] is None
    full = get(seeded, "/v1/capacity", **march)["periods"][0]  # 7 records
    assert not full["suppressed"] and full["inputs"]["requests"] == 270_000
    demo_months = get(api, "/v1/capacity", **{"from": "2025-07-01", "to": "2025-10-01"})
    assert not any(p["suppressed"] for p in demo_months["periods"])
    trend = {"from": "2023-01-01", "to": "2023-05-01"}  # 2 records a month
    withheld = get(api, "/v1/outlook", **trend)
    assert withheld["history"] == [] and withheld["withheld_months"] == 4
    assert withheld["status"] == "no_history" and withheld["fit"] is None
    shown = get(seeded, "/v1/outlook", **trend)
    assert len(shown["history"]) == 4 and shown["withheld_months"] == 0


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/v1/capacity", {"from": "2024-05-01", "to": "2024-03-01"}, "before"),
        ("/v1/capacity", {"period": "fortnight"}, "period"),
        ("/v1/capacity", {"period": "day", "from": "2023-01-01", "to": "2024-03-01"}, "400"),
        ("/v1/capacity", {"period": "year", "from": "2000-01-01", "to": "2024-03-01"}, "3660"),
        ("/v1/capacity", {"sector": "astrology"}, "unknown sector"),
        ("/v1/outlook", {"from": "2010-01-01", "to": "2024-03-01"}, "120 months"),
        ("/v1/outlook", {"from": "2024-03-10", "to": "2024-03-01"}, "before"),
        ("/v1/outlook", {"sector": "astrology"}, "unknown sector"),
    ],
)
def test_bad_parameters_are_422_with_reason(
    seeded: TestClient, path: str, params: dict[str, str], reason: str
) -> None:
    response = seeded.get(path, params=params)
    assert response.status_code == 422, response.text
    assert reason in response.text


def test_agency_keys_see_national_figures_as_the_public_does(
    seeded: TestClient, pool: ClientPool, registry: Registry
) -> None:
    # Found in review: an agency key got every capacity period and outlook month unsuppressed,
    # though they are national or sector figures built from other agencies' records.
    key = add_key(pool.get(), registry, "capacity-agency-sbi", Role.agency, "in-sbi")[1]
    with TestClient(create_app(pool), headers={"Authorization": f"Bearer {key}"}) as agency:
        march = get(agency, "/v1/capacity", **{"from": "2024-03-01", "to": "2024-04-01"})
        assert march["periods"][0]["suppressed"] and march["periods"][0]["inputs"] is None
        trend = get(agency, "/v1/outlook", **{"from": "2023-01-01", "to": "2023-05-01"})
        assert trend["history"] == [] and trend["withheld_months"] == 4
        demo_months = get(agency, "/v1/capacity", **{"from": "2025-07-01", "to": "2025-10-01"})
        assert not any(p["suppressed"] for p in demo_months["periods"])


def test_a_small_period_is_never_withheld_alone(
    seeded: TestClient, api: TestClient, pool: ClientPool, registry: Registry
) -> None:
    # Found in review: one small month withheld alone was the headline over the same range
    # minus the months shown. Mid-2022: 3, 20 and 30 records, 10 requests each.
    months = {6: 3, 7: 20, 8: 30}
    land(pool, registry, [
        rec(f"c{m}-{i}", "in-cbse", at(1 + i % 28, 12, month=m, year=2022), "sarvam", 10)
        for m, n in months.items() for i in range(n)
    ])  # fmt: skip
    summer = {"from": "2022-06-01", "to": "2022-09-01"}
    periods = get(api, "/v1/capacity", **summer)["periods"]
    assert [p["suppressed"] for p in periods] == [True, True, False]  # July hidden with June
    assert periods[2]["inputs"]["requests"] == 300
    outlook_ = get(api, "/v1/outlook", **summer)
    assert outlook_["withheld_months"] == 2
    assert [h["month"] for h in outlook_["history"]] == ["2022-08-01"]
    # Keys that see everything still get every period.
    assert not any(p["suppressed"] for p in get(seeded, "/v1/capacity", **summer)["periods"])


def test_public_peak_hour_is_withheld_when_that_hour_is_a_small_cell(
    seeded: TestClient, api: TestClient, pool: ClientPool, registry: Registry
) -> None:
    # Found in review: the public got one hour's exact total as peak_hour_requests although
    # that hour held a single record (the hourly series withheld it); the period's 36 records
    # were enough to publish it. 10 Sep 2021: 20 one-request records at 09:00, 15 at 11:00 and
    # one of 777 requests at 15:00. 11 Sep: the same without the 15:00 record (peak 20, from
    # 20 records). 12 Sep: 09:00 as before and one 20-request record at 15:00, tied with it.
    sep = {"from": "2021-09-10", "to": "2021-09-13", "period": "day"}
    land(pool, registry, [
        *(rec(f"pk{d}a{i}", "in-sbi", at(d, 9, i, month=9, year=2021), "sarvam", 1, latency=100)
          for d in (10, 11, 12) for i in range(20)),
        *(rec(f"pk{d}b{i}", "in-kvs", at(d, 11, i, month=9, year=2021), "sarvam", 1, latency=100)
          for d in (10, 11) for i in range(15)),
        rec("pk10c", "in-iitm", at(10, 15, month=9, year=2021), "sarvam", 777, latency=100),
        rec("pk12c", "in-iitm", at(12, 15, month=9, year=2021), "sarvam", 20, latency=100),
    ])  # fmt: skip
    small, large, tied = get(api, "/v1/capacity", **sep)["periods"]
    assert not small["suppressed"] and small["inputs"]["requests"] == 812
    assert small["inputs"]["peak_hour_requests"] is None and small["peak_hour_suppressed"]
    # C = capacity / peak would give the peak back, and the index would give C back.
    assert small["layers"]["C"] is None and small["layers"]["S"] == 1.0
    assert small["index"] is None and small["balanced_index"] is None
    assert small["asynchrony_penalty"] is None and small["binding"] is None
    assert not large["peak_hour_suppressed"] and large["inputs"]["peak_hour_requests"] == 20
    assert large["layers"]["C"] == 1.0 and large["index"] is not None
    # Tied at the peak: 20 is also the total of the one-record hour, so it is withheld.
    assert tied["inputs"]["peak_hour_requests"] is None and tied["peak_hour_suppressed"]
    # Keys that see everything get the peak and every layer.
    full = get(seeded, "/v1/capacity", **sep)["periods"]
    assert [p["inputs"]["peak_hour_requests"] for p in full] == [777, 20, 20]
    assert not any(p["peak_hour_suppressed"] for p in full)
    assert full[0]["layers"]["C"] == 1.0 and full[0]["index"] is not None


def test_a_sectors_demand_layer_reads_the_sectors_rows_only(
    pool: ClientPool, registry: Registry
) -> None:
    # Found in review: D took every row of the agencies the registry lists under the sector
    # today, so an agency moved from education to health brought its education rows into
    # health's D, beside 0 requests and 0 records there: one agency's single record published
    # (nothing to withhold), while C and S read health's rows only.
    land(pool, registry, [
        rec("mv-1", "in-kvs", at(5, 10, year=2019), "sarvam", 100, latency=900),
        rec("mv-2", "in-cbse", at(5, 11, year=2019), "openai", 100),
    ])  # fmt: skip
    _, text = load()
    moved_text = text.replace(
        "{id: in-kvs, name: Kendriya Vidyalaya Sangathan, sector: education",
        "{id: in-kvs, name: Kendriya Vidyalaya Sangathan, sector: health",
    )
    assert moved_text != text
    moved = parse(moved_text, "moved.yaml")
    start, end = datetime(2019, 3, 1, tzinfo=UTC), datetime(2019, 4, 1, tzinfo=UTC)
    (health,) = capacity_series(pool.get(), moved, start, end, Period.month, "health")
    assert health.facts.requests == 0 and health.active_agencies == 0
    assert all(req == 0 for _, req, _ in health.facts.agencies)
    (education,) = capacity_series(pool.get(), moved, start, end, Period.month, "education")
    assert education.facts.requests == 200 and education.active_agencies == 1  # in-cbse only


def test_yearly_periods_answer_by_default_and_for_ranges_within_the_limit(
    seeded: TestClient,
) -> None:
    # Found in review: the range was checked after rounding out to whole periods, so the
    # default of 12 years, and any 10-year range not on year boundaries, were always 422.
    default = get(seeded, "/v1/capacity", period="year")
    assert len(default["periods"]) == 12
    ranged = get(
        seeded, "/v1/capacity", period="year", **{"from": "2015-06-01", "to": "2025-03-01"}
    )
    assert [p["start"][:4] for p in ranged["periods"]] == [str(y) for y in range(2015, 2026)]
