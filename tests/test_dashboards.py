"""Grafana dashboards: built from code, every panel query run on chDB, snapshots drawn.

One module-wide store holds two hours of demo traffic with attacks (events,
alerts, dead letters, SIEM outbox rows); each panel's SQL is expanded the way
Grafana and the ClickHouse plugin expand it and run for real.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from typer.testing import CliRunner

from mcpsift.dashboards.build import DATASOURCE_UID, JSON_DIR, PLUGIN_ID, VARIABLE_QUERIES, built_files, stale_files
from mcpsift.dashboards.load import INVALID_INPUTS, LoadReport, load_demo
from mcpsift.dashboards.macros import ALL, MacroError, QueryContext, expand, interval_for
from mcpsift.dashboards.panels import DASHBOARDS, INVESTIGATION, OVERVIEW
from mcpsift.dashboards.snapshot import query_context, snapshot
from mcpsift.dashboards.spec import PanelSpec

ROOT = Path(__file__).resolve().parents[1]
PROVISIONING = ROOT / "dashboards" / "provisioning"
UTC = _dt.timezone.utc
PANELS = [(d.slug, p) for d in DASHBOARDS for p in d.panels]

#: panels whose rows depend on which attacks landed in one tenant (all have rows for all tenants)
MAY_BE_EMPTY_FOR_ONE_TENANT = {"multi_resource_tokens", "weak_tokens", "poisoning_shadowing", "toxic_flows",
                               "drift_over_time", "drifted_tools"}


@pytest.fixture(scope="module")
def loaded(chdb_path: str) -> Iterator[tuple[Any, LoadReport]]:
    from mcpsift.store import Store

    store = Store(f"chdb://{chdb_path}", f"t_dashboards_{uuid.uuid4().hex[:8]}")
    store.migrate()
    report = load_demo(store, hours=2.0, tenants=4, seed=1)
    yield store, report
    store.drop_database()


def _range(report: LoadReport) -> tuple[_dt.datetime, _dt.datetime]:
    # dead letters and outbox rows are stamped "now": the range reaches it
    return report.start - _dt.timedelta(minutes=1), _dt.datetime.now(UTC) + _dt.timedelta(minutes=5)


def _run(store: Any, panel: PanelSpec, ctx: QueryContext) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    sql = expand(panel.sql, ctx)
    described = [(r[0], r[1]) for r in store.query_rows(f"DESCRIBE TABLE ({sql})")]
    return described, store.query_rows(sql)


def _busiest_tenant(store: Any) -> str:
    return store.query_rows(f"SELECT tenant FROM {store.database}.alerts FINAL GROUP BY tenant "
                            "ORDER BY count() DESC, tenant LIMIT 1")[0][0]


# -- the JSON ----------------------------------------------------------------


def test_the_checked_in_json_is_what_the_code_builds() -> None:
    assert sorted(built_files()) == ["identity.json", "investigation.json", "overview.json", "tools.json"]
    assert stale_files() == [], "run `mcpsift dashboards build` and commit dashboards/json/"


def test_the_build_is_deterministic_and_uses_the_plugin_everywhere() -> None:
    assert built_files() == built_files()
    for spec in DASHBOARDS:
        board = json.loads((JSON_DIR / f"{spec.slug}.json").read_text(encoding="utf-8"))
        assert board["uid"] == spec.uid and board["title"] == spec.title
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == PLUGIN_ID
        assert variables["datasource"]["current"]["value"] == DATASOURCE_UID
        for name in ("tenant", "server"):
            assert variables[name]["type"] == "query" and variables[name]["includeAll"] and variables[name]["multi"]
            assert variables[name]["query"]["rawSql"] == VARIABLE_QUERIES[name]
            assert variables[name]["datasource"] == {"type": PLUGIN_ID, "uid": "${datasource}"}
        assert variables["api_base_url"]["type"] == "constant"
        assert len(board["panels"]) == len(spec.panels)
        for panel, panel_spec in zip(board["panels"], spec.panels):
            assert panel["type"] == panel_spec.kind and panel["title"] == panel_spec.title
            assert panel["datasource"] == {"type": PLUGIN_ID, "uid": "${datasource}"}
            (target,) = panel["targets"]
            assert target["rawSql"] == panel_spec.sql and target["editorType"] == "sql"
            assert (target["format"], target["queryType"]) == (
                (0, "timeseries") if panel_spec.format == "time_series" else (1, "table"))
            # every panel follows the time picker, except the outbox's current state
            assert ("$__timeFilter(" in target["rawSql"] or "$__fromTime" in target["rawSql"]
                    or panel_spec.key in ("siem_backlog", "siem_outbox")), panel_spec.key
            x, y, w, h = panel_spec.grid
            assert panel["gridPos"] == {"x": x, "y": y, "w": w, "h": h} and x + w <= 24
    investigation = json.loads((JSON_DIR / "investigation.json").read_text(encoding="utf-8"))
    variables = {v["name"]: v["type"] for v in investigation["templating"]["list"]}
    assert all(variables[n] == "textbox" for n in ("principal", "session", "token"))
    timeline = next(p for p in investigation["panels"] if p["title"] == "Timeline")
    urls = [link["url"] for o in timeline["fieldConfig"]["overrides"] for prop in o["properties"]
            if prop["id"] == "links" for link in prop["value"]]
    for path in ("/v1/sessions/", "/v1/principals/", "/v1/tokens/"):
        assert any(u.startswith("${api_base_url:raw}" + path) for u in urls), path


def test_build_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    from mcpsift.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "tools.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "old.json").write_text("{}\n", encoding="utf-8")
    result = runner.invoke(app, ["dashboards", "build", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1 and "old.json, tools.json" in result.output


# -- the macro expansion -----------------------------------------------------


def test_macros_expand_as_the_plugin_does() -> None:
    start = _dt.datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    end = _dt.datetime(2026, 11, 2, 10, 0, 0, 250000, tzinfo=UTC)
    ctx = QueryContext(start, end, 30, {"tenant": ALL, "one": "o'k", "many": ["a", "b"], "empty": ""},
                       {"tenant": ["acme", "globex"]})
    assert expand("$__timeFilter(time)", ctx) == "time >= toDateTime(1793606400) AND time <= toDateTime(1793613600)"
    assert expand("$__timeFilter_ms(t)", ctx) == (
        "t >= fromUnixTimestamp64Milli(1793606400000) AND t <= fromUnixTimestamp64Milli(1793613600250)")
    assert expand("$__timeInterval(time)", ctx) == "toStartOfInterval(toDateTime(time), INTERVAL 30 second)"
    assert expand("$__timeInterval_ms(t)", ctx) == "toStartOfInterval(toDateTime64(t, 3), INTERVAL 30000 millisecond)"
    assert expand("x / $__interval_s", ctx) == "x / 30"
    assert expand("$__fromTime,$__toTime_ms", ctx) == "toDateTime(1793606400),fromUnixTimestamp64Milli(1793613600250)"
    assert expand("$__dateFilter(d)", ctx) == "d >= toDate('2026-11-02') AND d <= toDate('2026-11-02')"
    # conditionalAll: "All" or empty drops the condition; a selection keeps it
    assert expand("$__conditionalAll(tenant IN (${tenant:singlequote}), $tenant)", ctx) == "1=1"
    assert expand("$__conditionalAll(x = ${empty:singlequote}, $empty)", ctx) == "1=1"
    assert expand("$__conditionalAll(f(a, g(b)) IN (${many:singlequote}), $many) AND 1", ctx) == (
        "f(a, g(b)) IN ('a','b') AND 1")
    # variable formats: singlequote escapes quotes; the default quotes only several values
    assert expand("${one:singlequote} $one ${many} ${tenant:singlequote}", ctx) == (
        "'o\\'k' o'k 'a','b' 'acme','globex'")
    with pytest.raises(MacroError):
        expand("$__nope(x)", ctx)
    with pytest.raises(MacroError):
        expand("$undefined", ctx)
    with pytest.raises(MacroError):
        expand("$__timeFilter(a, b)", ctx)
    assert interval_for(start, start + _dt.timedelta(hours=2)) == 30
    assert interval_for(start, start + _dt.timedelta(days=7)) == 3600


# -- every panel query, for real ---------------------------------------------


@pytest.mark.parametrize("selection", ["all tenants", "one tenant"])
def test_every_panel_query_runs_with_the_columns_it_promises(loaded: tuple[Any, LoadReport], selection: str) -> None:
    store, report = loaded
    start, end = _range(report)
    tenants = [_busiest_tenant(store)] if selection == "one tenant" else []
    ctx = query_context(store, start, end, tenants=tenants)
    empty = []
    for slug, panel in PANELS:
        described, rows = _run(store, panel, ctx)
        assert tuple(name for name, _ in described) == panel.columns, f"{slug}/{panel.key}"
        types = dict(described)
        if panel.time_column is not None:
            assert types[panel.time_column].startswith("DateTime"), f"{slug}/{panel.key}: {types[panel.time_column]}"
            assert [r[0] for r in rows] == sorted(r[0] for r in rows), f"{slug}/{panel.key}: not ordered by time"
        for column in panel.value_columns if panel.kind != "table" else ():
            assert "String" not in types[column], f"{slug}/{panel.key}: value column {column} is {types[column]}"
        if not rows:
            empty.append(panel.key)
    allowed = MAY_BE_EMPTY_FOR_ONE_TENANT if tenants else set()
    assert set(empty) <= allowed, f"panels without rows: {sorted(set(empty) - allowed)}"


def test_variable_queries_list_tenants_and_servers(loaded: tuple[Any, LoadReport]) -> None:
    store, report = loaded
    start, end = _range(report)
    ctx = query_context(store, start, end)
    tenants = [r[0] for r in store.query_rows(expand(VARIABLE_QUERIES["tenant"], ctx))]
    assert tenants == ctx.options["tenant"] and len(tenants) == 4
    servers = [r[0] for r in store.query_rows(expand(VARIABLE_QUERIES["server"], ctx))]
    one = query_context(store, start, end, tenants=[tenants[0]])
    servers_of_one = [r[0] for r in store.query_rows(expand(VARIABLE_QUERIES["server"], one))]
    assert servers == ctx.options["server"] and 0 < len(servers_of_one) < len(servers)


def test_panel_numbers_agree_with_the_store(loaded: tuple[Any, LoadReport]) -> None:
    store, report = loaded
    start, end = _range(report)
    every = query_context(store, start, end)

    def value(panel_key: str, ctx: QueryContext = every) -> tuple[Any, ...]:
        return _run(store, OVERVIEW.panel(panel_key), ctx)[1][0]

    assert value("events") == (store.count_events(),) == (report.events,)
    assert value("open_alerts") == (store.count_alerts(),) == (report.alerts,)
    assert value("dead_letters") == (len(INVALID_INPUTS),)
    assert value("siem_backlog") == (report.deliveries["pending"], report.deliveries["dead"])
    tenant = _busiest_tenant(store)
    assert value("events", query_context(store, start, end, tenants=[tenant])) == (store.count_events(tenant),)
    # the time filter bites: an hour with no traffic has no events
    before = query_context(store, start - _dt.timedelta(hours=3), start - _dt.timedelta(hours=2))
    assert value("events", before) == (0,)
    # a server selection keeps only that server's events
    server = every.options["server"][0]
    only = query_context(store, start, end, servers=[server])
    (expected,), = store.query_rows(
        f"SELECT count() FROM {store.database}.events FINAL WHERE server_resource = {{s:String}}", {"s": server})
    assert value("events", only) == (expected,) and 0 < expected < report.events
    # per-minute rates add back up to the events
    per_min = _run(store, OVERVIEW.panel("events_per_min"), every)[1]
    assert round(sum(r[2] for r in per_min) * every.interval_s / 60) == report.events


def test_the_investigation_follows_the_selected_entity(loaded: tuple[Any, LoadReport]) -> None:
    store, report = loaded
    start, end = _range(report)
    subject, session = store.query_rows(
        f"SELECT principal_subject, session_id FROM {store.database}.alerts FINAL "
        "WHERE principal_subject != '' AND session_id != '' ORDER BY time, alert_id LIMIT 1")[0]
    by_principal = query_context(store, start, end, entity={"principal": subject})
    timeline = INVESTIGATION.panel("timeline")
    rows = _run(store, timeline, by_principal)[1]
    subject_at = timeline.columns.index("principal_subject")
    assert rows and {r[subject_at] for r in rows} == {subject}
    alerts = _run(store, INVESTIGATION.panel("entity_alert_list"), by_principal)[1]
    assert alerts and all(r[3] == subject for r in alerts)
    by_session = query_context(store, start, end, entity={"session": session})
    session_rows = _run(store, timeline, by_session)[1]
    assert session_rows and {r[timeline.columns.index("session_id")] for r in session_rows} == {session}
    nobody = query_context(store, start, end, entity={"principal": "nobody'); DROP TABLE x; --"})
    assert _run(store, timeline, nobody)[1] == []


# -- provisioning --------------------------------------------------------------


def test_provisioning_files_parse_and_point_at_real_things() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yaml").read_text(encoding="utf-8"))
    (source,) = datasources["datasources"]
    assert datasources["apiVersion"] == 1
    assert source["type"] == PLUGIN_ID and source["uid"] == DATASOURCE_UID
    json_data = source["jsonData"]
    assert json_data["host"] == "${CLICKHOUSE_HOST}" and json_data["port"] == "${CLICKHOUSE_PORT}"
    assert json_data["protocol"] in ("http", "native") and json_data["defaultDatabase"] == "${CLICKHOUSE_DATABASE}"
    assert source["secureJsonData"]["password"] == "${CLICKHOUSE_PASSWORD}"
    dashboards = yaml.safe_load((PROVISIONING / "dashboards" / "mcpsift.yaml").read_text(encoding="utf-8"))
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards/mcpsift"
    # the provisioned datasource is the one the dashboards select by default
    for spec in DASHBOARDS:
        board = json.loads((JSON_DIR / f"{spec.slug}.json").read_text(encoding="utf-8"))
        assert {v["name"]: v for v in board["templating"]["list"]}["datasource"]["current"]["value"] == source["uid"]


# -- snapshots -----------------------------------------------------------------


def test_snapshot_draws_one_png_per_dashboard(loaded: tuple[Any, LoadReport], tmp_path: Path) -> None:
    store, report = loaded
    start, end = _range(report)
    seen: list[str] = []
    written = snapshot(store, tmp_path, start, end, on_panel=lambda d, p: seen.append(f"{d.slug}/{p.key}"))
    assert [p.name for p in written] == [f"{d.slug}.png" for d in DASHBOARDS]
    assert seen == [f"{slug}/{p.key}" for slug, p in PANELS]
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < len(data) < 1_500_000


def test_snapshot_demo_needs_nothing_set_up(tmp_path: Path) -> None:
    # its own process: chDB opens one data path per process, and --demo opens a fresh one
    out = subprocess.run(
        [sys.executable, "-m", "mcpsift.cli", "dashboards", "snapshot", "--demo", "--hours", "0.5", "--tenants", "3",
         "--out", str(tmp_path / "png")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(f"{d.slug}.png" for d in DASHBOARDS)
    assert "46 panels of 4 dashboards" in out.stdout.replace("\n", " ")
    assert not list(tmp_path.glob(".mcpsift*"))  # the demo store was temporary
