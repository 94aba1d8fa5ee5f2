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
from dashboards.panels import TAGS
from tracker.registry import Registry, load

GENERATED = Path(__file__).resolve().parent / "generated"
FOLDER_UID = "inference-sovereignty"
FOLDER_TITLE = "Inference Sovereignty"
# The Grafana version the foundation SDK build is pinned for (pyproject.toml); the JSON
# carries its schemaVersion.
GRAFANA_VERSION = "11.6.0"

# Each builder takes the registry: the national dashboard draws its target trajectory.
BUILDERS: dict[str, Callable[[Registry], db.Dashboard]] = {
    national.UID: national.build,
    agency.UID: lambda _registry: agency.build(),
    auditor.UID: lambda _registry: auditor.build(),
    pipeline.UID: lambda _registry: pipeline.build(),
}


def default_registry() -> Registry:
    """The shipped registry: the committed JSON is built from it."""
    return load()[0]


def dashboard(uid: str, registry: Registry | None = None) -> dict[str, Any]:
    """One dashboard as the plain JSON model Grafana stores."""
    model = BUILDERS[uid](registry or default_registry()).build()
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


# Every dashboard uid starts so (test_required_dashboards_with_stable_uids) and carries TAGS;
# `build --out DIR` may name a directory holding other files, even other ist-*.json.
PREFIX = "ist-"
OURS = f"{PREFIX}*.json"


def all_dashboards(registry: Registry | None = None) -> dict[str, dict[str, Any]]:
    registry = registry or default_registry()
    return {uid: dashboard(uid, registry) for uid in BUILDERS}


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def owned(path: Path) -> bool:
    """A file a build of ours wrote: named <uid>.json for a uid of ours (the prefix), holding a
    dashboard with that uid and our tag. A user's file, even one named ist-*.json, is not."""
    if not (path.name.startswith(PREFIX) and path.suffix == ".json" and path.is_file()):
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("uid") == path.stem
        and isinstance(data.get("tags"), list)
        and all(tag in data["tags"] for tag in TAGS)
    )


def write(out: Path = GENERATED, registry: Registry | None = None) -> list[Path]:
    """(Re)write every generated file, removing those of ours no build writes any more (a
    retired dashboard's); returns the files written. Nothing else in `out` is touched."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, data in all_dashboards(registry).items():
        path = out / f"{uid}.json"
        path.write_text(render(data), encoding="utf-8")
        written.append(path)
    for retired in set(out.glob(OURS)) - set(written):
        if owned(retired):
            retired.unlink()
    return written


def stale(out: Path = GENERATED, registry: Registry | None = None) -> list[str]:
    """Generated files that differ from a fresh build (missing, changed, or ours and retired)."""
    fresh = {f"{uid}.json": render(data) for uid, data in all_dashboards(registry).items()}
    on_disk = {
        p.name: p.read_text(encoding="utf-8") for p in out.glob(OURS) if p.name in fresh or owned(p)
    }
    names = set(fresh) | set(on_disk)
    return sorted(n for n in names if fresh.get(n) != on_disk.get(n))
