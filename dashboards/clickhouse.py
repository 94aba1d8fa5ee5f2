"""The ClickHouse data source plugin for Grafana (`grafana-clickhouse-datasource`) as the
foundation SDK sees it: the SDK ships builders for Grafana's core data sources only, so the
plugin's query model (`CHQuery` in the plugin's src/types/sql.ts) is written here once, as a
data-query variant the SDK's panel builders accept."""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

PLUGIN_ID = "grafana-clickhouse-datasource"
# Stable uid: the API push and the file provisioning both create the data source under it,
# and every panel refers to it, so dashboards never need rewriting per installation.
DATASOURCE_UID = "tracker-clickhouse"
DATASOURCE_NAME = "Tracker ClickHouse"
DATASOURCE = dm.DataSourceRef(type_val=PLUGIN_ID, uid=DATASOURCE_UID)

# The plugin's backend reads `format` (grafana-plugin-sdk sqlutil.FormatQueryOption).
FORMAT_TIME_SERIES = 0
FORMAT_TABLE = 1

QueryType = Literal["table", "timeseries"]


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL query of the plugin (editorType "sql")."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        query_type: QueryType = "table",
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.query_type: QueryType = query_type
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "datasource": DATASOURCE.to_json(),
            "editorType": "sql",
            "format": FORMAT_TIME_SERIES if self.query_type == "timeseries" else FORMAT_TABLE,
            "queryType": self.query_type,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            query_type="timeseries" if data.get("queryType") == "timeseries" else "table",
            hide=data.get("hide"),
        )


class Query(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder for `ClickHouseQuery`, in the SDK's fluent style."""

    def __init__(self, raw_sql: str) -> None:
        self._internal = ClickHouseQuery(raw_sql=raw_sql)

    def build(self) -> ClickHouseQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def time_series(self) -> Self:
        self._internal.query_type = "timeseries"
        return self

    def hide(self, hide: bool) -> Self:
        self._internal.hide = hide
        return self
