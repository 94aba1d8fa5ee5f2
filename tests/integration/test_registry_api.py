"""Registry API: public reads of the registry and its history; admin-only proposals validated
exactly like the YAML loader, then applied (and "as classified now" through GET /v1/share)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import yaml
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from fastapi.testclient import TestClient

from api.app import create_app
from tests.integration.test_registry_cli import broken_registries
from tracker import registry_proposals, registry_store
from tracker.access import Role, add_key
from tracker.clickhouse import ClientPool
from tracker.registry import RegistryError, load, parse
from tracker.settings import ApiSettings

# Every test here runs on the embedded store and through the http:// DSN (conftest.py).
BOTH_STORES = True


@pytest.fixture(scope="module")
def admin(pool: ClientPool) -> dict[str, str]:
    key = add_key(pool.get(), load()[0], "reg-admin", Role.admin)[1]
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def auditor(pool: ClientPool) -> dict[str, str]:
    key = add_key(pool.get(), load()[0], "reg-auditor", Role.auditor)[1]
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def api(pool: ClientPool, admin: dict[str, str], auditor: dict[str, str]) -> Iterator[TestClient]:
    """Keys are made first: the key cache answers from what it loaded for a few seconds."""
    registry, text = load()
    registry_store.activate(pool.get(), registry, text, author="t", reason="base", source="t")
    # One admin proposes and applies throughout this module; the four-eyes default is tested
    # on an app of its own (test_a_proposal_is_applied_by_another_admin_than_its_author).
    with TestClient(create_app(pool, ApiSettings(registry_self_apply=True))) as c:
        yield c


def proposal_text(**changes: object) -> str:
    data = yaml.safe_load(load()[1])
    data["facilities"].append(
        {"id": "nic-bhubaneswar", "operator": "nic", "country": "IN", "name": "NIC Bhubaneswar",
         "grade": {"scheme": "meity-empanelment", "level": "empanelled"}}
    )  # fmt: skip
    data["endpoints"].append({"cidr": "10.77.0.0/16", "facility": "nic-bhubaneswar"})
    data.update(changes)
    return yaml.safe_dump(data, sort_keys=False)


def test_public_reads(api: TestClient) -> None:
    body = api.get("/v1/registry").json()
    registry = load()[0]
    assert body["version"] == registry.version
    assert body["in_force"]["author"] == "t"
    facilities = {f["id"]: f for f in body["registry"]["facilities"]}
    assert facilities["azure-centralindia"]["tier"] == "onshore"
    assert facilities["yotta-navi-mumbai"]["tier"] == "sovereign"
    assert facilities["yotta-navi-mumbai"]["grade"]["level"] == "empanelled"
    assert (
        facilities["openai-us"]["tier"] == "offshore" and facilities["openai-us"]["grade"] is None
    )
    operators = {o["id"]: o for o in body["registry"]["operators"]}
    assert operators["nic"]["domestic"] and not operators["microsoft"]["domestic"]
    text = api.get(f"/v1/registry/versions/{registry.version}", params={"format": "yaml"}).text
    assert parse(text, "downloaded").version == registry.version
    assert api.get("/v1/registry/versions/r-0000000000000000").status_code == 404
    assert api.get("/v1/registry/versions/nonsense").status_code == 422
    before = api.get("/v1/registry", params={"at": "2000-01-01T00:00:00Z"})
    assert before.status_code == 404


def test_changes_need_an_admin_key(api: TestClient, auditor: dict[str, str]) -> None:
    url = "/v1/registry/proposals"
    assert api.post(url, params={"reason": "x"}, content=proposal_text()).status_code == 401
    wrong = {"Authorization": "Bearer tka_not-a-key"}
    assert api.post(url, params={"reason": "x"}, content="a: 1", headers=wrong).status_code == 401
    denied = api.post(url, params={"reason": "x"}, content=proposal_text(), headers=auditor)
    assert denied.status_code == 403
    # Found in review (2026-11-26): "a auditor key cannot read this", on a write.
    assert denied.json()["detail"] == "an auditor key cannot use this (needs admin)"
    assert api.post(f"{url}/p-000000000000/apply", headers=auditor).status_code == 403


def test_invalid_proposal_lists_every_error_like_the_loader(
    api: TestClient, admin: dict[str, str]
) -> None:
    data = yaml.safe_load(proposal_text(country="India"))
    data["providers"][0]["operator"] = "ghost"
    text = yaml.safe_dump(data)
    r = api.post("/v1/registry/proposals", params={"reason": "bad"}, content=text, headers=admin)
    assert r.status_code == 422
    with pytest.raises(RegistryError) as info:
        parse(text, "proposal")
    expected = [{"file": "proposal", "path": p, "reason": m} for p, m in info.value.errors]
    assert r.json() == {"valid": False, "error_count": 2, "errors": expected}
    assert len(expected) == 2
    # Many errors: the count, the first hundred, and how many more (113 MB answered before).
    data["agencies"] += [{"id": f"a{i}", "bad": i} for i in range(300)]
    many = api.post("/v1/registry/proposals", params={"reason": "bad"},
                    content=yaml.safe_dump(data), headers=admin)  # fmt: skip
    assert many.status_code == 422 and many.json()["error_count"] >= 600
    assert len(many.json()["errors"]) == 101
    assert "more error(s) not listed" in many.json()["errors"][-1]["reason"]
    bad_yaml = api.post("/v1/registry/proposals", params={"reason": "x"}, content="a: [",
                        headers=admin)  # fmt: skip
    assert (
        bad_yaml.status_code == 422 and "not valid YAML" in bad_yaml.json()["errors"][0]["reason"]
    )


def test_a_proposal_with_a_repeated_key_or_an_impossible_date_is_422_with_its_line(
    api: TestClient, admin: dict[str, str]
) -> None:
    # Found in review: `country: IN, country: SG` was accepted (201) and, applied, classified
    # the facility as SG; a date-shaped `2026-02-30` ended in a 500.
    for bad, reason in broken_registries(load()[1]):
        r = api.post("/v1/registry/proposals", params={"reason": "x"}, content=bad,
                     headers=admin)  # fmt: skip
        assert r.status_code == 422, r.text
        [error] = r.json()["errors"]
        assert error["path"].startswith("line ") and error["reason"].startswith(reason), error


def test_a_blank_reason_or_an_unreachable_date_is_refused_with_the_field(
    api: TestClient, admin: dict[str, str]
) -> None:
    # Found in review: a reason of spaces passed the length check and ended in a 500.
    url = "/v1/registry/proposals"
    for reason in ("  ", "\t\n"):
        r = api.post(url, params={"reason": reason}, content=proposal_text(), headers=admin)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["query", "reason"]
    # Found in review: a NUL or a newline inside a reason was accepted (the CLI refuses them).
    for reason in ("why\x00not", "line one\nline two"):
        r = api.post(url, params={"reason": reason}, content=proposal_text(), headers=admin)
        assert r.status_code == 422 and r.json()["detail"].startswith("reason: "), r.text
    # A change scheduled past the range `?at=` reads could never be looked up.
    far = api.post(f"{url}/p-000000000000/apply", params={"effective_from": "9999-12-31"},
                   headers=admin)  # fmt: skip
    assert far.status_code == 422 and far.json()["detail"].startswith("effective_from: ")
    at = api.get("/v1/registry", params={"at": "2100-01-01T00:00:00Z"})
    assert at.status_code == 422 and at.json()["detail"].startswith("at: ")


def test_a_backdated_apply_is_422_and_an_oversized_proposal_is_not_read_whole(
    api: TestClient, admin: dict[str, str]
) -> None:
    # Found in review: a backdated apply answered 409, which the docs keep for conflicts with
    # the ledger; it is bad input, named by its parameter. And a proposal body was read whole
    # before its size was checked (a 400 MB body held in the API process).
    made = api.post("/v1/registry/proposals", params={"reason": "backdated"},
                    content=proposal_text(), headers=admin)  # fmt: skip
    assert made.status_code == 201, made.text
    pid = made.json()["proposal_id"]
    old = api.post(f"/v1/registry/proposals/{pid}/apply",
                   params={"effective_from": "2020-01-01T00:00:00Z"}, headers=admin)  # fmt: skip
    assert old.status_code == 422, old.text
    assert old.json()["detail"].startswith("effective_from: ") and "past" in old.text
    assert api.get(f"/v1/registry/proposals/{pid}", headers=admin).json()["status"] == "proposed"

    def chunks() -> Iterator[bytes]:  # streamed: no Content-Length to refuse it by
        for _ in range(3):
            yield b"#" * (1 << 20)

    big = api.post("/v1/registry/proposals", params={"reason": "big"}, content=chunks(),
                   headers=admin)  # fmt: skip
    assert big.status_code == 413 and "over 2097152 bytes" in big.text, big.text


def test_public_as_classified_now_is_bounded_to_a_year(
    api: TestClient, admin: dict[str, str]
) -> None:
    # Found in review: "now" reads raw records for months no reclassify run covered, uncached;
    # a public caller could ask for ten years of it at a time.
    decade = {"from": "2016-01-01", "to": "2026-01-01", "as_classified": "now"}
    refused = api.get("/v1/share", params=decade)
    assert refused.status_code == 422 and "366 days" in refused.json()["detail"]
    assert api.get("/v1/share", params=decade, headers=admin).status_code == 200
    year = {"from": "2025-01-01", "to": "2026-01-01", "as_classified": "now"}
    assert api.get("/v1/share", params=year).status_code == 200


def test_propose_apply_and_reread_as_classified_now(
    api: TestClient, admin: dict[str, str], pool: ClientPool
) -> None:
    # Records served from 10.77.x.x landed under the shipped registry: unknown then.
    key_resp = api.get("/v1/share", params={"from": "2026-01-01", "to": "2026-02-01"})
    assert key_resp.status_code == 200
    from pipeline.processor import Processor
    from pipeline.writer import Writer
    from tracker.classify import Classifier
    from tracker.contract import parse_record

    start = datetime(2026, 1, 5, tzinfo=UTC)
    records = [
        parse_record({"record_id": f"a{i}", "agency_id": "in-moe", "provider": "llama_local",
                      "model": "llama", "endpoint_host": "10.77.3.4", "request_count": 3,
                      "occurred_at": (start + timedelta(hours=i)).isoformat()}, gateway_id="gw")
        for i in range(30)
    ]  # fmt: skip
    Writer(pool.get()).write(Processor(Classifier(load()[0])).process_records(records).rows)
    window = {"from": "2026-01-01", "to": "2026-02-01"}
    then = api.get("/v1/share", params=window, headers=admin).json()
    assert then["totals"]["unknown"] == 90.0 and then["domestic_share"] == 0.0

    text = proposal_text()
    r = api.post("/v1/registry/proposals", params={"reason": "new NIC site"}, content=text,
                 headers=admin)  # fmt: skip
    assert r.status_code == 201, r.text
    proposal = r.json()
    assert proposal["valid"] and proposal["base_version"] == load()[0].version
    assert proposal["changes"]["facilities"]["added"] == ["nic-bhubaneswar"]
    assert proposal["changes"]["endpoints"]["added"] == ["10.77.0.0/16"]
    pid = proposal["proposal_id"]
    got = api.get(f"/v1/registry/proposals/{pid}", headers=admin).json()
    assert got["status"] == "proposed" and got["content"] == text
    # Proposing changes nothing in force.
    assert api.get("/v1/registry").json()["version"] == load()[0].version

    applied = api.post(f"/v1/registry/proposals/{pid}/apply", headers=admin)
    assert applied.status_code == 200, applied.text
    change = applied.json()["change"]
    assert change["author"] == "reg-admin" and change["source"] == f"proposal:{pid}"
    assert "new NIC site" in change["reason"]
    assert api.get("/v1/registry").json()["version"] == proposal["version"]
    # Times in UTC, said so, read the same on every route (found in review: created_at had no
    # zone, and applied_at read `.891357+00:00` when applied, `.891000Z` later).
    reread = api.get(f"/v1/registry/proposals/{pid}", headers=admin).json()
    for name in ("created_at", "applied_at"):
        assert reread[name].endswith("Z") and reread[name] == applied.json()[name], name
    assert got["created_at"] == reread["created_at"]
    again = api.post(f"/v1/registry/proposals/{pid}/apply", headers=admin)
    assert again.status_code == 409
    assert api.post("/v1/registry/proposals/p-000000000000/apply", headers=admin).status_code == 404
    # A proposal id is bounded by its pattern: a 20,000-character one was echoed in a 404.
    for method in ("GET", "POST"):
        long = api.request(method, "/v1/registry/proposals/p-" + "a" * 20_000
                           + ("/apply" if method == "POST" else ""), headers=admin)  # fmt: skip
        assert long.status_code == 422 and len(long.text) < 2_000, (method, long.status_code)

    # A proposal made against the old version cannot be applied over the new one.
    stale = api.post("/v1/registry/proposals", params={"reason": "x"}, content=load()[1],
                     headers=admin).json()  # fmt: skip
    assert stale["base_version"] == proposal["version"]
    other = api.post("/v1/registry/proposals", params={"reason": "y"},
                     content=proposal_text(country_name="Bharat"), headers=admin).json()  # fmt: skip
    assert api.post(f"/v1/registry/proposals/{other['proposal_id']}/apply",
                    headers=admin).status_code == 200  # fmt: skip
    conflict = api.post(f"/v1/registry/proposals/{stale['proposal_id']}/apply", headers=admin)
    assert conflict.status_code == 409 and "moved" in conflict.json()["detail"]

    history = api.get("/v1/registry/versions").json()
    assert [c["version"] for c in history["changes"]][-2:] == [proposal["version"],
                                                                 other["version"]]  # fmt: skip
    now = api.get("/v1/share", params={**window, "as_classified": "now"}, headers=admin).json()
    assert now["totals"]["sovereign"] == 90.0 and now["domestic_share"] == 1.0
    # It says which version it re-classified by (found in review: nothing said so, though a
    # scheduled change can replace it at any time); "then" names none, each record has its own.
    assert now["registry_version"] == other["version"] == api.get("/v1/registry").json()["version"]
    then_again = api.get("/v1/share", params=window, headers=admin).json()
    assert then_again["totals"] == then["totals"]  # "then" is what was published
    assert then_again["registry_version"] is None


class _LedgerWriteFails:
    """A client whose insert into the change ledger fails (the engine went away between the
    two inserts of a load); everything else reaches the real store."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        if table == "registry_changes":
            raise OperationalError("connection refused (injected)")
        return self._client.insert(table, *args, **kwargs)


