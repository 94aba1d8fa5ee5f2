"""Roles, scoping, audit log and rate limits of the read API, on a seeded chdb database."""

from __future__ import annotations

import asyncio
import base64
import csv as csv_module
import io
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

import api.routes.usage as usage_routes
from tests.integration.ports import tracker_up
from tests.integration.test_api_support import Seeded, app, bearer, seed
from tests.integration.test_collector_support import ServerThread
from tracker import audit, usage_export
from tracker import registry as registry_mod
from tracker.access import KeyAuth, hash_key, revoke_key
from tracker.clickhouse import ClientPool
from tracker.settings import CommonSettings

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


WINDOW = {"from": "2026-06-01", "to": "2026-07-01"}


@pytest.fixture(scope="module")
def seeded(pool: ClientPool) -> Seeded:
    return seed(pool)


@pytest.fixture(scope="module")
def client(pool: ClientPool, settings: CommonSettings, seeded: Seeded) -> Iterator[TestClient]:
    # One admin key proposes and applies here (the four-eyes default: test_registry_api.py).
    with TestClient(app(pool, settings, registry_self_apply=True)) as c:
        yield c


def audit_rows(pool: ClientPool, key_id: str) -> list[Sequence[Any]]:
    return list(
        pool.get()
        .query(
            "SELECT phase, path, query, status, rows FROM audit_log WHERE key_id = {k:String} "
            "ORDER BY at",
            parameters={"k": key_id},
        )
        .result_rows
    )


def test_keys_stored_only_as_hashes(pool: ClientPool, seeded: Seeded) -> None:
    stored = pool.get().query("SELECT key_id, key_hash FROM api_keys FINAL").result_rows
    hashes = {h for _, h in stored}
    for key in seeded.keys.values():
        assert hash_key(key) in hashes
        assert all(key not in str(row) for row in stored)


def test_me_reports_role(client: TestClient, seeded: Seeded) -> None:
    assert client.get("/v1/me").json()["role"] == "public"
    me = client.get("/v1/me", headers=bearer(seeded.keys["agency"])).json()
    assert me == {"role": "agency", "key_id": "test-sbi", "agency_id": "in-sbi"}


