"""Grafana dashboards from the panel specs, with Grafana's own Python SDK.

:func:`build_dashboard` turns a :class:`DashboardSpec` into the SDK's
dashboard model (``grafana-foundation-sdk`` builders for the dashboard, its
variables and every panel); :func:`render_json` serialises it the same way
every time (sorted keys, two-space indent, no timestamps or random ids), so
the files in ``dashboards/json/`` can be checked in and compared with what
the code builds.

The SDK has no query type for the ClickHouse plugin: :class:`ClickHouseQuery`
is that glue, the plugin's query JSON as a typed SDK ``Dataquery``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from grafana_foundation_sdk.builders import barchart, common as common_builders, dashboard as dash, piechart, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import piechart as piechart_models

from .panels import API_BASE_URL_DEFAULT, DASHBOARDS
from .spec import DashboardSpec, PanelSpec, QueryFormat

__all__ = [
    "PLUGIN_ID", "DATASOURCE_UID", "JSON_DIR", "ClickHouseQuery", "ClickHouseQueryBuilder", "VARIABLE_QUERIES",
    "build_dashboard", "render_json", "built_files", "write_all", "stale_files",
]

#: the official ClickHouse datasource plugin
PLUGIN_ID = "grafana-clickhouse-datasource"
#: uid of the datasource that dashboards/provisioning/datasources/clickhouse.yaml creates
DATASOURCE_UID = "mcpsift-clickhouse"
JSON_DIR = Path(__file__).resolve().parent / "json"

#: the plugin's ``format``: sqlutil.FormatQueryOption (0 time series: long
#: frames made wide, one series per label value; 1 table)
_FORMATS: dict[QueryFormat, int] = {"time_series": 0, "table": 1}
#: the plugin's ``queryType`` (v4: table | timeseries | logs | traces)
_QUERY_TYPES: dict[QueryFormat, str] = {"time_series": "timeseries", "table": "table"}

_DATASOURCE = models.DataSourceRef(type_val=PLUGIN_ID, uid="${datasource}")

#: the SQL behind the tenant and server variables (tested like the panels)
VARIABLE_QUERIES = {
    "tenant": "SELECT DISTINCT tenant FROM ${database}.events WHERE $__timeFilter(time) ORDER BY tenant",
    "server": (
        "SELECT DISTINCT server_resource FROM ${database}.events WHERE $__timeFilter(time) "
        "AND $__conditionalAll(tenant IN (${tenant:singlequote}), $tenant) AND server_resource != '' "
        "ORDER BY server_resource"
    ),
}


class ClickHouseQuery(cogvariants.Dataquery):
    """One query of the ClickHouse plugin (v4, SQL editor), as panel JSON holds it."""

    def __init__(self, ref_id: str = "A", raw_sql: str = "", format: int = 1, query_type: str = "table",
                 datasource: Optional[models.DataSourceRef] = None, editor_type: str = "sql") -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = format
        self.query_type = query_type
        self.datasource = datasource
        self.editor_type = editor_type

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "editorType": self.editor_type,
            "format": self.format,
            "queryType": self.query_type,
            "rawSql": self.raw_sql,
        }
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ClickHouseQuery":
        ds = data.get("datasource")
        return cls(
            ref_id=data.get("refId", "A"), raw_sql=data.get("rawSql", ""), format=int(data.get("format", 1)),
            query_type=data.get("queryType", "table"), editor_type=data.get("editorType", "sql"),
            datasource=models.DataSourceRef.from_json(ds) if isinstance(ds, dict) else None,
        )


class ClickHouseQueryBuilder(cogbuilder.Builder[ClickHouseQuery]):
    def __init__(self) -> None:
        self._internal = ClickHouseQuery()

    def build(self) -> ClickHouseQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> "ClickHouseQueryBuilder":
        self._internal.ref_id = ref_id
        return self

    def raw_sql(self, raw_sql: str) -> "ClickHouseQueryBuilder":
        self._internal.raw_sql = raw_sql
        return self

    def format(self, fmt: QueryFormat) -> "ClickHouseQueryBuilder":
        self._internal.format = _FORMATS[fmt]
        self._internal.query_type = _QUERY_TYPES[fmt]
        return self

    def datasource(self, ref: models.DataSourceRef) -> "ClickHouseQueryBuilder":
        self._internal.datasource = ref
        return self


# the SDK's JSON readers then know the plugin's queries (Dashboard.from_json round-trips)
cogruntime.Runtime().register_dataquery_variant(
    cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=ClickHouseQuery.from_json)
)


def _legend() -> common_builders.VizLegendOptions:
    return (common_builders.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM).calcs([]))


def _tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    kind = spec.kind
    if kind == "timeseries":
        p: Any = (timeseries.Panel().legend(_legend()).tooltip(_tooltip()).fill_opacity(15).line_width(1)
                  .show_points(common.VisibilityMode.NEVER))
        if spec.stacked:
            p = p.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
        if spec.label_columns:
            # long frames become one field per label value: name the series by it
            p = p.display_name("${__field.labels.%s}" % spec.label_columns[0])
    elif kind == "barchart":
        p = (barchart.Panel().x_field(spec.label_columns[0]).orientation(common.VizOrientation.HORIZONTAL)
             .legend(_legend()).tooltip(_tooltip()).show_value(common.VisibilityMode.AUTO).fill_opacity(80))
        if spec.stacked:
            p = p.stacking(common.StackingMode.NORMAL)
    elif kind == "piechart":
        p = (piechart.Panel().pie_type(piechart_models.PieChartType.DONUT)
             .reduce_options(common_builders.ReduceDataOptions().values(True).calcs([]).fields(""))
             .legend(piechart.PieChartLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.RIGHT).values([piechart_models.PieChartLegendValues.VALUE])))
    elif kind == "stat":
        p = (stat.Panel().reduce_options(common_builders.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields(""))
             .color_mode(common.BigValueColorMode.VALUE).graph_mode(common.BigValueGraphMode.NONE)
             .text_mode(common.BigValueTextMode.VALUE_AND_NAME if len(spec.columns) > 1 else common.BigValueTextMode.VALUE)
             .justify_mode(common.BigValueJustifyMode.CENTER).orientation(common.VizOrientation.AUTO))
    elif kind == "table":
        p = table.Panel().show_header(True).cell_height(common.TableCellHeight.SM)
    else:  # pragma: no cover - PanelKind is closed
        raise ValueError(f"unknown panel kind {kind!r}")

    x, y, w, h = spec.grid
    query = ClickHouseQueryBuilder().ref_id("A").raw_sql(spec.sql).format(spec.format).datasource(_DATASOURCE)
    p = (p.id(panel_id).title(spec.title).description(spec.description).datasource(_DATASOURCE)
         .grid_pos(models.GridPos(h=h, w=w, x=x, y=y)).unit(spec.unit).with_target(query))
    if spec.decimals is not None:
        p = p.decimals(spec.decimals)
    for column, unit in sorted(spec.column_units.items()):
        p = p.override_by_name(column, [models.DynamicConfigValue(id_val="unit", value=unit)])
    by_column: dict[str, list[dict[str, object]]] = {}
    for link in spec.links:
        by_column.setdefault(link.column, []).append({"title": link.title, "url": link.url, "targetBlank": link.new_tab})
    for column, links in by_column.items():
        p = p.override_by_name(column, [models.DynamicConfigValue(id_val="links", value=links)])
    return p


def _variables(spec: DashboardSpec) -> list[Any]:
    query_ds = _DATASOURCE
    variables: list[Any] = [
        dash.DatasourceVariable("datasource").label("Data source").type(PLUGIN_ID)
        .description("The ClickHouse that holds mcpsift's tables (plugin grafana-clickhouse-datasource).")
        .current(models.VariableOption(selected=True, text="mcpsift ClickHouse", value=DATASOURCE_UID)),
        dash.TextBoxVariable("database").label("Database").default_value("mcpsift")
        .description("The ClickHouse database of mcpsift's tables (setting `database`).")
        .current(models.VariableOption(selected=True, text="mcpsift", value="mcpsift")),
    ]
    for name, label in (("tenant", "Tenant"), ("server", "Server")):
        variables.append(
            dash.QueryVariable(name).label(label).datasource(query_ds)
            .query({"queryType": "sql", "rawSql": VARIABLE_QUERIES[name], "refId": name})
            .multi(True).include_all(True).refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    for extra in spec.variables:
        if extra.kind == "textbox":
            variables.append(
                dash.TextBoxVariable(extra.name).label(extra.label).default_value(extra.default)
                .description(extra.description)
                .current(models.VariableOption(selected=True, text=extra.default, value=extra.default))
            )
        else:
            variables.append(dash.ConstantVariable(extra.name).label(extra.label).value(extra.default)
                             .description(extra.description))
    variables.append(
        dash.ConstantVariable("api_base_url").label("Query API").value(API_BASE_URL_DEFAULT)
        .description("Base URL of the mcpsift query API that table links open (`mcpsift serve`).")
    )
    return variables


def build_dashboard(spec: DashboardSpec) -> models.Dashboard:
    """The SDK model of one dashboard."""
    b = (dash.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(list(spec.tags))
         .editable().timezone("utc").time("now-6h", "now").refresh("1m")
         .tooltip(models.DashboardCursorSync.CROSSHAIR)
         .timepicker(dash.TimePicker().refresh_intervals(["30s", "1m", "5m", "15m", "1h"]))
         .variables(_variables(spec))
         .link(dash.DashboardLink("mcpsift").type(models.DashboardLinkType.DASHBOARDS).tags(["mcpsift"])
               .as_dropdown(True).include_vars(True).keep_time(True)))
    for number, panel in enumerate(spec.panels, start=1):
        b = b.with_panel(_panel(panel, number))
    return b.build()


def render_json(spec: DashboardSpec) -> str:
    """The dashboard's JSON text, identical for identical specs."""
    return json.dumps(build_dashboard(spec), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def built_files() -> dict[str, str]:
    """``<slug>.json`` -> its JSON text, for every dashboard."""
    return {f"{spec.slug}.json": render_json(spec) for spec in DASHBOARDS}


def write_all(directory: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard's JSON into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in built_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of the JSON files in ``directory`` that differ from what the code builds
    (missing, changed, or left over from a dashboard that no longer exists)."""
    built = built_files()
    stale = [name for name, text in built.items()
             if not (directory / name).exists() or (directory / name).read_text(encoding="utf-8") != text]
    if directory.exists():
        stale += sorted(p.name for p in directory.glob("*.json") if p.name not in built)
    return sorted(stale)