def test_a_load_that_failed_between_its_two_inserts_is_not_published(
    api: TestClient, pool: ClientPool
) -> None:
    text = proposal_text(country_name="Bharat Ganarajya")
    registry = parse(text, "half-loaded")
    with pytest.raises(OperationalError):
        registry_store.activate(cast(Client, _LedgerWriteFails(pool.get())), registry, text, author="t",
                                reason="half", source="t")  # fmt: skip
    # The text was kept (it is written first) but never came into force: not published.
    assert registry_store.content(pool.get(), registry.version) == text
    listed = [v["version"] for v in api.get("/v1/registry/versions").json()["versions"]]
    assert registry.version not in listed and len(listed) >= 1
    assert api.get(f"/v1/registry/versions/{registry.version}").status_code == 404
    assert api.get("/v1/registry").json()["version"] != registry.version
    # Loaded again, whole this time: in force and published.
    registry_store.activate(pool.get(), registry, text, author="t", reason="again", source="t")
    listed = [v["version"] for v in api.get("/v1/registry/versions").json()["versions"]]
    assert listed.count(registry.version) == 1
    assert api.get(f"/v1/registry/versions/{registry.version}").status_code == 200
    assert api.get("/v1/registry").json()["version"] == registry.version


def _proposal_on_top(api: TestClient, admin: dict[str, str], facility: str) -> str:
    """A proposal adding one facility to the version in force; its id."""
    version = api.get("/v1/registry").json()["version"]
    text = api.get(f"/v1/registry/versions/{version}", params={"format": "yaml"}).text
    data = yaml.safe_load(text)
    data["facilities"].append({"id": facility, "operator": "nic", "country": "IN",
                               "name": facility})  # fmt: skip
    r = api.post("/v1/registry/proposals", params={"reason": facility},
                 content=yaml.safe_dump(data, sort_keys=False), headers=admin)  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["proposal_id"])


