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
from tracker.registry import Targets, load

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
    # A dashboard a build of ours wrote and no build writes any more (retired).
    retired = {**data, "uid": "ist-retired"}
    (tmp_path / "ist-retired.json").write_text(json.dumps(retired))
    # Found in review: --out DIR deleted every other JSON file in DIR (package.json...).
    (tmp_path / "package.json").write_text("{}")
    assert build.stale(tmp_path) == ["ist-national.json", "ist-retired.json"]
    build.write(tmp_path)
    assert build.stale(tmp_path) == []
    assert not (tmp_path / "ist-retired.json").exists()
    assert (tmp_path / "package.json").read_text() == "{}"


def test_build_removes_no_file_it_did_not_write(tmp_path: Path) -> None:
    """Found in review: `build --out DIR` deleted every ist-*.json it had not just written,
    a user's own among them. Only a dashboard of ours (its uid, our tag) is ours to remove."""
    ours = build.all_dashboards()["ist-agency"]
    users = {
        "ist-mine.json": json.dumps({**ours, "uid": "ist-mine", "tags": ["mine"]}),
        "ist-other-uid.json": json.dumps({**ours, "uid": "someone-else"}),
        "ist-empty.json": "{}",
        "ist-not-json.json": "not json",
        "ist-list.json": "[]",
    }
    for name, text in users.items():
        (tmp_path / name).write_text(text)
    build.write(tmp_path)
    for name, text in users.items():
        assert (tmp_path / name).read_text() == text, name
    assert build.stale(tmp_path) == []  # and a check does not call them stale


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
        assert t["editorType"] == "sql" and t["rawSql"].lstrip().upper().startswith(
            ("SELECT", "WITH")
        )
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


def panel_sql_ref(uid: str, title: str, ref: str) -> str:
    [sql] = [t["rawSql"] for name, t in targets(DASHBOARDS[uid]) if name == title and
             t["refId"] == ref]  # fmt: skip
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
    assert re.search(r"(?<!\$)\{\w+:", grafana.split("WHERE", 1)[1]) is None  # no parameters
    assert (
        "$__conditionalAll(agency_id IN (SELECT arrayJoin(arrayMap(v -> decodeURLComponent(v), "
        "splitByChar(',', trim(BOTH '{}' FROM decodeURLComponent('${agency:percentencode}')))))"
        "), $agency)"
    ) in grafana


# Grafana's formats that can carry a value into SQL text unchanged enough to end a string
# literal or escape its quote (singlequote leaves \ alone; raw, csv, text, sqlstring...).
# `percentencode` leaves only A-Z a-z 0-9 - _ . ~ and %XX.
_REFERENCE = re.compile(r"\$\{(\w+)(?::([\w:]+))?\}|\$(\w+)|\[\[(\w+)(?::(\w+))?\]\]")


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_no_variable_reaches_sql_but_percent_encoded(uid: str) -> None:
    """Found in review: values with a backslash or a quote rewrote the SQL. Every variable a
    query uses is `${name:percentencode}`, or the bare `$name` that $__conditionalAll only
    reads (the plugin's frontend tests it for "All" and drops it)."""
    found = 0
    for title, t in targets(DASHBOARDS[uid]):
        sql = re.sub(r", \$\w+\)", ")", t["rawSql"])  # $__conditionalAll's second argument
        for m in _REFERENCE.finditer(sql):
            name = m.group(1) or m.group(3) or m.group(4)
            if name.startswith("__"):
                continue  # a macro
            assert m.group(1) and m.group(2) == "percentencode", (title, m.group(0))
            found += 1
    assert found or uid == "ist-pipeline"


def test_filter_variables_carry_url_encoded_values() -> None:
    """The options' values hold no comma or brace, so a multi-value selection, encoded as
    {v1,v2} by percentencode, splits back exactly (tracker.metrics.GRAFANA_SELECTED)."""
    seen = 0
    for d in DASHBOARDS.values():
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                assert re.fullmatch(
                    r"SELECT DISTINCT encodeURLComponent\((\w+)\) AS value, \1 AS text "
                    r"FROM usage_hourly ORDER BY text",
                    v["query"],
                ), v["query"]
                seen += 1
    assert seen == 9


