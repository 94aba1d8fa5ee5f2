"""Render every dashboard to JSON: the one source is the builders in this package, the JSON in
dashboards/generated/ is their committed output (reviewable diffs, file provisioning)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import agency, auditor, national, pipeline

GENERATED = Path(__file__).resolve().parent / "generated"
FOLDER_UID = "inference-sovereignty"
FOLDER_TITLE = "Inference Sovereignty"
# The Grafana version the foundation SDK build is pinned for (pyproject.toml); the JSON
# carries its schemaVersion.
GRAFANA_VERSION = "11.6.0"

BUILDERS: dict[str, Callable[[], db.Dashboard]] = {
    national.UID: national.build,
    agency.UID: agency.build,
    auditor.UID: auditor.build,
    pipeline.UID: pipeline.build,
}


def dashboard(uid: str) -> dict[str, Any]:
    """One dashboard as the plain JSON model Grafana stores."""
    model = BUILDERS[uid]().build()
    data: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    if data.get("uid") != uid:
        raise ValueError(f"dashboard registered as {uid!r} has uid {data.get('uid')!r}")
    _number_panels(data)
    _drop_interval_fields(data)
    return data


# The SDK writes the interval variable's auto-step settings on every variable; Grafana's
# published types (@grafana/schema) have them on no variable type but "interval".
INTERVAL_ONLY = ("auto", "auto_count", "auto_min")


def _drop_interval_fields(data: dict[str, Any]) -> None:
    for variable in data.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for key in INTERVAL_ONLY:
                variable.pop(key, None)


def _number_panels(data: dict[str, Any]) -> None:
    """Stable panel ids in layout order: Grafana needs unique ids for links and panel
    options; numbering here keeps the generated JSON identical from build to build."""
    for i, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = i


# Every dashboard uid starts so (test_required_dashboards_with_stable_uids); the files the
# build owns in an output directory are exactly these.
OURS = "ist-*.json"


def all_dashboards() -> dict[str, dict[str, Any]]:
    return {uid: dashboard(uid) for uid in BUILDERS}


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(out: Path = GENERATED) -> list[Path]:
    """(Re)write every generated file, removing stale ones; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, data in all_dashboards().items():
        path = out / f"{uid}.json"
        path.write_text(render(data), encoding="utf-8")
        written.append(path)
    # Only files of ours are stale: --out may name a directory that holds other JSON too.
    for stale in set(out.glob(OURS)) - set(written):
        stale.unlink()
    return written


def stale(out: Path = GENERATED) -> list[str]:
    """Generated files that differ from a fresh build (missing, changed or extra)."""
    fresh = {f"{uid}.json": render(data) for uid, data in all_dashboards().items()}
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in out.glob(OURS)}
    names = set(fresh) | set(on_disk)
    return sorted(n for n in names if fresh.get(n) != on_disk.get(n))
