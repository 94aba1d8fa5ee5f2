"""Provision Grafana through its HTTP API (grafana-client): the ClickHouse data source, one
folder and every dashboard, each under a stable uid.

Idempotent by comparison, not by blind overwrite: each object is read first and written only
when it differs, so a second push changes nothing (no new dashboard versions, no audit noise).
Endpoints used: GET/POST /api/datasources, GET/PUT /api/datasources/uid/:uid,
GET/POST /api/folders, PUT /api/folders/:uid, GET /api/search, GET /api/dashboards/uid/:uid,
POST /api/dashboards/db.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

from grafana_client.client import GrafanaClientError, GrafanaException
from grafana_client.util import as_bool
from niquests.exceptions import RequestException

from dashboards.build import FOLDER_TITLE, FOLDER_UID
from dashboards.clickhouse import DATASOURCE_NAME, DATASOURCE_UID, PLUGIN_ID

Action = Literal["created", "updated", "unchanged"]
# Fields Grafana adds to a stored dashboard; they are not part of what we provision.
SERVER_FIELDS = ("id", "version")


@dataclass(frozen=True)
class Change:
    kind: Literal["datasource", "folder", "dashboard"]
    uid: str
    action: Action
    title: str = ""


@dataclass(frozen=True)
class ClickHouseConnection:
    """How Grafana's ClickHouse plugin reaches the tracker's ClickHouse server."""

    host: str
    port: int = 9000
    protocol: Literal["native", "http"] = "native"
    secure: bool = False
    username: str = "default"
    database: str = "tracker"
    # Out of the repr: an error or a log line that shows the connection must not show it.
    password: str | None = field(default=None, repr=False)

    def json_data(self) -> dict[str, Any]:
        # Keys of the plugin's CHConfig (src/types/config.ts).
        return {
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "secure": self.secure,
            "username": self.username,
            "defaultDatabase": self.database,
        }


class ProvisionError(RuntimeError):
    """Grafana refused or could not be reached; the message says which object and why."""


def _or_none_if_missing(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise


def _object(found: Any, what: str) -> dict[str, Any] | None:
    """A JSON object from Grafana (None: not there). Anything else means --url is not Grafana's
    API (a login page, a proxy's HTML): said plainly, not an AttributeError later."""
    if found is None or isinstance(found, dict):
        return found
    raise ProvisionError(f"{what}: the server answered no JSON object; is --url Grafana?")


def api_url(url: str) -> str:
    """The Grafana base URL as grafana-client needs it. The client joins "<path>api" with no
    separator, so a Grafana served under a sub-path (root_url .../grafana) must be given with a
    trailing slash or it calls /grafanaapi/...: add it (and drop repeated ones). Its
    `?verify=false` (no TLS verification) must be a truth value; the client would raise a bare
    ValueError later. Raises ValueError naming the problem."""
    parts = urlsplit(url)
    for value in parse_qs(parts.query, keep_blank_values=True).get("verify", []):
        try:
            as_bool(value)
        except (ValueError, AttributeError):
            raise ValueError(f"verify={value!r}: must be true or false") from None
    path = parts.path.rstrip("/")
    return urlunsplit(parts._replace(path=f"{path}/" if path else ""))


class Grafana:
    """The grafana-client calls this module makes, with types (the library has none)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    @classmethod
    def connect(cls, url: str, token: str | None, timeout: float = 10.0) -> Grafana:
        from grafana_client.api import GrafanaApi

        factory: Any = GrafanaApi.from_url
        base = api_url(url)
        api = factory(url=base, credential=token, timeout=timeout)
        host = urlsplit(base).hostname
        if host and ":" in host:
            # from_url rebuilds the URL from urlparse's hostname, which drops an IPv6
            # literal's brackets: http://::1:3000/api, which no request can parse (found in
            # review). Put them back where it wrote the host.
            api.client.url = api.client.url.replace(f"://{host}", f"://[{host}]", 1)
        return cls(api)

    def datasource(self, uid: str) -> dict[str, Any] | None:
        found = _or_none_if_missing(self.api.datasource.get_datasource_by_uid, uid)
        return _object(found, f"data source {uid}")

    def create_datasource(self, body: dict[str, Any]) -> None:
        self.api.datasource.create_datasource(body)

    def update_datasource(self, uid: str, body: dict[str, Any]) -> None:
        self.api.datasource.update_datasource_by_uid(uid, body)

    def folder(self, uid: str) -> dict[str, Any] | None:
        return _object(_or_none_if_missing(self.api.folder.get_folder, uid), f"folder {uid}")

    def create_folder(self, uid: str, title: str) -> None:
        self.api.folder.create_folder(title, uid=uid)

    def rename_folder(self, uid: str, title: str) -> None:
        self.api.folder.update_folder(uid, title=title, overwrite=True)

    def search_dashboards(self, uids: list[str]) -> list[dict[str, Any]]:
        hits = self.api.search.search_dashboards(type_="dash-db", dashboard_uids=uids)
        if hits and not (isinstance(hits, list) and all(isinstance(h, dict) for h in hits)):
            raise ProvisionError("search: the server answered no list of dashboards; is --url "
                                 "Grafana?")  # fmt: skip
        return list(hits or [])

    def dashboard(self, uid: str) -> dict[str, Any]:
        found = _object(self.api.dashboard.get_dashboard(uid), f"dashboard {uid}")
        if found is None:
            raise ProvisionError(f"dashboard {uid}: the server answered nothing")
        return found

    def save_dashboard(self, body: dict[str, Any]) -> None:
        self.api.dashboard.update_dashboard(body)


def datasource_body(conn: ClickHouseConnection, *, with_secret: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": PLUGIN_ID,
        "access": "proxy",
        "isDefault": False,
        "jsonData": conn.json_data(),
    }
    if with_secret and conn.password is not None:
        body["secureJsonData"] = {"password": conn.password}
    return body


def push_datasource(
    api: Grafana, conn: ClickHouseConnection, *, rotate_secret: bool = False
) -> Change:
    """Create or update the data source. Grafana never returns secrets, so a stored password
    is only re-sent when none is stored yet or when rotate_secret asks for it."""
    existing = api.datasource(DATASOURCE_UID)
    if existing is None:
        api.create_datasource(datasource_body(conn, with_secret=True))
        return Change("datasource", DATASOURCE_UID, "created", DATASOURCE_NAME)
    has_secret = bool((existing.get("secureJsonFields") or {}).get("password"))
    wants_secret = conn.password is not None and (rotate_secret or not has_secret)
    body = datasource_body(conn, with_secret=wants_secret)
    # jsonData is compared and written on our keys only. Grafana keeps whatever else is there:
    # the plugin's settings page adds its own on every save (version, logs, traces defaults:
    # useConfigDefaults in src/views/CHConfigEditorHooks.ts) and an admin may set timeouts or
    # TLS options we do not manage. A PUT replaces jsonData whole, so those are sent back.
    stored = existing.get("jsonData")
    stored = stored if isinstance(stored, dict) else {}
    same = all(existing.get(k) == body[k] for k in ("name", "type", "access")) and all(
        stored.get(k) == v for k, v in body["jsonData"].items()
    )
    if same and not wants_secret:
        return Change("datasource", DATASOURCE_UID, "unchanged", DATASOURCE_NAME)
    body["jsonData"] = {**stored, **body["jsonData"]}
    api.update_datasource(DATASOURCE_UID, body)
    return Change("datasource", DATASOURCE_UID, "updated", DATASOURCE_NAME)


def push_folder(api: Grafana, uid: str = FOLDER_UID, title: str = FOLDER_TITLE) -> Change:
    existing = api.folder(uid)
    if existing is None:
        api.create_folder(uid, title)
        return Change("folder", uid, "created", title)
    if existing.get("title") == title:
        return Change("folder", uid, "unchanged", title)
    api.rename_folder(uid, title)
    return Change("folder", uid, "updated", title)


def _comparable(dashboard: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in dashboard.items() if k not in SERVER_FIELDS}


def _dashboard_failure(
    uid: str, title: str, step: Literal["read", "save"], exc: Exception, changes: list[Change]
) -> str:
    """What failed on one dashboard, and which dashboards this push had written before it."""
    saved = [c.uid for c in changes if c.action != "unchanged"]
    before = f"; saved before it: {', '.join(saved)}" if saved else "; none saved before it"
    if isinstance(exc, ProvisionError):
        return f"{exc}{before}"
    if isinstance(exc, GrafanaClientError):
        why = ""
        if getattr(exc, "status_code", None) == 412:
            why = ("; another dashboard of that title in the folder, or an edit made since "
                   "it was read, is left as it is")  # fmt: skip
        return f"Grafana refused dashboard {uid} ({title!r}): {exc}{why}{before}"
    # A 5xx, a timeout or a broken connection: the request may have been carried out or not.
    unknown = (
        "; Grafana may or may not have saved it (the next push writes it if not)"
        if step == "save"
        else ""
    )
    return f"cannot {step} dashboard {uid} ({title!r}): {exc}{unknown}{before}"


def push_dashboards(
    api: Grafana, dashboards: dict[str, dict[str, Any]], folder_uid: str = FOLDER_UID
) -> list[Change]:
    """Create or update each dashboard by uid, in the folder; untouched when identical.

    Never with `overwrite: true`: Grafana then also takes over any other dashboard whose title
    (slug) is the same in the target folder, giving ours its id and uid, so a user's dashboard
    would be overwritten (getExistingDashboardByTitleAndFolder in
    pkg/services/dashboards/database/database.go). Instead an update carries the version read
    just before, and a create none: Grafana refuses a same-title dashboard in the folder
    ("name-exists") and a change made in between ("version-mismatch"), both reported, nothing
    of anyone else's overwritten."""
    hits = api.search_dashboards(sorted(dashboards))
    found = {h["uid"]: h for h in hits if h.get("uid") in dashboards}
    changes: list[Change] = []
    for uid in sorted(dashboards):
        ours = dashboards[uid]
        title = ours.get("title", "")
        step: Literal["read", "save"] = "read"
        try:
            action: Action = "created"
            sent = {**_comparable(ours), "id": None}
            if uid in found:
                stored = api.dashboard(uid)
                current = stored.get("dashboard") or {}
                same_folder = (stored.get("meta") or {}).get("folderUid") == folder_uid
                if same_folder and _comparable(current) == _comparable(ours):
                    changes.append(Change("dashboard", uid, "unchanged", title))
                    continue
                action = "updated"
                sent["version"] = current.get("version")
            body = {
                "dashboard": sent,
                "folderUid": folder_uid,
                "overwrite": False,
                "message": "tracker dashboards push",
            }
            step = "save"
            api.save_dashboard(body)
        except (GrafanaException, RequestException, ProvisionError) as exc:
            # Named, with what was saved before it, whatever the failure (found in review: a
            # 403 said only "the dashboards"; then a 5xx or a timeout said neither).
            raise ProvisionError(_dashboard_failure(uid, title, step, exc, changes)) from exc
        changes.append(Change("dashboard", uid, action, title))
    return changes


def push(
    api: Grafana,
    dashboards: dict[str, dict[str, Any]],
    conn: ClickHouseConnection,
    *,
    rotate_secret: bool = False,
) -> list[Change]:
    """Data source, then folder, then dashboards (which refer to both)."""
    steps: list[tuple[str, Any]] = [
        ("data source", lambda: [push_datasource(api, conn, rotate_secret=rotate_secret)]),
        ("folder", lambda: [push_folder(api)]),
        ("dashboards", lambda: push_dashboards(api, dashboards)),
    ]
    changes: list[Change] = []
    for what, step in steps:
        try:
            changes.extend(step())
        except GrafanaClientError as exc:
            raise ProvisionError(f"Grafana refused the {what}: {exc}") from exc
        except (GrafanaException, RequestException) as exc:
            raise ProvisionError(f"cannot provision the {what}: {exc}") from exc
    return changes