def test_target_line_comes_from_the_registry() -> None:
    """Found in review: a viewer-picked target (0.5-0.9) spliced with ${target:raw}."""
    d = DASHBOARDS["ist-national"]
    assert "target" not in {v["name"] for v in d["templating"]["list"]}
    sql = panel_sql_ref("ist-national", "Domestic share vs target", "B")
    targets = load()[0].targets
    assert targets is not None and targets.domestic_share
    for point in targets.domestic_share:
        assert repr(point.domestic_share) in sql
    other = load()[0].model_copy(update={"targets": Targets(domestic_share=[])})
    without = build.dashboard("ist-national", other)
    trend = [p for p in without["panels"] if p.get("title") == "Domestic share vs target"]
    assert len(trend) == 1 and [t["refId"] for t in trend[0]["targets"]] == ["A"]
    assert "sets no target" in trend[0]["description"]


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
    assert "sector AS k," in sql and "GROUP BY k" in sql
    # a dimension: largest first, as GET /v1/breakdown (tracker.queries.breakdown_sql)
    assert sql.endswith("\nORDER BY total DESC, k")
    # a time bucket: in time order, which a time series needs
    by_time = grafana_share_sql(Basis.requests, {}, group_by="$__timeInterval(hour)")
    assert "$__timeInterval(hour) AS k," in by_time and by_time.endswith("\nORDER BY k")


def test_bar_panels_draw_the_largest_groups() -> None:
    """Found in review: a bar panel draws the first `limit` rows, and the provider bars' SQL
    ordered by name, so with more than 50 providers the biggest could be left out."""
    seen = 0
    for d in DASHBOARDS.values():
        for p in d["panels"]:
            if p["type"] == "bargauge":
                limit = p["options"]["reduceOptions"]["limit"]
                assert limit == 50, p["title"]
                for t in p["targets"]:
                    assert t["rawSql"].endswith("\nORDER BY total DESC, k"), p["title"]
                assert f"{limit}" in p["description"] and "requests" in p["description"]
                seen += 1
    assert seen == 2


def test_filter_variables_take_no_custom_values() -> None:
    """Found in review: with the SDK's default allowCustomValue (true), a value typed into a
    filter dropdown reached the SQL as typed, which reads every value as an option's URL
    encoding: typing the provider `a,b` filtered `a` and `b`, typing `%41` filtered `A`."""
    seen = 0
    for uid, d in DASHBOARDS.items():
        for v in d.get("templating", {}).get("list", []):
            if v["type"] == "query":
                assert v["allowCustomValue"] is False, (uid, v["name"])
                seen += 1
    assert seen == 9


def test_build_and_check_draw_another_registry_s_targets(tmp_path: Path) -> None:
    """`--registry FILE`: a country's own trajectory; the committed JSON is the shipped one's."""
    from typer.testing import CliRunner

    from tracker.cli import app

    luxembourg = Path(__file__).resolve().parents[2] / "tracker/registry_data/luxembourg.yaml"
    runner = CliRunner()
    built = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path),
                                "--registry", str(luxembourg)])  # fmt: skip
    assert built.exit_code == 0, built.output
    national = json.loads((tmp_path / "ist-national.json").read_text())
    [trend] = [p for p in national["panels"] if p.get("title") == "Domestic share vs target"]
    [line] = [t["rawSql"] for t in trend["targets"] if t["refId"] == "B"]
    assert "[0.25, 0.5] AS share" in line
    checked = runner.invoke(app, ["dashboards", "check", "--out", str(tmp_path)])
    assert checked.exit_code == 1 and "ist-national.json" in checked.output
    checked = runner.invoke(app, ["dashboards", "check", "--out", str(tmp_path),
                                  "--registry", str(luxembourg)])  # fmt: skip
    assert checked.exit_code == 0, checked.output
    missing = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path),
                                  "--registry", str(tmp_path / "nope.yaml")])  # fmt: skip
    assert missing.exit_code == 2 and "nope.yaml" in missing.output


def _colour(panel: dict[str, Any], value: float) -> str:
    """The colour a stat panel gives `value` by its absolute thresholds."""
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    colour = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            colour = step["color"]
    return str(colour)


def test_shares_are_coloured_good_where_they_are_good() -> None:
    # Found in review: the unknown share had the domestic share's scale, red at 0 % (every
    # request placed) and green at 95 % (almost none).
    panels = {p["title"]: p for p in DASHBOARDS["ist-national"]["panels"]}
    unknown, domestic = panels["Unknown share (requests)"], panels["Domestic share (requests)"]
    assert [_colour(unknown, v) for v in (0.0, 0.05, 0.15, 0.95)] == [
        "green", "green", "orange", "red",
    ]  # fmt: skip
    assert [_colour(domestic, v) for v in (0.0, 0.5, 0.95)] == ["red", "orange", "green"]
