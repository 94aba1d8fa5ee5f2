"""`tracker dashboards push` against a Grafana HTTP API on loopback.

The server below implements the documented endpoints the provisioning client calls (data
sources by uid, folders, search, dashboards by uid and /api/dashboards/db), refuses bodies
with unknown fields or a missing token, and records every request so the tests can check
each body field by field and that a second push writes nothing. Saving a dashboard follows
Grafana's rules (pkg/services/dashboards/database/database.go): found by uid, a version
other than the stored one is refused unless `overwrite`; another dashboard of the same title
(slug) in the folder is refused ("name-exists"), or with `overwrite` taken over: ours gets
its id and uid and replaces it."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from dashboards.build import GENERATED
from tracker.cli import app

TOKEN = "glsa_test_token"
PASSWORD = "ch-secret-pw"
COMMITTED = {p.stem: json.loads(p.read_text()) for p in sorted(GENERATED.glob("*.json"))}

DATASOURCE_FIELDS = {"uid", "name", "type", "access", "isDefault", "jsonData", "secureJsonData"}
DASHBOARD_SAVE_FIELDS = {"dashboard", "folderUid", "overwrite", "message"}
FOLDER_CREATE_FIELDS = {"uid", "title", "parentUid"}
FOLDER_UPDATE_FIELDS = {"title", "version", "overwrite"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None


@dataclass
class FakeGrafana:
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    secure: dict[str, dict[str, str]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {dashboard, meta}
    log: list[Request] = field(default_factory=list)
    next_id: int = 1
    prefix: str = ""  # Grafana served under a sub-path (root_url .../grafana)
    echo_auth: bool = False  # a 401 that quotes the Authorization header back
    denied: str | None = None  # a dashboard uid the token may not save (403)
    failing: str | None = None  # a dashboard uid Grafana fails to save...
    fail_status: int = 500  # ... with this status (after `fail_delay` seconds)
    fail_delay: float = 0.0

    def writes(self) -> list[Request]:
        return [r for r in self.log if r.method != "GET"]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def handle(self, r: Request) -> tuple[int, Any]:
        if r.authorization != f"Bearer {TOKEN}":
            if self.echo_auth:
                return 403, {"message": f"invalid API key: {r.authorization}"}
            return 401, {"message": "invalid API key"}
        if not r.path.startswith(f"{self.prefix}/api/"):
            return 404, {"message": f"not under {self.prefix}/api/"}
        parts = r.path[len(self.prefix) :].strip("/").split("/")
        match (r.method, parts):
            case ("GET", ["api", "datasources", "uid", uid]):
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                return 200, self.datasources[uid]
            case ("POST", ["api", "datasources"]):
                return self._save_datasource(r.body, None)
            case ("PUT", ["api", "datasources", "uid", uid]):
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                return self._save_datasource(r.body, uid)
            case ("GET", ["api", "folders", uid]):
                if uid not in self.folders:
                    return 404, {"message": "folder not found", "status": "not-found"}
                return 200, self.folders[uid]
            case ("POST", ["api", "folders"]):
                extra = set(r.body) - FOLDER_CREATE_FIELDS
                if extra or not r.body.get("title"):
                    return 400, {"message": f"bad folder body: {sorted(extra)}"}
                uid = r.body.get("uid") or f"f{self._id()}"
                if uid in self.folders:
                    return 409, {"message": "a folder with the same uid already exists"}
                self.folders[uid] = {"id": self._id(), "uid": uid, "title": r.body["title"],
                                     "url": f"/dashboards/f/{uid}/", "version": 1}  # fmt: skip
                return 200, self.folders[uid]
            case ("PUT", ["api", "folders", uid]):
                extra = set(r.body) - FOLDER_UPDATE_FIELDS
                if extra or uid not in self.folders:
                    return 400, {"message": "bad folder update"}
                folder = self.folders[uid]
                if not r.body.get("overwrite") and r.body.get("version") != folder["version"]:
                    return 412, {"message": "version-mismatch"}
                folder.update(title=r.body["title"], version=folder["version"] + 1)
                return 200, folder
            case ("GET", ["api", "search"]):
                return 200, self._search(r.query)
            case ("GET", ["api", "dashboards", "uid", uid]):
                if uid not in self.dashboards:
                    return 404, {"message": "Dashboard not found"}
                return 200, self.dashboards[uid]
            case ("POST", ["api", "dashboards", "db"]):
                if self.denied is not None and r.body["dashboard"].get("uid") == self.denied:
                    return 403, {"message": "You'll need additional permissions to perform "
                                 "this action. Permissions needed: dashboards:create"}  # fmt: skip
                if self.failing is not None and r.body["dashboard"].get("uid") == self.failing:
                    time.sleep(self.fail_delay)
                    return self.fail_status, {"message": "Failed to save dashboard",
                                              "error": "database is locked"}  # fmt: skip
                return self._save_dashboard(r.body)
        return 404, {"message": f"no route {r.method} {r.path}"}

    def _save_datasource(self, body: Any, uid: str | None) -> tuple[int, Any]:
        extra = set(body) - DATASOURCE_FIELDS
        if extra or not body.get("name") or not body.get("type") or not body.get("access"):
            return 400, {"message": f"bad data source body: {sorted(extra)}"}
        uid = uid or body.get("uid") or f"ds{self._id()}"
        if body.get("uid") not in (None, uid):
            return 400, {"message": "uid mismatch"}
        if uid not in self.datasources and any(
            d["name"] == body["name"] for d in self.datasources.values()
        ):
            return 409, {"message": "data source with the same name already exists"}
        old = self.datasources.get(uid, {})
        secure = {**self.secure.get(uid, {}), **(body.get("secureJsonData") or {})}
        self.secure[uid] = secure
        stored = {
            "id": old.get("id", self._id()), "uid": uid, "orgId": 1, "name": body["name"],
            "type": body["type"], "typeName": "ClickHouse", "access": body["access"], "url": "",
            "user": "", "database": "", "basicAuth": False, "isDefault": body.get("isDefault"),
            "jsonData": body.get("jsonData") or {},
            "secureJsonFields": dict.fromkeys(secure, True),
            "version": old.get("version", 0) + 1, "readOnly": False,
        }  # fmt: skip
        self.datasources[uid] = stored
        return 200, {"datasource": stored, "id": stored["id"], "message": "Datasource saved",
                     "name": stored["name"]}  # fmt: skip

    def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        wanted = set(query.get("dashboardUIDs", [])) or set(self.dashboards)
        hits = []
        for uid in sorted(wanted & set(self.dashboards)):
            d, meta = self.dashboards[uid]["dashboard"], self.dashboards[uid]["meta"]
            hits.append({"id": d["id"], "uid": uid, "title": d.get("title"), "type": "dash-db",
                         "url": meta["url"], "folderUid": meta["folderUid"], "tags": []})  # fmt: skip
        return hits

    def _save_dashboard(self, body: Any) -> tuple[int, Any]:
        extra = set(body) - DASHBOARD_SAVE_FIELDS
        dashboard = body.get("dashboard")
        if extra or not isinstance(dashboard, dict) or not dashboard.get("title"):
            return 400, {"message": f"bad dashboard body: {sorted(extra)}"}
        folder_uid = body.get("folderUid") or ""
        if folder_uid and folder_uid not in self.folders:
            return 400, {"message": "folder not found"}
        overwrite = bool(body.get("overwrite"))
        uid = dashboard.get("uid") or f"d{self._id()}"
        version = dashboard.get("version") or 0
        dash_id: int | None = None
        old = self.dashboards.get(uid)
        if old:  # getExistingDashboardByIDOrUIDForUpdate
            dash_id = old["dashboard"]["id"]
            if version != old["dashboard"]["version"]:
                if not overwrite:
                    return 412, {"message": "version-mismatch", "status": "version-mismatch"}
                version = old["dashboard"]["version"]
        slug = _slug(dashboard["title"])
        for other_uid, other in self.dashboards.items():  # getExistingDashboardByTitleAndFolder
            same = (
                other["meta"]["folderUid"] == folder_uid
                and _slug(other["dashboard"].get("title", "")) == slug
            )
            if same and other["dashboard"]["id"] != dash_id:
                if not overwrite:
                    return 412, {"message": "A dashboard with the same name in the folder "
                                 "already exists", "status": "name-exists"}  # fmt: skip
                dash_id, uid = other["dashboard"]["id"], other_uid
                version = other["dashboard"]["version"]
        dash_id = dash_id or self._id()
        version += 1
        stored = {**dashboard, "id": dash_id, "uid": uid, "version": version}
        url = f"/d/{uid}/x"
        self.dashboards[uid] = {"dashboard": stored, "meta": {"folderUid": folder_uid,
                                "url": url, "version": version, "slug": "x"}}  # fmt: skip
        return 200, {"id": dash_id, "uid": uid, "url": url, "status": "success",
                     "version": version, "slug": "x"}  # fmt: skip


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def serve(state: FakeGrafana) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _run(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            request = Request(self.command, url.path, parse_qs(url.query), body,
                              self.headers.get("Authorization"))  # fmt: skip
            state.log.append(request)
            status, payload = state.handle(request)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        do_GET = do_POST = do_PUT = do_DELETE = _run

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    state = FakeGrafana()
    server = serve(state)
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def push(
    url: str, *extra: str, token: str | None = TOKEN, env: dict[str, str] | None = None
) -> Any:
    args = ["dashboards", "push", "--url", url, *(["--token", token] if token is not None else []),
            "--clickhouse-host", "ch.internal", "--clickhouse-password", PASSWORD, *extra]  # fmt: skip
    return CliRunner().invoke(app, args, env=env)


def test_first_push_creates_data_source_folder_and_dashboards(
    grafana: tuple[FakeGrafana, str],
) -> None:
    state, url = grafana
    result = push(url)
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert all(r.authorization == f"Bearer {TOKEN}" for r in state.log)

    writes = state.writes()
    assert [(r.method, r.path) for r in writes] == [
        ("POST", "/api/datasources"),
        ("POST", "/api/folders"),
    ] + [("POST", "/api/dashboards/db")] * 4

    ds = writes[0].body
    assert ds["uid"] == "tracker-clickhouse"
    assert ds["name"] == "Tracker ClickHouse"
    assert ds["type"] == "grafana-clickhouse-datasource"
    assert ds["access"] == "proxy"
    assert ds["isDefault"] is False
    assert ds["jsonData"] == {
        "host": "ch.internal", "port": 9000, "protocol": "native", "secure": False,
        "username": "grafana", "defaultDatabase": "tracker",
    }  # fmt: skip
    assert ds["secureJsonData"] == {"password": PASSWORD}
    assert set(ds) == DATASOURCE_FIELDS

    assert writes[1].body == {"title": "Inference Sovereignty", "uid": "inference-sovereignty"}

    saved = {r.body["dashboard"]["uid"]: r.body for r in writes[2:]}
    assert set(saved) == set(COMMITTED)
    for uid, body in saved.items():
        assert set(body) == DASHBOARD_SAVE_FIELDS
        assert body["folderUid"] == "inference-sovereignty"
        assert body["overwrite"] is False  # never take over a same-title dashboard
        assert "version" not in body["dashboard"]
        assert body["message"] == "tracker dashboards push"
        assert body["dashboard"]["id"] is None
        sent = {k: v for k, v in body["dashboard"].items() if k != "id"}
        assert sent == COMMITTED[uid], f"{uid}: pushed JSON differs from the committed file"
    assert "6 written, 0 unchanged" in result.output


def test_second_push_changes_nothing(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    assert push(url).exit_code == 0
    versions = {uid: d["meta"]["version"] for uid, d in state.dashboards.items()}
    state.log.clear()
    result = push(url)
    assert result.exit_code == 0, result.output
    assert state.writes() == []
    assert "0 written, 6 unchanged" in result.output
    assert {uid: d["meta"]["version"] for uid, d in state.dashboards.items()} == versions
    # it did look: the data source, the folder, one search and each dashboard
    gets = sorted(r.path for r in state.log)
    assert "/api/datasources/uid/tracker-clickhouse" in gets
    assert "/api/folders/inference-sovereignty" in gets
    assert "/api/search" in gets
    assert sum(p.startswith("/api/dashboards/uid/") for p in gets) == 4
    search = next(r for r in state.log if r.path == "/api/search")
    assert search.query == {"type": ["dash-db"], "dashboardUIDs": sorted(COMMITTED)}


def test_edited_dashboard_and_drifted_objects_are_put_back(
    grafana: tuple[FakeGrafana, str],
) -> None:
    state, url = grafana
    assert push(url).exit_code == 0
    state.dashboards["ist-agency"]["dashboard"]["title"] = "edited in the UI"
    state.dashboards["ist-pipeline"]["meta"]["folderUid"] = "somewhere-else"
    state.datasources["tracker-clickhouse"]["jsonData"]["host"] = "old-host"
    state.folders["inference-sovereignty"]["title"] = "Renamed"
    state.log.clear()

    result = push(url)
    assert result.exit_code == 0, result.output
    writes = {(r.method, r.path): r.body for r in state.writes()}
    ds = writes.pop(("PUT", "/api/datasources/uid/tracker-clickhouse"))
    assert ds["jsonData"]["host"] == "ch.internal"
    assert "secureJsonData" not in ds  # a stored password is not re-sent
    assert state.secure["tracker-clickhouse"] == {"password": PASSWORD}
    folder = writes.pop(("PUT", "/api/folders/inference-sovereignty"))
    assert folder == {"title": "Inference Sovereignty", "overwrite": True}
    assert writes == {("POST", "/api/dashboards/db"): writes[("POST", "/api/dashboards/db")]}
    saved = [r.body["dashboard"]["uid"] for r in state.writes() if r.path == "/api/dashboards/db"]
    assert sorted(saved) == ["ist-agency", "ist-pipeline"]
    assert state.dashboards["ist-agency"]["dashboard"]["title"] == COMMITTED["ist-agency"]["title"]
    assert state.dashboards["ist-pipeline"]["meta"]["folderUid"] == "inference-sovereignty"
    assert "4 written, 2 unchanged" in result.output


def test_rotate_password_resends_it(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    assert push(url).exit_code == 0
    state.log.clear()
    result = CliRunner().invoke(app, ["dashboards", "push", "--url", url, "--token", TOKEN,
        "--clickhouse-host", "ch.internal", "--clickhouse-password", "new-pw",
        "--rotate-password"])  # fmt: skip
    assert result.exit_code == 0, result.output
    [put] = state.writes()
    assert put.path == "/api/datasources/uid/tracker-clickhouse"
    assert put.body["secureJsonData"] == {"password": "new-pw"}
    assert state.secure["tracker-clickhouse"] == {"password": "new-pw"}


def test_wrong_token_is_a_clear_error(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    result = push(url, token="wrong")
    assert result.exit_code == 2
    assert "Grafana refused the data source" in result.output
    assert state.writes() == []


def test_unreachable_grafana_is_a_clear_error() -> None:
    state = FakeGrafana()
    server = serve(state)
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    result = push(f"http://127.0.0.1:{port}", "--timeout", "2")
    assert result.exit_code == 2
    assert "cannot provision the data source" in result.output


class _Html(BaseHTTPRequestHandler):
    """Not Grafana: a login page or a proxy's HTML, answered 200 to everything."""

    def _page(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>sign in</html>")

    do_GET = do_POST = do_PUT = _page

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_bad_arguments_and_a_server_that_is_not_grafana_exit_2(
    grafana: tuple[FakeGrafana, str],
) -> None:
    # Found in review: each was a traceback, or (empty host, user or database) replaced a
    # working data source with a broken one and exited 0.
    state, url = grafana
    for extra in (["--clickhouse-host", ""], ["--clickhouse-user", ""],
                  ["--clickhouse-database", ""], ["--clickhouse-database", "db; DROP"],
                  ["--timeout", "inf"]):  # fmt: skip
        result = push(url, *extra)
        assert result.exit_code == 2, (extra, result.output)
    assert state.writes() == []
    for bad in ("http://[::1", "http://h:port", "http://"):
        result = push(bad)
        assert result.exit_code == 2 and "--url" in result.output, (bad, result.output)
    html = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    threading.Thread(target=html.serve_forever, daemon=True).start()
    try:
        result = push(f"http://127.0.0.1:{html.server_address[1]}")
        assert result.exit_code == 2 and "is --url Grafana?" in result.output, result.output
    finally:
        html.shutdown()
        html.server_close()


def test_a_same_title_dashboard_of_someone_else_is_never_overwritten(
    grafana: tuple[FakeGrafana, str],
) -> None:
    """Suspected in review, confirmed from Grafana's save rules: with `overwrite: true`, a
    dashboard of the same title in the folder under another uid is taken over, ours written
    over it. The push must refuse instead, and leave it as it is."""
    state, url = grafana
    state.folders["inference-sovereignty"] = {"id": 1, "uid": "inference-sovereignty",
        "title": "Inference Sovereignty", "url": "/dashboards/f/x/", "version": 1}  # fmt: skip
    title = COMMITTED["ist-national"]["title"]
    users = {"id": 77, "uid": "users-copy", "title": title, "version": 5, "panels": []}
    state.dashboards["users-copy"] = {"dashboard": dict(users), "meta": {
        "folderUid": "inference-sovereignty", "url": "/d/users-copy/x", "version": 5}}  # fmt: skip
    result = push(url)
    assert result.exit_code == 2, result.output
    assert "ist-national" in result.output and "same name" in result.output
    assert state.dashboards["users-copy"]["dashboard"] == users
    assert "ist-national" not in state.dashboards
    saves = [r.body for r in state.log if r.path == "/api/dashboards/db"]
    assert saves and all(b["overwrite"] is False for b in saves)


def test_an_update_carries_the_version_it_read(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    assert push(url).exit_code == 0
    state.dashboards["ist-agency"]["dashboard"]["title"] = "edited in the UI"
    version = state.dashboards["ist-agency"]["dashboard"]["version"]
    state.log.clear()
    assert push(url).exit_code == 0
    [save] = [r.body for r in state.writes()]
    assert save["overwrite"] is False and save["dashboard"]["version"] == version
    assert state.dashboards["ist-agency"]["dashboard"]["version"] == version + 1


def test_data_source_settings_we_do_not_manage_are_kept(grafana: tuple[FakeGrafana, str]) -> None:
    """Suspected in review, confirmed from the plugin: its settings page writes its own keys
    into jsonData on every save (version, logs, traces: useConfigDefaults), and an admin may
    set timeouts. An exact comparison rewrote the data source on every push, dropping them."""
    state, url = grafana
    assert push(url).exit_code == 0
    added = {"version": "4.9.0", "logs": {"defaultTable": "otel_logs"}, "dialTimeout": "20"}
    state.datasources["tracker-clickhouse"]["jsonData"].update(added)
    state.log.clear()
    result = push(url)
    assert result.exit_code == 0, result.output
    assert state.writes() == [] and "0 written, 6 unchanged" in result.output
    state.datasources["tracker-clickhouse"]["jsonData"]["host"] = "old-host"
    assert push(url).exit_code == 0
    stored = state.datasources["tracker-clickhouse"]["jsonData"]
    assert stored["host"] == "ch.internal"
    assert {k: stored[k] for k in added} == added


def test_a_token_with_a_final_line_break_works(grafana: tuple[FakeGrafana, str]) -> None:
    """Found in review: a token read from a secret file (a final line break) failed with the
    HTTP library's message, which quoted the whole Authorization header."""
    state, url = grafana
    result = push(url, token=None, env={"GRAFANA_TOKEN": f"  {TOKEN}\n"})
    assert result.exit_code == 0, result.output
    assert all(r.authorization == f"Bearer {TOKEN}" for r in state.log)
    assert TOKEN not in result.output


@pytest.mark.parametrize(
    "token", ["glsa_SECRET\nmore", "glsa_SECRET\x00", "glsa_SECRET\x1b[2J", "glsa SECRET", ""]
)
def test_a_token_with_control_characters_is_refused_unshown(
    grafana: tuple[FakeGrafana, str], token: str
) -> None:
    state, url = grafana
    # (a NUL cannot be in an environment variable: given as --token)
    result = (
        push(url, token=token)
        if "\x00" in token
        else push(url, token=None, env={"GRAFANA_TOKEN": token})
    )
    assert result.exit_code == 2, result.output
    assert "GRAFANA_TOKEN" in result.output and "SECRET" not in result.output
    assert state.log == []


def test_error_text_never_shows_the_token(grafana: tuple[FakeGrafana, str]) -> None:
    state, url = grafana
    state.echo_auth = True
    result = push(url, token="glsa_WRONG_0123456789abcdef")
    assert result.exit_code == 2
    assert "invalid API key" in result.output and "<token>" in result.output
    assert "WRONG_0123456789abcdef" not in result.output
    # a whole-token match only: a one-letter token does not blank every "a" of the message
    result = push(url, token="a")
    assert result.exit_code == 2
    assert "Grafana refused the data source: Client Error 403: invalid API key: Bearer <token>" in (
        result.output
    ), result.output


@pytest.mark.parametrize("suffix", ["/grafana", "/grafana/", "/grafana//"])
def test_grafana_under_a_sub_path(suffix: str) -> None:
    """Found in review: --url http://h/grafana (no final slash) called /grafanaapi/..."""
    state = FakeGrafana(prefix="/grafana")
    server = serve(state)
    try:
        result = push(f"http://127.0.0.1:{server.server_address[1]}{suffix}")
        assert result.exit_code == 0, result.output
        assert state.log and all(r.path.startswith("/grafana/api/") for r in state.log)
    finally:
        server.shutdown()
        server.server_close()


def test_a_bad_verify_in_the_url_is_a_url_error(grafana: tuple[FakeGrafana, str]) -> None:
    """Found in review: --url ...?verify=maybe ended in a traceback."""
    state, url = grafana
    for bad in ("maybe", "", "2"):
        result = push(f"{url}/?verify={bad}")
        assert result.exit_code == 2, (bad, result.output)
        assert "--url" in result.output and "verify" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert state.log == []
    assert push(f"{url}/?verify=false").exit_code == 0  # a truth value is taken


def test_a_dashboard_grafana_refuses_is_named_with_those_saved_before_it(
    grafana: tuple[FakeGrafana, str],
) -> None:
    # Found in review: a refusal other than 412 said only "Grafana refused the dashboards", not
    # which one, nor which were saved before it.
    state, url = grafana
    order = list(COMMITTED)
    state.denied = order[1]
    result = push(url)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    title = COMMITTED[order[1]]["title"]
    assert f"Grafana refused dashboard {order[1]} ({title!r})" in result.output, result.output
    assert "permissions" in result.output and f"saved before it: {order[0]}" in result.output
    assert set(state.dashboards) == {order[0]}


@pytest.mark.parametrize(("status", "delay"), [(500, 0.0), (503, 0.0), (504, 3.0)],
                         ids=["500", "503", "timeout"])  # fmt: skip
def test_a_dashboard_grafana_fails_to_save_is_named_with_those_saved_before_it(
    grafana: tuple[FakeGrafana, str], status: int, delay: float
) -> None:
    """Found in review: only a 4xx named the dashboard and those saved before it; a 5xx or a
    timeout said "cannot provision the dashboards: Server Error 500: ..." though two
    dashboards had been written (docs/dashboards.md promises both for any error)."""
    state, url = grafana
    order = sorted(COMMITTED)
    state.failing, state.fail_status, state.fail_delay = order[2], status, delay
    result = push(url, "--timeout", "1")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    title = COMMITTED[order[2]]["title"]
    assert f"cannot save dashboard {order[2]} ({title!r})" in result.output, result.output
    assert f"saved before it: {order[0]}, {order[1]}" in result.output, result.output
    assert "may or may not have saved it" in result.output
    if delay:
        assert "timed out" in result.output.lower(), result.output
    else:
        assert f"Server Error {status}" in result.output, result.output
    assert set(state.dashboards) == set(order[:2])