def test_applies_at_the_same_moment_record_one_change(
    api: TestClient, admin: dict[str, str], pool: ClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in review: two proposals made against one version and applied at once both got 200
    # and both were recorded with the same `previous`, the later undoing the earlier; the same
    # proposal applied twice at once was recorded twice. Each apply here is held after its checks
    # (at the re-validation just before the change is recorded) until all three have made them.
    real_parse = parse  # tracker.registry.parse, which registry_proposals calls
    for attempt in range(3):
        first = _proposal_on_top(api, admin, f"nic-race-a{attempt}")
        second = _proposal_on_top(api, admin, f"nic-race-b{attempt}")
        before = api.get("/v1/registry").json()["version"]
        barrier = threading.Barrier(3)

        def parse_together(
            text: str, source: str, barrier: threading.Barrier = barrier, **kwargs: Any
        ) -> Any:
            if source.startswith("proposal:"):  # apply's, after its checks
                barrier.wait(timeout=60)
            return real_parse(text, source, **kwargs)

        monkeypatch.setattr(registry_proposals, "parse", parse_together)
        outcomes: dict[str, tuple[int, dict[str, Any]]] = {}

        def apply(name: str, pid: str, outcomes: dict[str, Any] = outcomes) -> None:
            r = api.post(f"/v1/registry/proposals/{pid}/apply", headers=admin)
            outcomes[name] = (r.status_code, r.json())

        threads = [
            threading.Thread(target=apply, args=(name, pid))
            for name, pid in (("first", first), ("second", second), ("first again", first))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        monkeypatch.setattr(registry_proposals, "parse", real_parse)

        statuses = sorted(status for status, _ in outcomes.values())
        assert statuses == [200, 409, 409], outcomes
        winner = next(body for status, body in outcomes.values() if status == 200)
        for status, body in outcomes.values():
            if status == 409:
                assert "nothing was recorded" in body["detail"] or "moved" in body["detail"]
        recorded = [c for c in registry_store.history(pool.get())
                    if c.source in (f"proposal:{first}", f"proposal:{second}")]  # fmt: skip
        assert len(recorded) == 1, recorded
        assert recorded[0].previous == before and recorded[0].version == winner["version"]
        assert api.get("/v1/registry").json()["version"] == winner["version"]
        # The loser was made against a version no longer in force: refused from now on.
        loser = second if recorded[0].source == f"proposal:{first}" else first
        late = api.post(f"/v1/registry/proposals/{loser}/apply", headers=admin)
        assert late.status_code == 409 and "moved" in late.json()["detail"], late.text
        again = api.post(f"/v1/registry/proposals/{first}/apply", headers=admin)
        assert again.status_code == 409


def test_a_load_checked_against_a_ledger_that_moved_is_refused(
    api: TestClient, pool: ClientPool
) -> None:
    # `tracker registry load` takes a ledger position like an apply: one that read the ledger
    # before another change landed records nothing (migration 0008).
    client = pool.get()
    text = proposal_text(country_name="Bharat (first)")
    position = registry_store.ledger_length(client)
    first = registry_store.activate(client, parse(text, "first"), text, author="t",
                                    reason="first", source="first-load")  # fmt: skip
    assert first is not None and registry_store.ledger_length(client) == position + 1
    late_text = proposal_text(country_name="Bharat (late)")
    with pytest.raises(registry_store.ChangeConflict):
        registry_store.activate(client, parse(late_text, "late"), late_text, author="t",
                                reason="late", source="late-load", after=position)  # fmt: skip
    assert not registry_store.recorded_from(client, "late-load")
    # The same version, checked before the first landed (one proposal applied twice at once):
    # refused too, not taken for a reload of the version in force (found in review).
    with pytest.raises(registry_store.ChangeConflict):
        registry_store.activate(client, parse(text, "again"), text, author="t", reason="again",
                                source="again-load", after=position)  # fmt: skip
    assert registry_store.ledger_length(client) == position + 1
    assert api.get("/v1/registry").json()["version"] == first.version


def test_an_apply_behind_a_scheduled_change_is_refused_unless_asked(
    api: TestClient, admin: dict[str, str], pool: ClientPool
) -> None:
    # Found in review: applied now with a change scheduled for tomorrow, a proposal was in force
    # for a day, then undone by the scheduled change without a word. (Last in the module: it
    # leaves a change scheduled.)
    ahead = _proposal_on_top(api, admin, "nic-tomorrow")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    scheduled = api.post(f"/v1/registry/proposals/{ahead}/apply",
                         params={"effective_from": tomorrow}, headers=admin)  # fmt: skip
    assert scheduled.status_code == 200, scheduled.text
    now = _proposal_on_top(api, admin, "nic-now")
    refused = api.post(f"/v1/registry/proposals/{now}/apply", headers=admin)
    assert refused.status_code == 409, refused.text
    detail = refused.json()["detail"]
    assert scheduled.json()["version"] in detail and "?before_scheduled=true" in detail
    assert api.get(f"/v1/registry/proposals/{now}", headers=admin).json()["status"] == "proposed"
    knowingly = api.post(f"/v1/registry/proposals/{now}/apply",
                         params={"before_scheduled": "true"}, headers=admin)  # fmt: skip
    assert knowingly.status_code == 200, knowingly.text
    assert api.get("/v1/registry").json()["version"] == knowingly.json()["version"]
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert (
        api.get("/v1/registry", params={"at": at}).json()["version"] == scheduled.json()["version"]
    )
    # Found in review: a proposal made against the version in force now, applied after the
    # scheduled change, replaced it, its edits gone, though the diff reviewed never showed it.
    stale = _proposal_on_top(api, admin, "nic-after")
    after = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    moved = api.post(f"/v1/registry/proposals/{stale}/apply", params={"effective_from": after},
                     headers=admin)  # fmt: skip
    assert moved.status_code == 409 and "moved" in moved.json()["detail"], moved.text
    # Proposed against the scheduled version's time, it is that version's change.
    ahead_version = scheduled.json()["version"]
    data = yaml.safe_load(
        api.get(f"/v1/registry/versions/{ahead_version}", params={"format": "yaml"}).text
    )
    data["facilities"].append({"id": "nic-later", "operator": "nic", "country": "IN",
                               "name": "nic-later"})  # fmt: skip
    later = api.post("/v1/registry/proposals", params={"reason": "later", "against": after},
                     content=yaml.safe_dump(data, sort_keys=False), headers=admin)  # fmt: skip
    assert later.status_code == 201 and later.json()["base_version"] == ahead_version, later.text
    assert later.json()["changes"] == {"facilities": {"added": ["nic-later"], "removed": [],
                                                      "changed": []}}  # fmt: skip
    applied = api.post(f"/v1/registry/proposals/{later.json()['proposal_id']}/apply",
                       params={"effective_from": after}, headers=admin)  # fmt: skip
    assert applied.status_code == 200, applied.text
    assert applied.json()["change"]["previous"] == ahead_version


def test_a_proposal_is_applied_by_another_admin_than_its_author(
    pool: ClientPool, admin: dict[str, str]
) -> None:
    """Found in review: the admin who proposed a change could apply it at once, alone. By
    default a second admin applies it (TRACKER_REGISTRY_SELF_APPLY=true allows one admin)."""
    second = {"Authorization": "Bearer "
              + add_key(pool.get(), load()[0], "reg-admin-2", Role.admin)[1]}  # fmt: skip
    with TestClient(create_app(pool)) as api:  # the default settings
        made = api.post("/v1/registry/proposals", params={"reason": "four eyes"},
                        content=proposal_text(country_name="India (four eyes)"), headers=admin)  # fmt: skip
        assert made.status_code == 201, made.text
        pid = made.json()["proposal_id"]
        alone = api.post(f"/v1/registry/proposals/{pid}/apply", headers=admin,
                         params={"before_scheduled": "true"})  # fmt: skip
        assert alone.status_code == 409, alone.text
        assert "another admin applies it" in alone.json()["detail"]
        assert api.get(f"/v1/registry/proposals/{pid}", headers=admin).json()["status"] == (
            "proposed"
        )
        # (Other tests of the module leave changes scheduled ahead: recorded before them.)
        applied = api.post(f"/v1/registry/proposals/{pid}/apply", headers=second,
                           params={"before_scheduled": "true"})  # fmt: skip
        assert applied.status_code == 200, applied.text
        change = applied.json()["change"]
        assert change["author"] == "reg-admin-2" and "(proposed by reg-admin)" in change["reason"]
