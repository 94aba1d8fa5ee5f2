"""deploy/grafana file provisioning agrees with the API push and the generated dashboards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dashboards.build import FOLDER_TITLE, FOLDER_UID, GENERATED
from dashboards.clickhouse import DATASOURCE_NAME, DATASOURCE_UID, PLUGIN_ID
from dashboards.provision import ClickHouseConnection, datasource_body

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_datasource_file_matches_the_api_push() -> None:
    [ds] = load(GRAFANA / "provisioning/datasources/clickhouse.yaml")["datasources"]
    pushed = datasource_body(ClickHouseConnection(host="h", password="p"), with_secret=True)
    assert (ds["uid"], ds["name"], ds["type"]) == (DATASOURCE_UID, DATASOURCE_NAME, PLUGIN_ID)
    assert ds["access"] == pushed["access"] and ds["isDefault"] == pushed["isDefault"]
    assert set(ds["jsonData"]) == set(pushed["jsonData"])
    assert ds["jsonData"]["defaultDatabase"] == "tracker"
    assert set(ds["secureJsonData"]) == {"password"}
    assert ds["secureJsonData"]["password"].startswith("${"), "no password in the file"


def test_dashboard_provider_points_at_the_generated_json() -> None:
    [provider] = load(GRAFANA / "provisioning/dashboards/inference-sovereignty.yaml")["providers"]
    assert provider["type"] == "file"
    assert (provider["folderUid"], provider["folder"]) == (FOLDER_UID, FOLDER_TITLE)
    compose = load(GRAFANA / "compose.yaml")["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["volumes"])
    assert mounts["./provisioning"] == "/etc/grafana/provisioning"
    mounted = GRAFANA / next(k for k, v in mounts.items() if v == provider["options"]["path"])
    assert mounted.resolve() == GENERATED
    assert sorted(p.name for p in mounted.glob("*.json")) == [
        "ist-agency.json", "ist-auditor.json", "ist-national.json", "ist-pipeline.json",
    ]  # fmt: skip
    assert "grafana-clickhouse-datasource" in compose["environment"]["GF_INSTALL_PLUGINS"]


def test_a_grafana_at_an_ipv6_literal_is_called_at_it() -> None:
    # Found in review: grafana-client rebuilt the URL from urlparse's hostname, which drops the
    # brackets, and every call went to http://::1:3000/api, which does not parse.
    from dashboards.provision import Grafana

    for given, called in (
        ("http://[::1]:3000", "http://[::1]:3000/api"),
        ("https://[2001:db8::1]/grafana", "https://[2001:db8::1]/grafana/api"),
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000/api"),
    ):
        assert Grafana.connect(given, "t").api.client.url == called
