"""The embedded default: HTTP ingest -> direct hand-off -> chdb -> API, in one app."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from tracker.access import Role, add_key
from tracker.cli.wiring import Core, embedded_app, open_core
from tracker.gateways import add
from tracker.settings import CommonSettings, EmbeddedSettings


@pytest.fixture(scope="module")
def core(settings: CommonSettings, pool: object) -> Core:
    return open_core(settings)


@pytest.fixture(scope="module")
def client(core: Core, settings: CommonSettings) -> Iterator[TestClient]:
    embedded = EmbeddedSettings(
        data_dir=settings.data_dir,
        clickhouse_database=settings.clickhouse_database,
        max_body_bytes=64 * 1024,
        max_batch_records=50,
    )
    with TestClient(embedded_app(embedded, core)) as c:
        yield c


@pytest.fixture(scope="module")
def key(core: Core) -> str:
    return add(core.pool.get(), core.registry, "gw-embedded", ["in-sbi", "in-pnb"])[1]


@pytest.fixture(scope="module")
def auditor(core: Core) -> dict[str, str]:
    """These checks count single records, which public answers rightly withhold."""
    key = add_key(core.pool.get(), core.registry, "auditor-embedded", Role.auditor)[1]
    return {"Authorization": f"Bearer {key}"}


def rec(i: int, agency: str = "in-sbi", **patch: object) -> dict[str, object]:
    return {"record_id": f"e{i}", "agency_id": agency, "occurred_at": "2026-06-01T09:30:00Z",
            "provider": "openai", "model": "gpt-4o-mini", "request_count": 2, **patch}  # fmt: skip


def post(client: TestClient, key: str, body: object) -> tuple[int, dict[str, Any]]:
    r = client.post("/v1/records", content=orjson.dumps(body),
                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    return r.status_code, r.json()


def test_partial_batch_lands_good_records(
    client: TestClient, key: str, auditor: dict[str, str]
) -> None:
    body = [rec(1), rec(2, agency="in-cbse"), rec(3, input_tokens=-1), rec(4, gateway_id="x")]
    code, result = post(client, key, body)
    assert code == 200
    assert (result["accepted"], result["rejected"]) == (2, 2)
    errors = {(e["index"], e["field"]) for e in result["errors"]}
    assert errors == {(1, "agency_id"), (2, "input_tokens")}
    share = client.get(
        "/v1/share", params={"from": "2026-06-01", "to": "2026-06-02"}, headers=auditor
    ).json()
    assert share["records"] == 2
    assert share["totals"] == {
        "sovereign": 0,
        "onshore": 0,
        "offshore": 4,
        "unknown": 0,
        "total": 4,
    }
    assert share["domestic_share"] == 0.0


def test_a_number_out_of_range_refuses_its_record_only(client: TestClient, key: str) -> None:
    # Found in review: orjson refused the whole body over one out-of-range number (1e400, a
    # 400-digit integer, NaN), and the good records beside it with it.
    elsewhere = "2026-06-20T09:30:00Z"  # a day the other tests here do not count
    good = orjson.dumps([rec(20, occurred_at=elsewhere), rec(21, occurred_at=elsewhere)])[:-1]
    for bad in (b'"energy_wh": 1e400', b'"input_tokens": ' + b"9" * 400, b'"energy_wh": NaN'):
        broken = orjson.dumps(rec(22, occurred_at=elsewhere))[:-1] + b", " + bad + b"}"
        r = client.post("/v1/records", content=good + b", " + broken + b"]",
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["accepted"], body["rejected"]) == (2, 1), body
        assert body["errors"][0]["index"] == 2


def test_resend_counts_once(client: TestClient, key: str, auditor: dict[str, str]) -> None:
    assert post(client, key, [rec(10), rec(11)])[0] == 200
    assert post(client, key, [rec(10), rec(11), rec(12)])[1]["accepted"] == 3
    share = client.get(
        "/v1/share", params={"from": "2026-06-01", "to": "2026-06-02"}, headers=auditor
    ).json()
    assert share["records"] == 5  # e1, e4 from before + e10, e11, e12
    public = client.get("/v1/share", params={"from": "2026-06-01", "to": "2026-06-02"}).json()
    assert public["suppressed"] is True and public["records"] is None


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, 401), ({"Authorization": "Bearer tk_wrong"}, 401), ({"Authorization": "Basic abc"}, 401)],
)
def test_authentication_required(client: TestClient, headers: dict[str, str], code: int) -> None:
    assert client.post("/v1/records", content=b"[]", headers=headers).status_code == code


def test_only_foreign_agencies_is_403(client: TestClient, key: str) -> None:
    code, result = post(client, key, [rec(20, agency="in-cbse")])
    assert code == 403
    assert result["accepted"] == 0


def test_limits_and_malformed_bodies(client: TestClient, key: str) -> None:
    assert post(client, key, [rec(i) for i in range(51)])[0] == 413
    assert post(client, key, [rec(0, model="m" * 70_000)])[0] == 413
    assert post(client, key, {"not": "an array"})[0] == 422
    r = client.post("/v1/records", content=b"[{", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    code, result = post(client, key, [rec(30, occurred_at="yesterday")])
    assert code == 422 and result["errors"][0]["field"] == "occurred_at"


def test_share_parameters_validated(client: TestClient) -> None:
    assert client.get("/v1/share", params={"basis": "vibes"}).status_code == 422
    assert (
        client.get("/v1/share", params={"from": "2026-02-01", "to": "2026-01-01"}).status_code
        == 422
    )
    assert (
        client.get("/v1/share", params={"from": "2000-01-01", "to": "2026-01-01"}).status_code
        == 422
    )
    assert client.get("/v1/share", params={"from": "not-a-date"}).status_code == 422
    empty = client.get("/v1/share", params={"from": "2020-01-01", "to": "2020-01-02"}).json()
    assert empty["domestic_share"] is None and empty["records"] == 0
    r = client.get(
        "/v1/share", params={"from": "2026-06-01T09:10:00Z", "to": "2026-06-01T09:20:00Z"}
    )
    assert r.json()["from"] == "2026-06-01T09:00:00Z" and r.json()["to"] == "2026-06-01T10:00:00Z"
    assert datetime.fromisoformat(r.json()["to"]) > datetime(2026, 6, 1, 9, tzinfo=UTC)


def test_public_headline_cache_is_exact(client: TestClient, key: str) -> None:
    """The public answer is reused between landings and recomputed after each one: a public
    reader never sees a figure older than the last landed batch."""
    day = {"from": "2026-07-01", "to": "2026-07-02"}
    batch = [rec(100 + i, occurred_at="2026-07-01T08:00:00Z") for i in range(12)]
    assert post(client, key, batch)[1]["accepted"] == 12
    first = client.get("/v1/share", params=day).json()
    assert first["records"] == 12 and first["domestic_share"] == 0.0
    assert client.get("/v1/share", params=day).json() == first  # reused
    domestic = [rec(200 + i, occurred_at="2026-07-01T09:00:00Z", provider="sarvam",
                    model="sarvam-m") for i in range(8)]  # fmt: skip
    assert post(client, key, domestic)[1]["accepted"] == 8
    after = client.get("/v1/share", params=day).json()
    assert after["records"] == 20
    assert after["domestic_share"] == pytest.approx(16 / 40)  # 8 x 2 requests of 40


def test_a_store_that_refuses_the_write_answers_503_and_the_retry_lands_once(
    client: TestClient, core: Core, key: str, auditor: dict[str, str]
) -> None:
    """Found in review: with the disk full, the embedded ingest answered 500 (which gateways
    and exporters drop, not retry) with a traceback per request. A store refusing the write
    (here its raw table is away: a real engine error) is a 503 with Retry-After, and the
    gateway's retry lands the batch once."""
    db = core.pool.get()
    body = [rec(900 + i, occurred_at="2026-06-03T09:30:00Z") for i in range(3)]
    db.command("RENAME TABLE usage_raw TO usage_raw_away")
    try:
        refused = client.post("/v1/records", content=orjson.dumps(body),
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    finally:
        db.command("RENAME TABLE usage_raw_away TO usage_raw")
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "5" and "not stored" in refused.text
    assert post(client, key, body) == (200, {"accepted": 3, "rejected": 0, "errors": [],
                                             "errors_truncated": False})  # fmt: skip
    assert post(client, key, body)[1]["accepted"] == 3  # a resend: answered, counted once
    share = client.get(
        "/v1/share", params={"from": "2026-06-03", "to": "2026-06-04"}, headers=auditor
    ).json()
    assert share["records"] == 3
