"""GET /v1/usage: filters, keyset pagination in a stable order, and the three export formats
holding the same records as the pages."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import threading
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import httpx
import orjson
import pyarrow.parquet as pq
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from starlette.requests import ClientDisconnect

from api.routes import usage as usage_route
from pipeline.processor import Processor
from pipeline.writer import Writer
from tests.integration.test_api_support import SMALL_DAY, Seeded, app, bearer, seed
from tests.integration.test_collector_support import ServerThread
from tracker import usage_export
from tracker.classify import Classifier
from tracker.clickhouse import ClientPool
from tracker.settings import CommonSettings

WEEK = {"from": "2026-06-10", "to": "2026-06-17"}
ORDER = ("agency_id", "occurred_at", "gateway_id", "record_id")


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


def walk(
    client: TestClient, headers: dict[str, str], params: dict[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        p = {**params, **({"cursor": cursor} if cursor else {})}
        body = client.get("/v1/usage", params=p, headers=headers).json()
        rows += body["rows"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


def key(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in ORDER)


def test_pages_cover_the_range_exactly_once_in_order(
    client: TestClient, seeded: Seeded, auditor: dict[str, str]
) -> None:
    expected = {r.record_id for r in seeded.records
                if "2026-06-10" <= r.occurred_at.date().isoformat() < "2026-06-17"}  # fmt: skip
    rows = walk(client, auditor, {**WEEK, "limit": 333})
    ids = [r["record_id"] for r in rows]
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected
    assert [key(r) for r in rows] == sorted(key(r) for r in rows)


def test_filters_apply(client: TestClient, seeded: Seeded, auditor: dict[str, str]) -> None:
    params = {**WEEK, "tier": ["offshore", "unknown"], "status": "error", "limit": 10000}
    rows = client.get("/v1/usage", params=params, headers=auditor).json()["rows"]
    assert rows and {r["tier"] for r in rows} <= {"offshore", "unknown"}
    assert {r["status"] for r in rows} == {"error"}
    by_gateway = client.get(
        "/v1/usage", params={**WEEK, "gateway": "gw-in-sbi", "provider": "openai"}, headers=auditor
    ).json()["rows"]
    assert {(r["gateway_id"], r["provider"]) for r in by_gateway} <= {("gw-in-sbi", "openai")}


def test_a_cursor_stays_valid_while_records_land(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    params = {"from": SMALL_DAY.isoformat(), "to": "2026-08-04", "limit": 20}
    first = client.get("/v1/usage", params=params, headers=auditor).json()
    # A record that sorts before the cursor lands between two pages: the next page neither
    # repeats nor skips anything that was already after the cursor.
    early = seeded.records[-1].model_copy(
        update={"record_id": "late-arrival", "agency_id": "in-aiims-delhi"}
    )
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records([early]).rows)
    rest = walk(client, auditor, {**params, "cursor": first["next_cursor"]})
    ids = [r["record_id"] for r in first["rows"] + rest]
    assert len(ids) == len(set(ids)) == 45  # the late record sorts before the cursor
    assert "late-arrival" not in ids


@pytest.mark.parametrize("export", [None, "csv"])
@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00"])
def test_a_crafted_cursor_is_a_422_not_a_500(
    client: TestClient, auditor: dict[str, str], export: str | None, when: str
) -> None:
    # Found in review: year 1 at +14:00 overflowed in Python, naive year 1 reached the engine.
    cursor = base64.urlsafe_b64encode(orjson.dumps(["a", when, "g", "r"])).decode().rstrip("=")
    params = {**WEEK, "cursor": cursor, **({"format": export} if export else {})}
    r = client.get("/v1/usage", params=params, headers=auditor)
    assert r.status_code == 422, r.text
    assert "cursor" in r.json()["detail"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_exports_hold_the_same_records_as_the_pages(
    client: TestClient, auditor: dict[str, str], fmt: str
) -> None:
    pages = walk(client, auditor, {**WEEK, "limit": 10000})
    r = client.get("/v1/usage", params={**WEEK, "format": fmt}, headers=auditor)
    assert r.status_code == 200
    assert "attachment" in r.headers["content-disposition"]
    if fmt == "csv":
        assert r.headers["content-type"].startswith("text/csv")
        rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(r.text)))
    elif fmt == "jsonl":
        rows = [orjson.loads(line) for line in r.content.splitlines()]
    else:
        rows = pq.read_table(io.BytesIO(r.content)).to_pylist()
    assert [row["record_id"] for row in rows] == [row["record_id"] for row in pages]
    page_cost = {p["record_id"]: p["cost"] for p in pages}
    for row in rows[:500]:
        got = row["cost"]
        want = page_cost[row["record_id"]]
        # A null is an empty CSV cell (found in review: it was the two characters \\N).
        assert (got in (None, "")) == (want is None)
        if want is not None:
            assert Decimal(str(got)) == Decimal(want)


def test_export_limit_caps_rows(client: TestClient, auditor: dict[str, str]) -> None:
    r = client.get("/v1/usage", params={**WEEK, "format": "jsonl", "limit": 5}, headers=auditor)
    assert len(r.content.splitlines()) == 5


def test_export_across_months_and_from_a_cursor_keeps_the_global_order(
    client: TestClient, auditor: dict[str, str]
) -> None:
    span = {"from": "2026-05-01", "to": "2026-08-31"}  # three partitions, every agency
    pages = walk(client, auditor, {**span, "limit": 10000})
    assert len({r["occurred_at"][:7] for r in pages}) == 3
    r = client.get("/v1/usage", params={**span, "format": "jsonl"}, headers=auditor)
    rows = [orjson.loads(line) for line in r.content.splitlines()]
    assert [key(x) for x in rows] == [key(x) for x in pages]
    first = client.get("/v1/usage", params={**span, "limit": 1234}, headers=auditor).json()
    rest = client.get(
        "/v1/usage",
        params={**span, "format": "csv", "cursor": first["next_cursor"], "limit": 2000},
        headers=auditor,
    )
    tail = list(csv.DictReader(io.StringIO(rest.text)))
    assert [x["record_id"] for x in tail] == [x["record_id"] for x in pages[1234:3234]]


def export_scope(seeded: Seeded, spec: str) -> dict[str, Any]:
    """An auditor's CSV export of June 2026 as a server hands it to the app (ASGI scope)."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": "/v1/usage", "raw_path": b"/v1/usage",
        "query_string": b"from=2026-06-01&to=2026-07-01&format=csv", "root_path": "",
        "headers": [(b"host", b"test"),
                    (b"authorization", f"Bearer {seeded.keys['auditor']}".encode())],
        "client": ("127.0.0.1", 5555), "server": ("test", 80), "state": {},
    }  # fmt: skip