@pytest.mark.parametrize("header", ["Bearer tka_nope", "Basic abc", "Bearer "])
def test_bad_key_is_401_not_public(client: TestClient, header: str) -> None:
    r = client.get("/v1/share", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_raw_usage_needs_a_key(client: TestClient) -> None:
    r = client.get("/v1/usage", params=WINDOW)
    assert r.status_code == 401


def test_agency_key_cannot_ask_for_another_agency(client: TestClient, seeded: Seeded) -> None:
    h = bearer(seeded.keys["agency"])
    for path in ("/v1/share", "/v1/breakdown/sector", "/v1/timeseries", "/v1/cost", "/v1/usage"):
        r = client.get(path, params={**WINDOW, "agency": "in-cbse"}, headers=h)
        assert r.status_code == 403, path
        assert "in-sbi" in r.json()["detail"]


def test_agency_key_sees_only_its_agency_everywhere(client: TestClient, seeded: Seeded) -> None:
    h = bearer(seeded.keys["agency"])
    cells = client.get("/v1/breakdown/agency", params=WINDOW, headers=h).json()["cells"]
    assert [c["key"] for c in cells] == ["in-sbi"]
    own = sum(r.request_count for r in seeded.records
              if r.agency_id == "in-sbi" and r.occurred_at.month == 6)  # fmt: skip
    share = client.get("/v1/share", params=WINDOW, headers=h).json()
    assert share["totals"]["total"] == own
    assert sum(c["total"] for c in cells) == own
    csv = client.get("/v1/usage", params={**WINDOW, "format": "csv"}, headers=h).text
    agencies = {row["agency_id"] for row in csv_module.DictReader(io.StringIO(csv))}
    assert agencies == {"in-sbi"}
    parquet = client.get("/v1/usage", params={**WINDOW, "format": "parquet"}, headers=h)
    table = pq.read_table(io.BytesIO(parquet.content))
    assert set(table.column("agency_id").to_pylist()) == {"in-sbi"}


def test_public_cannot_read_the_audit_log_nor_can_auditors(
    client: TestClient, seeded: Seeded
) -> None:
    assert client.get("/v1/audit").status_code == 401
    assert client.get("/v1/audit", headers=bearer(seeded.keys["auditor"])).status_code == 403
    assert client.get("/v1/audit", headers=bearer(seeded.keys["agency"])).status_code == 403


def test_every_auditor_request_is_traced_with_rows(
    client: TestClient, pool: ClientPool, seeded: Seeded
) -> None:
    h = bearer(seeded.keys["auditor"])
    before = len(audit_rows(pool, "test-auditor"))
    page = client.get("/v1/usage", params={**WINDOW, "limit": 7, "tier": "sovereign"}, headers=h)
    assert page.status_code == 200 and len(page.json()["rows"]) == 7
    export = client.get("/v1/usage", params={**WINDOW, "format": "jsonl"}, headers=h)
    n_export = len(export.text.splitlines())
    bad = client.get("/v1/usage", params={"limit": 0}, headers=h)
    assert bad.status_code == 422
    rows = audit_rows(pool, "test-auditor")[before:]
    assert [r[0] for r in rows] == ["begin", "end"] * 3
    ends = [r for r in rows if r[0] == "end"]
    assert ends[0][1] == "/v1/usage" and "tier=sovereign" in str(ends[0][2])
    assert (ends[0][3], ends[0][4]) == (200, 7)
    assert (ends[1][3], ends[1][4]) == (200, n_export) and n_export > 1000
    assert ends[2][3] == 422


def _last_end(pool: ClientPool, key_id: str, count_before: int) -> Sequence[Any] | None:
    ends = [r for r in audit_rows(pool, key_id)[count_before:] if r[0] == "end"]
    return ends[-1] if ends else None


def test_an_export_cut_off_is_audited_as_499_not_200(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: the `end` row kept the 200 of the response's first message, so an
    # export the client dropped, or one whose stream failed, was logged as complete.
    h = bearer(seeded.keys["auditor"])
    export = {**WINDOW, "format": "csv"}
    before = len(audit_rows(pool, "test-auditor"))
    with ServerThread(app(pool, settings)) as url:
        with httpx.stream("GET", f"{url}/v1/usage", params=export, headers=h, timeout=60) as r:
            assert r.status_code == 200
            next(r.iter_bytes())  # one chunk of a month's export, then the client goes away
        deadline = time.monotonic() + 30
        while (end := _last_end(pool, "test-auditor", before)) is None:
            assert time.monotonic() < deadline, "no end row for the dropped export"
            time.sleep(0.2)
        assert end[3] == 499, end
        # The whole export, read to its end, is a 200.
        before = len(audit_rows(pool, "test-auditor"))
        whole = httpx.get(f"{url}/v1/usage", params=export, headers=h, timeout=120)
        assert whole.status_code == 200 and len(whole.text.splitlines()) > 1000
        deadline = time.monotonic() + 30
        while (end := _last_end(pool, "test-auditor", before)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert (end[3], end[4]) == (200, len(whole.text.splitlines()) - 1), end

    # A stream that fails after its first chunks: the client sees a cut-off body, the log 499.
    real = usage_export.stream

    def failing(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        chunks = real(*args, **kwargs)
        yield next(chunks)
        raise RuntimeError("the engine went away mid-export (injected)")

    monkeypatch.setattr(usage_routes, "stream", failing)
    before = len(audit_rows(pool, "test-auditor"))
    with TestClient(app(pool, settings), raise_server_exceptions=False) as c:
        c.get("/v1/usage", params=export, headers=h)
    end = _last_end(pool, "test-auditor", before)
    assert end is not None and end[3] == 499, end


def test_audit_rows_count_what_each_answer_carries(
    client: TestClient, pool: ClientPool, seeded: Seeded
) -> None:
    # Found in review: the headline, capacity, outlook and freshness were logged with 0 rows.
    h = bearer(seeded.keys["auditor"])
    before = len(audit_rows(pool, "test-auditor"))
    capacity = client.get("/v1/capacity", params={**WINDOW, "period": "week"}, headers=h).json()
    outlook = client.get("/v1/outlook", params={"from": "2026-04-01", "to": "2026-08-01"},
                         headers=h).json()  # fmt: skip
    for path in ("/v1/share", "/v1/freshness"):
        assert client.get(path, headers=h).status_code == 200
    ends = [(r[1], r[4]) for r in audit_rows(pool, "test-auditor")[before:] if r[0] == "end"]
    assert ends == [("/v1/capacity", len(capacity["periods"])),
                    ("/v1/outlook", len(outlook["history"])),
                    ("/v1/share", 1), ("/v1/freshness", 1)]  # fmt: skip
    assert len(capacity["periods"]) >= 4 and len(outlook["history"]) >= 1


def test_admin_reads_the_audit_log_pages(client: TestClient, seeded: Seeded) -> None:
    h = bearer(seeded.keys["admin"])
    client.get("/v1/share", headers=bearer(seeded.keys["auditor"]))
    first = client.get("/v1/audit", params={"limit": 2}, headers=h).json()
    assert len(first["entries"]) == 2 and first["next_cursor"]
    second = client.get(
        "/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=h
    ).json()
    seen = {(e["request_id"], e["phase"]) for e in first["entries"]}
    assert not seen & {(e["request_id"], e["phase"]) for e in second["entries"]}
    ats = [e["at"] for e in first["entries"] + second["entries"]]
    assert ats == sorted(ats, reverse=True)
    only = client.get("/v1/audit", params={"key": "test-auditor"}, headers=h).json()
    assert only["entries"] and {e["key_id"] for e in only["entries"]} == {"test-auditor"}


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00"])
def test_a_crafted_audit_cursor_is_a_422_not_a_500(
    client: TestClient, seeded: Seeded, when: str
) -> None:
    cursor = base64.urlsafe_b64encode(orjson.dumps([when, "r", "p"])).decode().rstrip("=")
    r = client.get("/v1/audit", params={"cursor": cursor}, headers=bearer(seeded.keys["admin"]))
    assert r.status_code == 422, r.text
    assert "cursor" in r.json()["detail"]


def test_audit_log_has_no_write_route(client: TestClient, seeded: Seeded) -> None:
    h = bearer(seeded.keys["admin"])
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/v1/audit", headers=h).status_code == 405


def test_revoked_key_stops_working(pool: ClientPool, settings: CommonSettings) -> None:
    from api.app import create_app
    from tests.integration.test_api_support import api_settings
    from tracker import registry as registry_mod
    from tracker.access import Role, add_key

    registry = registry_mod.load()[0]
    _, key = add_key(pool.get(), registry, "test-revoke", Role.auditor)
    with TestClient(create_app(pool, api_settings(settings))) as c:
        assert c.get("/v1/me", headers=bearer(key)).status_code == 200
        assert revoke_key(pool.get(), "test-revoke")
    with TestClient(create_app(pool, api_settings(settings))) as c:  # fresh key cache
        assert c.get("/v1/me", headers=bearer(key)).status_code == 401


def test_rate_limits_answer_429_with_retry_after(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded
) -> None:
    limited = app(pool, settings, rate_limit_public_per_minute=6, rate_limit_key_per_minute=6)
    with TestClient(limited) as c:
        codes = [c.get("/v1/health").status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes
        r = c.get("/v1/health")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # A key has its own bucket, independent of the public one of the same address.
        assert c.get("/v1/me", headers=bearer(seeded.keys["admin"])).status_code == 200


def _padded_usage_query(chars: int) -> str:
    """A /v1/usage query string of exactly `chars` characters whose last filter, the one that
    chooses the data, is the agency: providers no record has pad it, changing nothing."""
    tail = "provider=sarvam&from=2026-08-03&to=2026-08-04&agency=in-aiims-delhi"
    pads: list[str] = []
    while len("&".join([*pads, tail])) < chars:
        room = chars - len("&".join([*pads, tail])) - len("&provider=")
        pads.append("provider=" + "z" * max(1, min(100, room)))
    query = "&".join([*pads, tail])
    assert len(query) == chars, len(query)
    return query


def test_a_query_string_longer_than_the_audit_keeps_is_refused(
    client: TestClient, pool: ClientPool, seeded: Seeded
) -> None:
    # Found in review: the audit log cut the query string at 4096 characters, so an auditor
    # could hide which agency it read behind padding in earlier filters.
    h = bearer(seeded.keys["auditor"])
    before = len(audit_rows(pool, "test-auditor"))
    whole = client.get(f"/v1/usage?{_padded_usage_query(audit.MAX_QUERY_CHARS)}", headers=h)
    assert whole.status_code == 200, whole.text
    assert {r["agency_id"] for r in whole.json()["rows"]} == {"in-aiims-delhi"}
    rows = audit_rows(pool, "test-auditor")[before:]
    assert [r[0] for r in rows] == ["begin", "end"]
    assert all(len(str(r[2])) == audit.MAX_QUERY_CHARS for r in rows)
    assert all(str(r[2]).endswith("agency=in-aiims-delhi") for r in rows)
    # One character more: refused before any data is read, keyed or not, naming the limit.
    over = _padded_usage_query(audit.MAX_QUERY_CHARS + 1)
    refused = client.get(f"/v1/usage?{over}", headers=h)
    assert refused.status_code == 414 and "4096" in refused.json()["detail"], refused.text
    assert len(audit_rows(pool, "test-auditor")) == before + 2
    public = client.get(f"/v1/share?{over}")
    assert public.status_code == 414 and "4096" in public.json()["detail"]


def _proposal(seeded: Seeded, facility: str) -> str:
    data = yaml.safe_load(registry_mod.load()[1])
    data["facilities"].append({"id": facility, "operator": "nic", "country": "IN",
                               "name": facility})  # fmt: skip
    return yaml.safe_dump(data, sort_keys=False)


def test_registry_writes_are_audited_like_reads(
    client: TestClient, pool: ClientPool, seeded: Seeded
) -> None:
    # Found in review: proposals and applies, made with admin keys, left no audit row at all,
    # and neither did a change refused to an agency key.
    admin, agency = bearer(seeded.keys["admin"]), bearer(seeded.keys["agency"])
    url = "/v1/registry/proposals"

    def writes(key_id: str, count_before: int) -> list[tuple[Any, ...]]:
        rows = (
            pool.get()
            .query(
                "SELECT phase, method, path, query, status FROM audit_log "
                "WHERE key_id = {k:String} AND method = 'POST' ORDER BY at",
                parameters={"k": key_id},
            )
            .result_rows
        )
        return [tuple(r) for r in rows[count_before:]]

    admin_before, agency_before = len(writes("test-admin", 0)), len(writes("test-sbi", 0))
    made = client.post(url, params={"reason": "audit"}, content=_proposal(seeded, "nic-audit"),
                       headers=admin)  # fmt: skip
    assert made.status_code == 201, made.text
    pid = made.json()["proposal_id"]
    applied = client.post(f"{url}/{pid}/apply", headers=admin)
    assert applied.status_code == 200, applied.text
    refused = client.post(url, params={"reason": "mine"}, content="x: 1", headers=agency)
    assert refused.status_code == 403
    assert writes("test-admin", admin_before) == [
        ("begin", "POST", url, "reason=audit", 0), ("end", "POST", url, "reason=audit", 201),
        ("begin", "POST", f"{url}/{pid}/apply", "", 0),
        ("end", "POST", f"{url}/{pid}/apply", "", 200),
    ]  # fmt: skip
    assert writes("test-sbi", agency_before) == [
        ("begin", "POST", url, "reason=mine", 0), ("end", "POST", url, "reason=mine", 403),
    ]  # fmt: skip
    # The change's author is the key the middleware found, as before.
    assert applied.json()["change"]["author"] == "test-admin"


def test_registry_writes_spend_the_keys_rate_limit(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded
) -> None:
    # Found in review: with a key limited to 5 a minute, GETs met 429 and 30 POSTs none.
    admin = bearer(seeded.keys["admin"])
    with TestClient(app(pool, settings, rate_limit_key_per_minute=5)) as c:
        codes = [
            c.post(
                "/v1/registry/proposals", params={"reason": "x"}, content="x: [", headers=admin
            ).status_code
            for _ in range(8)
        ]
        assert codes[:5] == [422] * 5 and codes[5:] == [429] * 3, codes
        # One bucket per key, reads and writes alike.
        assert c.get("/v1/me", headers=admin).status_code == 429


def test_invalid_keys_are_limited_per_client_address(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded
) -> None:
    # Found in review: a request with an invalid key was answered 401 before the rate limiter,
    # so keys could be tried at full speed.
    with TestClient(app(pool, settings, rate_limit_public_per_minute=6)) as c:
        wrong = bearer("tka_not-a-key")
        codes = [c.get("/v1/me", headers=wrong).status_code for _ in range(8)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3, codes
        r = c.post("/v1/registry/proposals", params={"reason": "x"}, headers=wrong)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        # Not even a good key is looked up from that address until the bucket refills: a
        # guess that answered 200 would otherwise still tell.
        assert c.get("/v1/me", headers=bearer(seeded.keys["auditor"])).status_code == 429
        # The public, without a key, has its own bucket.
        assert c.get("/v1/health").status_code == 200


def test_invalid_keys_sent_at_once_are_limited_too(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded
) -> None:
    # Found in review: the limiter only looked at the failed-key bucket before the lookup and
    # spent after it, so every guess already in flight passed the look: 200 guesses sent at
    # once were 200 lookups (200 x 401) with a burst of 5.
    limited = app(pool, settings, rate_limit_public_per_minute=6)

    async def guesses(address: str, headers: list[dict[str, str]]) -> list[int]:
        transport = httpx.ASGITransport(app=limited, client=(address, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            answers = await asyncio.gather(*(c.get("/v1/me", headers=h) for h in headers))
        return [a.status_code for a in answers]

    with TestClient(limited):  # runs the app's start-up
        codes = asyncio.run(guesses("203.0.113.8", [bearer(f"tka_guess{i}") for i in range(50)]))
        assert sorted(set(codes)) == [401, 429] and codes.count(401) == 5, codes
        # A good key spends nothing in the end, however many of its requests run at once.
        good = [bearer(seeded.keys["auditor"])] * 20
        assert set(asyncio.run(guesses("203.0.113.9", good))) == {200}
        assert asyncio.run(guesses("203.0.113.9", [bearer("tka_x")] * 5)) == [401] * 5


def test_keys_that_cannot_be_read_are_503_not_500(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(self: KeyAuth) -> None:
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(KeyAuth, "_refresh", unreachable)
    with TestClient(app(pool, settings), raise_server_exceptions=False) as c:
        r = c.get("/v1/me", headers=bearer(seeded.keys["auditor"]))
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert c.get("/v1/health").status_code == 200  # the public needs no key


def test_an_ipv6_client_is_limited_by_its_slash_64(
    pool: ClientPool, settings: CommonSettings
) -> None:
    # Found in review: the public and failed-key buckets were per address, and a site sends from
    # any address of its /64: 30 addresses got 30 answers past a burst of 5.
    limited = app(pool, settings, rate_limit_public_per_minute=6)
    codes = []
    for i in range(8):
        with TestClient(limited, client=(f"2001:db8:1:2::{i + 1:x}", 40000)) as c:
            codes.append(c.get("/v1/health").status_code)
    assert codes[:5] == [200] * 5 and codes[5:] == [429] * 3, codes
    with TestClient(limited, client=("2001:db8:1:3::1", 40000)) as other:  # another /64
        assert other.get("/v1/health").status_code == 200
    for address in ("192.0.2.7", "::ffff:192.0.2.8"):  # IPv4, and IPv4 mapped: per address
        with TestClient(limited, client=(address, 40000)) as v4:
            assert v4.get("/v1/health").status_code == 200


def test_the_client_address_is_the_peers_not_x_forwarded_for(tmp_path: Path) -> None:
    # Found in review: uvicorn's default proxy_headers took the address from X-Forwarded-For
    # when the peer was 127.0.0.1, so behind a proxy on the same host that passes the header
    # through, each caller chose the address of its rate limit (and of its audit rows).
    with tracker_up(tmp_path, {"TRACKER_RATE_LIMIT_PUBLIC_PER_MINUTE": "6"}) as url:
        codes = [
            httpx.get(f"{url}/v1/health", headers={"X-Forwarded-For": f"198.51.100.{i}"},
                      timeout=30).status_code
            for i in range(8)
        ]  # fmt: skip
    # One bucket, the peer's (the start-up's health check spent from it too).
    assert codes.count(429) >= 3 and codes[0] == 200, codes


def test_the_pages_load_nothing_from_another_origin_and_say_how_to_cache_them(
    client: TestClient,
) -> None:
    """Found in review: /docs was FastAPI's Swagger UI from a CDN (third-party script on the
    origin where keys are typed; blank offline), and no answer carried a caching or framing
    policy. /docs is now this server's own page, from its schema."""
    import re

    from api.headers import PAGE_POLICY

    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "<code>GET /v1/share</code>" in docs.text and "<code>GET /v1/usage</code>" in docs.text
    assert "<script" not in docs.text and not re.search(r'(src|href)="(https?:)?//', docs.text)
    assert client.get("/redoc").status_code == 404
    assert client.head("/docs").status_code == 200
    # Found in review (2026-11-26): the page and the health route answered HEAD with 405.
    for path in ("/", "/v1/health"):
        head = client.head(path)
        assert head.status_code == 200 and head.content == b"", path
    assert client.head("/").headers["content-security-policy"] == PAGE_POLICY
    assert "Basis (requests, tokens, cost, energy)" in docs.text  # an enumeration's values
    assert "Body (required): application/yaml (string)." in docs.text  # a proposal's body
    for path in ("/", "/docs", "/static/page.js", "/static/page.css"):
        reply = client.get(path)
        assert reply.status_code == 200, path
        assert reply.headers["content-security-policy"] == PAGE_POLICY, path
        assert reply.headers["cache-control"] == "no-cache", path
        assert reply.headers["x-content-type-options"] == "nosniff", path
        assert reply.headers["referrer-policy"] == "no-referrer", path
    for reply in (client.get("/v1/share"), client.get("/v1/usage")):  # an answer, a refusal
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in reply.headers
