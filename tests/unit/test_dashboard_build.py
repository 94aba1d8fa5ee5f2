"""Dashboards as code: the committed JSON is the builders' output, and its SQL is the metric
definitions' SQL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboards import build
from dashboards.clickhouse import DATASOURCE_UID, PLUGIN_ID
from tracker.metrics import Basis, grafana_share_sql, share_sql

DASHBOARDS = build.all_dashboards()


def targets(d: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in d["panels"] for t in p.get("targets", [])]


def test_committed_json_equals_a_fresh_build() -> None:
    assert build.stale() == [], "run `tracker dashboards build` and commit dashboards/generated"


def test_stale_detects_an_edited_file(tmp_path: Path) -> None:
    build.write(tmp_path)
    assert build.stale(tmp_path) == []
    path = tmp_path / "ist-national.json"
    data = json.loads(path.read_text())
    data["title"] = "hand edited"
    path.write_text(json.dumps(data))
    (tmp_path / "ist-retired.json").write_text("{}")
    # Found in review: --out DIR deleted every other JSON file in DIR (package.json...).
    (tmp_path / "package.json").write_text("{}")
    assert build.stale(tmp_path) == ["ist-national.json", "ist-retired.json"]
    build.write(tmp_path)
    assert build.stale(tmp_path) == []
    assert not (tmp_path / "ist-retired.json").exists()
    assert (tmp_path / "package.json").read_text() == "{}"


def test_required_dashboards_with_stable_uids() -> None:
    titles = {uid: d["title"] for uid, d in DASHBOARDS.items()}
    assert set(titles) == {"ist-national", "ist-agency", "ist-auditor", "ist-pipeline"}
    assert all(t.startswith("Inference sovereignty: ") for t in titles.values())


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_panels_query_the_clickhouse_plugin(uid: str) -> None:
    d = DASHBOARDS[uid]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    found = targets(d)
    assert found
    for title, t in found:
        assert t["datasource"] == {"type": PLUGIN_ID, "uid": DATASOURCE_UID}, title
        assert t["editorType"] == "sql" and t["rawSql"].lstrip().upper().startswith("SELECT")
        assert t["format"] == (0 if t["queryType"] == "timeseries" else 1)
    for v in d.get("templating", {}).get("list", []):
        if v["type"] == "query":
            assert v["datasource"]["type"] == PLUGIN_ID


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_every_variable_used_is_defined(uid: str) -> None:
    d = DASHBOARDS[uid]
    defined = {v["name"] for v in d.get("templating", {}).get("list", [])}
    used: set[str] = set()
    for _, t in targets(d):
        used |= {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(?!__)(\w+)", t["rawSql"])}
    assert used <= defined, used - defined


def test_time_series_panels_have_a_time_key() -> None:
    for d in DASHBOARDS.values():
        for p in d["panels"]:
            if p["type"] == "timeseries":
                for t in p["targets"]:
                    assert re.search(r"AS k\b", t["rawSql"]), p["title"]


def panel_sql(uid: str, title: str) -> str:
    [sql] = [t["rawSql"] for name, t in targets(DASHBOARDS[uid]) if name == title][:1]
    return str(sql)


def test_headline_panels_use_the_metric_definitions() -> None:
    national = {"sector": "sector", "provider": "provider", "tier": "tier"}
    agency = {"agency_id": "agency", "provider": "provider"}
    expected = {
        ("ist-national", "Domestic share (requests)"): grafana_share_sql(Basis.requests, national),
        ("ist-national", "Sovereign share (requests)"): grafana_share_sql(Basis.requests, national),
        ("ist-national", "Domestic share (tokens)"): grafana_share_sql(Basis.tokens, national),
        ("ist-national", "Domestic share (cost)"): grafana_share_sql(Basis.cost, national),
        ("ist-agency", "Domestic share (requests)"): grafana_share_sql(Basis.requests, agency),
        ("ist-agency", "Domestic share (cost)"): grafana_share_sql(Basis.cost, agency),
    }
    for (uid, title), sql in expected.items():
        assert panel_sql(uid, title) == sql, (uid, title)


def _without_where(sql: str) -> str:
    return re.sub(r"WHERE .*", "WHERE ?", sql)


@pytest.mark.parametrize("basis", list(Basis))
def test_grafana_share_sql_is_the_api_select(basis: Basis) -> None:
    api = share_sql(basis, {"agency_id": ["a"], "tier": ["t"]})
    grafana = grafana_share_sql(basis, {"agency_id": "agency", "tier": "tier"})
    assert _without_where(api) == _without_where(grafana)
    assert "{" not in grafana.split("WHERE", 1)[1].replace("${", "")  # no bound parameters
    assert "$__conditionalAll(agency_id IN (${agency:singlequote}), $agency)" in grafana


def test_grafana_share_sql_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown filter"):
        grafana_share_sql(Basis.requests, {"agency_id); DROP TABLE x; --": "agency"})
    with pytest.raises(ValueError, match="variable name"):
        grafana_share_sql(Basis.requests, {"agency_id": "a}) OR (1"})
    with pytest.raises(ValueError, match="group by"):
        grafana_share_sql(Basis.requests, {}, group_by="sector; DROP TABLE x")


def test_grouped_share_keeps_the_select_and_adds_the_key() -> None:
    sql = grafana_share_sql(Basis.energy, {}, group_by="sector")
    assert sql.startswith("SELECT\n    k, sovereign, onshore")
    assert "sector AS k," in sql and "GROUP BY k" in sql and sql.endswith("ORDER BY k")