def exporters() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "usage-export"}


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
@pytest.mark.parametrize("gone_at", ["http.response.start", "http.response.body"])
def test_an_export_whose_client_is_gone_leaves_no_thread_behind(
    client: TestClient,
    seeded: Seeded,
    gone_at: str,
    spec: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Found in review: under ASGI spec 2.4 Starlette never reads the body of a response whose
    # start could not be sent, and the export's thread, started before, ran on for ever. The
    # app is driven as a server would drive it, with a client gone at `gone_at`; a month of
    # records is far more than the chunks the queue between thread and response holds. The
    # body is kept referenced, as a reference cycle through a traceback would keep it: a body
    # left suspended must not depend on the garbage collector to stop its thread.
    held: list[object] = []
    produce = usage_route._produce

    def holding(*args: Any) -> Any:
        held.append(produce(*args))
        return held[-1]

    monkeypatch.setattr(usage_route, "_produce", holding)
    before = exporters()
    sent: list[str] = []
    gone = threading.Event()

    async def receive() -> dict[str, Any]:
        while not gone.is_set():  # the server learns of it when a send fails
            await anyio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == gone_at:
            gone.set()
            raise OSError("client gone")

    scope = export_scope(seeded, spec)

    async def request() -> set[threading.Thread]:
        # What the server sees of a client gone; the thread left behind is what is checked,
        # while the server's loop still runs (at its end, asyncio closes whatever is left).
        with contextlib.suppress(ClientDisconnect, OSError):
            await client.app(scope, receive, send)
        deadline = time.monotonic() + 10  # a stopped producer notices within 0.25 s
        while exporters() - before and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        return exporters() - before

    assert not anyio.run(request)
    assert sent[-1] == gone_at, sent
    assert len(held) == 1


def test_range_ends_finer_than_a_millisecond_keep_the_half_open_range(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    # Found in review: bounds were cut to the millisecond, so `to` 400 us after a record left
    # it out and `from` 400 us after it took it in, on pages and in every export.
    at = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
    record = seeded.records[0].model_copy(
        update={"record_id": "sub-ms", "agency_id": "in-sbi", "occurred_at": at}
    )
    Writer(pool.get()).write(Processor(Classifier(seeded.registry)).process_records([record]).rows)
    near = (at + timedelta(microseconds=400)).isoformat()
    for params, expected in (
        ({"from": at.isoformat(), "to": near}, ["sub-ms"]),
        ({"from": near, "to": (at + timedelta(seconds=1)).isoformat()}, []),
    ):
        page = client.get("/v1/usage", params=params, headers=auditor).json()["rows"]
        assert [r["record_id"] for r in page] == expected, params
        lines = client.get("/v1/usage", params={**params, "format": "jsonl"}, headers=auditor)
        assert [orjson.loads(ln)["record_id"] for ln in lines.text.splitlines()] == expected


def test_a_csv_cell_a_spreadsheet_would_run_is_written_as_text(
    client: TestClient, pool: ClientPool, seeded: Seeded, auditor: dict[str, str]
) -> None:
    """Found in review: text a gateway sent (model, provider, use_case...) reached the CSV as
    it was, so `=HYPERLINK(...)` ran as a formula where an auditor opened the export. In CSV a
    text value starting with =, +, -, @, tab or CR gets a leading apostrophe; JSON lines and
    Parquet stay exact, and the order and cursors are the stored values'."""
    when = datetime(2026, 9, 3, 12, tzinfo=UTC)
    evil = seeded.records[0].model_copy(update={
        "record_id": "-csv-evil", "occurred_at": when, "model": '=HYPERLINK("http://x","y")',
        "provider": "+cmd", "use_case": "@SUM(1+1)", "endpoint_host": None, "region": None,
    })  # fmt: skip
    plain = evil.model_copy(update={"record_id": "csv-plain", "model": "gpt-4o",
                                    "provider": "openai", "use_case": "a-b"})  # fmt: skip
    rows = Processor(Classifier(seeded.registry)).process_records([evil, plain]).rows
    Writer(pool.get()).write(rows)
    span = {"from": "2026-09-03", "to": "2026-09-04", "agency": evil.agency_id}
    r = client.get("/v1/usage", params={**span, "format": "csv"}, headers=auditor)
    assert r.status_code == 200, r.text
    got = {row["record_id"]: row for row in csv.DictReader(io.StringIO(r.text))}
    assert list(got) == ["'-csv-evil", "csv-plain"]  # the stored order: "-" sorts first
    assert got["'-csv-evil"]["model"] == '\'=HYPERLINK("http://x","y")'
    assert got["'-csv-evil"]["provider"] == "'+cmd"
    assert got["'-csv-evil"]["use_case"] == "'@SUM(1+1)"
    assert got["csv-plain"]["model"] == "gpt-4o" and got["csv-plain"]["use_case"] == "a-b"
    jsonl = client.get("/v1/usage", params={**span, "format": "jsonl"}, headers=auditor)
    exact = [orjson.loads(line) for line in jsonl.content.splitlines()]
    assert [(x["record_id"], x["model"]) for x in exact] == [
        ("-csv-evil", '=HYPERLINK("http://x","y")'), ("csv-plain", "gpt-4o")]  # fmt: skip


def test_an_export_limit_over_the_cap_is_a_422_not_lowered(
    pool: ClientPool, settings: CommonSettings, seeded: Seeded, auditor: dict[str, str]
) -> None:
    """Found in review: a `limit` over TRACKER_MAX_EXPORT_ROWS was lowered to the cap without
    a word, and the export ended like a complete one of fewer rows than asked for."""
    with TestClient(app(pool, settings, max_export_rows=100)) as c:
        for fmt in ("csv", "jsonl", "parquet"):
            over = c.get("/v1/usage", params={**WEEK, "format": fmt, "limit": 101}, headers=auditor)
            assert over.status_code == 422, over.text[:300]
            detail = over.json()["detail"]
            assert detail.startswith("limit:") and "at most 100 rows" in detail, detail
        # At the cap, the client's own limit: a clean end at that many rows.
        at = c.get("/v1/usage", params={**WEEK, "format": "jsonl", "limit": 100}, headers=auditor)
        assert at.status_code == 200 and len(at.content.splitlines()) == 100
        # Pages have their own bound (10000), which the export cap does not lower.
        page = c.get("/v1/usage", params={**WEEK, "limit": 101}, headers=auditor)
        assert page.status_code == 200 and len(page.json()["rows"]) == 101


def _export(url: str, params: dict[str, Any], headers: dict[str, str]) -> tuple[bytes, bool]:
    """What a client of a real server receives, and whether the transfer ended cleanly."""
    got = b""
    try:
        with httpx.stream("GET", f"{url}/v1/usage", params=params, headers=headers,
                          timeout=60) as r:  # fmt: skip
            assert r.status_code == 200, r.read()
            for part in r.iter_bytes():
                got += part
    except httpx.RemoteProtocolError:  # the chunked body ended without its last chunk
        return got, False
    return got, True


def _audit_ends(pool: ClientPool) -> list[tuple[int, int]]:
    """(status, rows) of the auditor key's `end` audit rows, oldest first."""
    found = pool.get().query(
        "SELECT status, rows FROM audit_log WHERE key_id = 'test-auditor' AND phase = 'end' "
        "ORDER BY at"
    )
    return [(int(status), int(rows)) for status, rows in found.result_rows]


def _next_audit_end(pool: ClientPool, seen: int) -> tuple[int, int]:
    """The `end` row after the first `seen`: it is written once the response is over."""
    deadline = time.monotonic() + 30
    while len(ends := _audit_ends(pool)) <= seen:
        assert time.monotonic() < deadline, "no audit end row"
        time.sleep(0.1)
    return ends[seen]


def test_an_export_stopped_by_the_cap_with_rows_left_is_cut_off(
    client: TestClient,
    pool: ClientPool,
    settings: CommonSettings,
    seeded: Seeded,
    auditor: dict[str, str],
) -> None:
    """Found in review: an export stopped by TRACKER_MAX_EXPORT_ROWS ended like a complete one
    (200, a clean end, nothing to tell it was short). The status is sent before the first row,
    so the transfer is cut off instead: the client sees an incomplete body, never a clean end,
    whether the cap falls inside a window or at its end (the next agency's rows remain), and
    the audit log says 499; an export that the cap holds exactly is whole."""
    span = {"from": SMALL_DAY.isoformat(), "to": (SMALL_DAY + timedelta(days=1)).isoformat()}
    pages = walk(client, auditor, {**span, "limit": 10000})
    total = len(pages)
    first_agency = sum(1 for r in pages if r["agency_id"] == pages[0]["agency_id"])
    assert 0 < first_agency < total - 1
    for cap, whole in ((total - 1, False), (first_agency, False), (total, True)):
        with ServerThread(app(pool, settings, max_export_rows=cap)) as url:
            for fmt in ("csv", "jsonl", "parquet"):
                seen = len(_audit_ends(pool))
                body, ended = _export(url, {**span, "format": fmt}, auditor)
                assert ended == whole, (fmt, cap, total)
                # The log tells a cut export from a whole one too, with the rows it carried.
                assert _next_audit_end(pool, seen) == (200 if whole else 499, cap), fmt
                if fmt == "jsonl":  # what did arrive is the export's first rows, in order
                    ids = [orjson.loads(line)["record_id"] for line in body.splitlines()]
                    assert ids == [r["record_id"] for r in pages[:cap]], (cap, total)
                elif fmt == "csv":
                    assert len(body.splitlines()) == 1 + cap, (cap, total)
                elif whole:
                    assert pq.read_table(io.BytesIO(body)).num_rows == total


def test_a_parquet_export_pages_rows_stamped_at_one_instant(
    client: TestClient,
    pool: ClientPool,
    seeded: Seeded,
    auditor: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: Parquet windows were cut by time only, so rows stamped at one instant
    (a backfill) made one window, read whole, and one row group of any size. Windows are paged
    by the sort key: no row group holds more than the budget, and the rows and their order are
    the pages', also from a cursor and up to a limit."""
    budget = 40
    monkeypatch.setattr(usage_export, "PARQUET_WINDOW_ROWS", budget)
    at = datetime(2026, 9, 20, 12, tzinfo=UTC)
    base = seeded.records[0].model_copy(update={"agency_id": "in-sbi", "occurred_at": at})
    burst = [base.model_copy(update={"record_id": f"burst-{i:03d}", "gateway_id": f"gw-b{i % 3}"})
             for i in range(250)]  # fmt: skip
    around = [base.model_copy(update={"record_id": f"around-{i}", "occurred_at": at + timedelta(
              hours=h)}) for i, h in enumerate((-3, -1, 1, 2, 5))]  # fmt: skip
    rows = Processor(Classifier(seeded.registry)).process_records(burst + around).rows
    Writer(pool.get()).write(rows)
    span = {"from": "2026-09-20", "to": "2026-09-21"}
    pages = walk(client, auditor, {**span, "limit": 10000})
    assert len(pages) == 255

    def parquet(params: dict[str, Any]) -> list[str]:
        r = client.get("/v1/usage", params={**span, **params, "format": "parquet"},
                       headers=auditor)  # fmt: skip
        assert r.status_code == 200, r.text
        file = pq.ParquetFile(io.BytesIO(r.content))
        sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
        assert sizes and max(sizes) <= budget, sizes
        return [str(x) for x in file.read().column("record_id").to_pylist()]

    ids = [r["record_id"] for r in pages]
    assert parquet({}) == ids
    first = client.get("/v1/usage", params={**span, "limit": 77}, headers=auditor).json()
    assert parquet({"cursor": first["next_cursor"]}) == ids[77:]
    assert parquet({"cursor": first["next_cursor"], "limit": 100}) == ids[77:177]


def test_an_export_left_unread_is_cut_off_and_exports_at_once_are_bounded(
    client: TestClient, seeded: Seeded, auditor: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: nothing bounded how many exports one key ran at once, and one whose
    client stopped reading held its memory (~10 MB) for as long as the connection stayed
    open (60 unread: 629 MB -> 1.26 GB). Now each key runs at most EXPORTS_PER_KEY at once
    (then 429), all keys EXPORTS_AT_ONCE (then 503), and a chunk its client has not taken
    within EXPORT_STALL_SECONDS ends the export cut off, its slot and thread freed. The app
    is driven as a server drives it, with a client that stops reading after the first
    chunk: its send waits, as a server's does for a socket that does not drain."""
    monkeypatch.setattr(usage_route, "EXPORT_STALL_SECONDS", 1.0)
    slots: usage_route.ExportSlots = client.app.state.export_slots  # type: ignore[attr-defined]
    before = exporters()
    sent: list[str] = []
    waiting = threading.Event()

    async def receive() -> dict[str, Any]:
        await anyio.sleep(3600)  # the client never goes away
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"] == "http.response.body" and sent.count("http.response.body") > 1:
            waiting.set()
            await anyio.sleep(3600)  # no longer read

    scope = export_scope(seeded, "2.4")

    async def stalled() -> tuple[float, dict[str, int], dict[str, int]]:
        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(client.app, scope, receive, send)  # type: ignore[arg-type]
            while not waiting.is_set():
                await anyio.sleep(0.01)
            during = dict(slots.by_key)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 10  # a stopped producer notices within 0.25 s
        while exporters() - before and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        return elapsed, during, dict(slots.by_key)

    elapsed, during, after = anyio.run(stalled)
    assert list(during.values()) == [1] and after == {}, (during, after)
    assert elapsed < 30 and not exporters() - before
    assert sent[-1] == "http.response.body"  # ended without its last body message: cut off
    # The bounds: a key's third export at once is a 429, any fourth beyond the total a 503.
    held = [slots.take("k1"), slots.take("k1")]
    busy = client.get("/v1/usage", params={"format": "csv"}, headers=auditor)
    assert busy.status_code == 200  # another key: not held up
    with pytest.raises(HTTPException) as per_key:
        slots.take("k1")
    assert per_key.value.status_code == 429 and per_key.value.headers == {"Retry-After": "30"}
    held += [slots.take(f"k{i}") for i in range(2, 2 + usage_route.EXPORTS_AT_ONCE - 2)]
    with pytest.raises(HTTPException) as total:
        slots.take("another")
    assert total.value.status_code == 503
    refused = client.get("/v1/usage", params={"format": "csv"}, headers=auditor)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
    for release in held:
        release()
        release()  # once only
    assert slots.by_key == {}
    assert client.get("/v1/usage", params={"format": "csv"}, headers=auditor).status_code == 200
