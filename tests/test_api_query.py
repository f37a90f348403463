"""The incident-response query API over real data in chDB: search, timelines,
inventory, stats, export, alerts and triage, limits, and SQL-injection attempts.

One module-wide store holds half an hour of demo traffic of three tenants
(validated by the pipeline, detected on, stored); the app is the real FastAPI
app with a test authenticator mapping a header to a principal and its tenants.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import uuid
from urllib.parse import quote
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from mcpsift.api.app import create_api_app, create_app
from mcpsift.settings import Settings
from mcpsift.store.queries import QueryLimits

from .helpers.query_api import TENANTS, HeaderAuthenticator, as_, load, window_params

ACME = as_("viewer", "acme")
ANALYST = as_("analyst", "acme")
EVERYONE = as_("viewer", "*")


@pytest.fixture(scope="module")
def loaded(chdb_path: str) -> Iterator[tuple[Any, Any]]:
    from mcpsift.store import Store

    store = Store(f"chdb://{chdb_path}", f"t_api_query_{uuid.uuid4().hex[:8]}")
    store.migrate()
    report = load(store)
    yield store, report
    store.drop_database()


@pytest.fixture(scope="module")
def client(loaded: tuple[Any, Any]) -> Iterator[TestClient]:
    store, _ = loaded
    app = create_api_app(Settings(), store, authenticator=HeaderAuthenticator())
    app.state.query_limits = QueryLimits(export_batch=200)  # several pages even in a small export
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def win(loaded: tuple[Any, Any]) -> dict[str, str]:
    return window_params(loaded[1])


def _t(value: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(value)


def _count(store: Any, where: str = "1", **params: Any) -> int:
    return int(store.query_rows(f"SELECT count() FROM {store.database}.events FINAL WHERE {where}", params)[0][0])


def _pages(client: TestClient, url: str, params: dict[str, Any], headers: dict[str, str]) -> list[dict]:
    items, cursor = [], None
    for _ in range(1000):
        r = client.get(url, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination never ended")


def test_event_search_pages_through_exactly_the_tenants_events(client: TestClient, loaded, win) -> None:
    store, _ = loaded
    items = _pages(client, "/v1/events", {**win, "limit": 300}, ACME)
    assert len(items) == _count(store, "tenant = 'acme'") > 300
    assert len({i["event_id"] for i in items}) == len(items)  # keyset: nothing twice
    assert {i["tenant"] for i in items} == {"acme"}
    keys = [(_t(i["time"]), i["event_id"]) for i in items]
    assert keys == sorted(keys, reverse=True)
    asc = _pages(client, "/v1/events", {**win, "limit": 1000, "order": "asc"}, ACME)
    assert [i["event_id"] for i in asc] == [i["event_id"] for i in reversed(items)]


def test_event_search_filters_combine(client: TestClient, loaded, win) -> None:
    store, _ = loaded
    server = "https://mcp.acme.example/postgres"
    params = {**win, "type": "mcp.tool_call", "server": server, "outcome": "ok", "limit": 1000}
    items = _pages(client, "/v1/events", params, ACME)
    expected = _count(store, "tenant = 'acme' AND type = 'mcp.tool_call' AND server_resource = {s:String} "
                      "AND outcome_status = 'ok'", s=server)
    assert len(items) == expected > 0
    assert all(i["server_resource"] == server and i["type"] == "mcp.tool_call" for i in items)
    by_name = _pages(client, "/v1/events", {**params, "server": "postgres"}, ACME)
    assert len(by_name) == expected  # a server by name or by resource
    first = items[0]
    for field in ("principal_subject", "session_id", "token_fingerprint", "client_id", "tool_name"):
        if first[field]:
            got = _pages(client, "/v1/events", {**win, field: first[field], "limit": 1000}, ACME)
            assert got and all(g[field] == first[field] for g in got) and first["event_id"] in {g["event_id"] for g in got}
    assert _pages(client, "/v1/events", {**win, "source": first["source_name"]}, ACME)


def test_one_event_with_its_stored_record(client: TestClient, loaded, win) -> None:
    store, _ = loaded
    event_id = store.query_rows(f"SELECT event_id FROM {store.database}.events WHERE tenant = 'acme' LIMIT 1")[0][0]
    r = client.get(f"/v1/events/{event_id}", headers=ACME)
    assert r.status_code == 200 and r.json()["event"]["event_id"] == event_id and r.json()["tenant"] == "acme"
    assert client.get("/v1/events/no-such-event", headers=ACME).status_code == 404


def test_session_timeline_is_in_order_with_a_summary(client: TestClient, loaded) -> None:
    store, _ = loaded
    session_id, n = store.query_rows(
        f"SELECT session_id, count() c FROM {store.database}.events FINAL WHERE tenant = 'acme' AND session_id != '' "
        "GROUP BY session_id ORDER BY c DESC LIMIT 1"
    )[0]
    body = client.get(f"/v1/sessions/{session_id}", params={"limit": 2}, headers=ACME).json()
    assert body["summary"]["events"] == n and body["summary"]["tenants"] == ["acme"]
    events = body["events"]
    cursor = body["next_cursor"]
    while cursor:
        more = client.get(f"/v1/sessions/{session_id}", params={"limit": 2, "cursor": cursor}, headers=ACME).json()
        events += more["events"]
        cursor = more["next_cursor"]
    assert len(events) == n and all(e["session_id"] == session_id for e in events)
    assert [_t(e["time"]) for e in events] == sorted(_t(e["time"]) for e in events)
    assert sum(body["summary"]["types"].values()) == n
    assert client.get("/v1/sessions/nope", headers=ACME).status_code == 404


def test_principal_timeline(client: TestClient, loaded) -> None:
    store, _ = loaded
    subject, n = store.query_rows(
        f"SELECT principal_subject, count() FROM {store.database}.events FINAL WHERE tenant = 'acme' "
        "AND principal_subject != '' GROUP BY principal_subject ORDER BY count() DESC LIMIT 1"
    )[0]
    items = _pages(client, f"/v1/principals/{subject}/timeline", {"limit": 7}, ACME)
    assert len(items) == n and all(i["principal_subject"] == subject for i in items)
    assert [_t(i["time"]) for i in items] == sorted(_t(i["time"]) for i in items)


def test_token_shows_every_server_with_verdicts(client: TestClient, loaded) -> None:
    store, _ = loaded
    fingerprint = store.query_rows(
        f"SELECT token_fingerprint FROM {store.database}.events FINAL WHERE tenant = 'acme' AND token_fingerprint != '' "
        "AND server_resource != '' GROUP BY token_fingerprint ORDER BY uniqExact(server_resource) DESC, count() DESC LIMIT 1"
    )[0][0]
    servers = {
        r[0]: int(r[1])
        for r in store.query_rows(
            f"SELECT server_resource, count() FROM {store.database}.events FINAL WHERE token_fingerprint = {{f:String}} "
            "AND server_resource != '' GROUP BY server_resource", {"f": fingerprint})
    }
    body = client.get(f"/v1/tokens/{fingerprint}", headers=ACME).json()
    assert {s["server_resource"]: s["events"] for s in body["servers"]} == servers
    for s in body["servers"]:
        assert sum(v["count"] for v in s["verdicts"]) == s["events"] and s["first_seen"] <= s["last_seen"]
    assert body["first_seen"] <= body["last_seen"] and body["principals"]
    assert client.get("/v1/tokens/sha256:unknown", headers=ACME).status_code == 404


def test_client_history_and_inventory(client: TestClient, loaded) -> None:
    store, _ = loaded
    client_id = "https://assistant.example.com/oauth/client.json"
    body = client.get(f"/v1/clients/{client_id}", headers=ACME).json()
    assert body["tenants"] == ["acme"] and body["principals"] and body["servers"]
    cimd = _count(store, "tenant = 'acme' AND client_id = {c:String} AND type = 'auth.client_metadata'", c=client_id)
    assert len(body["registrations"]) == cimd > 0
    assert all(r["type"] == "auth.client_metadata" and r["document_hash"] for r in body["registrations"])
    everyone = client.get(f"/v1/clients/{client_id}", headers=EVERYONE).json()
    assert everyone["tenants"] == sorted(TENANTS)
    inventory = _pages(client, "/v1/clients", {"limit": 5}, ACME)
    expected = store.query_rows(
        f"SELECT uniqExact(client_id) FROM {store.database}.events FINAL WHERE tenant = 'acme' AND client_id != ''"
    )[0][0]
    assert len(inventory) == expected and {i["tenant"] for i in inventory} == {"acme"}
    assert any(i["dcr_registrations"] for i in inventory) and any(i["cimd_fetches"] for i in inventory)


def test_inventory_servers_and_tool_drift(client: TestClient, loaded, win) -> None:
    store, _ = loaded
    servers = _pages(client, "/v1/inventory/servers", {**win, "limit": 4}, EVERYONE)
    expected = store.query_rows(
        f"SELECT count() FROM (SELECT DISTINCT tenant, server_resource, server_name FROM {store.database}.events "
        "WHERE server_name != '' OR server_resource != '')"
    )[0][0]
    assert len(servers) == expected and sum(s["events"] for s in servers) == _count(
        store, "server_name != '' OR server_resource != ''")
    tools = _pages(client, "/v1/inventory/tools", {**win, "limit": 10}, EVERYONE)
    assert len({(t["tenant"], t["server_resource"], t["server_name"], t["name"]) for t in tools}) == len(tools)
    drifted = _pages(client, "/v1/inventory/tools", {**win, "drifted": "true"}, EVERYONE)
    assert drifted and all(t["drifted"] and len(t["history"]) > 1 for t in drifted)
    assert {t["name"] for t in drifted} <= {t["name"] for t in tools if t["drifted"]}
    # the detector's drift alert names a tool the drift view shows as drifted
    drift_alerts = _pages(client, "/v1/alerts", {"rule_id": "tool.definition_drift"}, EVERYONE)
    assert drift_alerts
    assert any(t["name"] in a["description"] for a in drift_alerts for t in drifted)
    one = drifted[0]
    only = _pages(client, "/v1/inventory/tools", {**win, "tool_name": one["name"], "server": one["server_resource"] or one["server_name"]}, EVERYONE)
    assert [t["history"] for t in only if t["tenant"] == one["tenant"]] == [one["history"]]


def test_stats_add_up(client: TestClient, loaded, win) -> None:
    store, _ = loaded
    by_type = client.get("/v1/stats", params={**win, "by": "type", "bucket": "five_minutes"}, headers=ACME).json()
    assert by_type["total"] == _count(store, "tenant = 'acme'")
    assert {s["key"] for s in by_type["series"]} >= {"mcp.tool_call", "auth.token"}
    by_severity = client.get("/v1/stats", params={**win, "by": "severity"}, headers=EVERYONE).json()
    assert by_severity["total"] == store.count_alerts()
    by_tenant = client.get("/v1/stats", params={**win, "by": "tenant"}, headers=EVERYONE).json()
    assert {s["key"] for s in by_tenant["series"]} == set(TENANTS)
    r = client.get("/v1/stats", params={**win, "by": "nope"}, headers=ACME)
    assert r.status_code == 422
    wide = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-30T00:00:00Z", "bucket": "minute"}
    r = client.get("/v1/stats", params=wide, headers=ACME)
    assert r.status_code == 400 and "bucket" in r.json()["detail"]


def test_export_streams_every_row_as_ndjson_and_csv(client: TestClient, loaded, win) -> None:
    store, _ = loaded
    expected = _count(store, "tenant = 'acme' AND type = 'mcp.tool_call'")
    assert expected > 600  # more than three export batches of 200
    with client.stream("GET", "/v1/export/events", params={**win, "type": "mcp.tool_call"}, headers=ACME) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) == expected == len({l["event_id"] for l in lines})
    assert all(l["tenant"] == "acme" and l["type"] == "mcp.tool_call" for l in lines)
    assert [_t(l["time"]) for l in lines] == sorted(_t(l["time"]) for l in lines)
    r = client.get("/v1/export/events", params={**win, "type": "mcp.tool_call", "format": "csv"}, headers=ACME)
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == expected and rows[0]["type"] == "mcp.tool_call"
    capped = client.get("/v1/export/events", params={**win, "max_rows": 250}, headers=ACME)
    assert len(capped.text.splitlines()) == 250
    assert client.get("/v1/export/events", params={**win, "max_rows": 2_000_000}, headers=ACME).status_code == 422


def test_alerts_list_get_and_triage(client: TestClient, loaded) -> None:
    store, _ = loaded
    alerts = _pages(client, "/v1/alerts", {"limit": 3}, ACME)
    assert len(alerts) == int(store.query_rows(
        f"SELECT count() FROM {store.database}.alerts FINAL WHERE tenant = 'acme'")[0][0]) > 3
    assert all(a["status"] == "open" and a["tenant"] == "acme" for a in alerts)
    high = _pages(client, "/v1/alerts", {"severity": "high"}, EVERYONE)
    assert high and all(a["severity"] == "high" for a in high)
    target = next(a for a in alerts if a["token_fingerprint"] or a["principal_subject"])
    entity = ("token_fingerprint", target["token_fingerprint"]) if target["token_fingerprint"] else (
        "principal_subject", target["principal_subject"])
    assert target["alert_id"] in {a["alert_id"] for a in _pages(client, "/v1/alerts", dict([entity]), ACME)}

    detail = client.get(f"/v1/alerts/{target['alert_id']}", headers=ACME).json()
    assert {e["event_id"] for e in detail["evidence"]} == set(target["event_ids"])
    assert all(e["event"]["event_id"] == e["event_id"] for e in detail["evidence"]) and detail["history"] == []

    url = f"/v1/alerts/{target['alert_id']}"
    assert client.patch(url, json={"status": "acknowledged"}, headers=ACME).status_code == 403  # viewer
    r = client.patch(url, json={"status": "acknowledged", "assignee": "bob"}, headers=ANALYST)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged" and r.json()["assignee"] == "bob"
    r = client.patch(url, json={"note": "token revoked at the IdP"}, headers=as_("admin", "acme"))
    assert r.json()["status"] == "acknowledged" and r.json()["notes"][-1]["note"] == "token revoked at the IdP"
    r = client.patch(url, json={"status": "resolved", "assignee": ""}, headers=ANALYST)
    body = r.json()
    assert body["status"] == "resolved" and body["assignee"] is None and body["changes"] == 3
    assert [(c["actor"], c["status"]) for c in body["history"]] == [
        ("user-analyst-acme", "acknowledged"), ("user-admin-acme", None), ("user-analyst-acme", "resolved")]
    resolved = _pages(client, "/v1/alerts", {"status": "resolved"}, ACME)
    assert [a["alert_id"] for a in resolved] == [target["alert_id"]]
    assert target["alert_id"] not in {a["alert_id"] for a in _pages(client, "/v1/alerts", {"status": "open"}, ACME)}
    # event-sourced: the table holds every change, never an update
    assert store.query_rows(f"SELECT count() FROM {store.database}.alert_changes WHERE alert_id = {{a:String}}",
                            {"a": target["alert_id"]})[0][0] == 3

    assert client.patch(url, json={"status": "closed"}, headers=ANALYST).status_code == 422
    assert client.patch(url, json={"colour": "red"}, headers=ANALYST).status_code == 422
    assert client.patch(url, json={}, headers=ANALYST).status_code == 400
    assert client.patch(url, json={"status": None}, headers=ANALYST).status_code == 400
    assert client.patch("/v1/alerts/nope", json={"status": "resolved"}, headers=ANALYST).status_code == 404
    other = store.query_rows(f"SELECT alert_id FROM {store.database}.alerts FINAL WHERE tenant = 'globex' LIMIT 1")[0][0]
    assert client.patch(f"/v1/alerts/{other}", json={"status": "resolved"}, headers=ANALYST).status_code == 404


@pytest.mark.parametrize(
    "path, params, status, words",
    [
        ("/v1/events", {"since": "2026-11-20T00:00:00Z", "until": "2026-11-19T00:00:00Z"}, 400, "before"),
        ("/v1/events", {"since": "2026-01-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, 400, "at most"),
        ("/v1/events", {"cursor": "bm90IGEgY3Vyc29y"}, 400, "cursor"),
        ("/v1/events", {"cursor": "%%%"}, 400, "cursor"),
        ("/v1/alerts", {"cursor": "WyJldmVudHMtZGVzYyIsIngiLCJ5Il0"}, 400, "cursor"),
        ("/v1/events", {"limit": 5000}, 422, ""),
        ("/v1/events", {"type": "Robert'); DROP TABLE events;--"}, 400, "event type"),
        ("/v1/events", {"client_id": "a\x00b"}, 400, "control characters"),
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, path: str, params: dict, status: int, words: str) -> None:
    r = client.get(path, params=params, headers=ACME)
    assert r.status_code == status, r.text
    assert words in json.dumps(r.json())


def test_a_store_failure_is_a_503_without_sql(client: TestClient, loaded, monkeypatch) -> None:
    store, _ = loaded

    def broken(sql, parameters=None):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"Code: 62. DB::Exception: Syntax error: failed at position 1 ({sql[:80]})")

    monkeypatch.setattr(store, "query_rows", broken)
    r = client.get("/v1/events", headers=ACME)
    assert r.status_code == 503 and "retry" in r.json()["detail"]
    assert "SELECT" not in r.text and "DB::Exception" not in r.text


INJECTIONS = [
    "' OR 1=1 --",
    "acme' OR tenant != 'acme",
    "x') UNION SELECT * FROM system.tables --",
    "\\' OR 1=1 #",
    "x\\",
    "{tenant:String}",
    "' ; DROP TABLE events; --",
    "a\x00b",
    "%' OR '%'='",
]


def _string_params(client: TestClient) -> list[tuple[str, str, list[str]]]:
    """(path template, method, its string query and path parameters) of every GET route of the API."""
    spec = client.app.openapi()  # type: ignore[attr-defined]
    routes = []
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        if op is None or not path.startswith("/v1/"):
            continue
        names = [
            p["name"] for p in op.get("parameters", [])
            if p["in"] in ("query", "path") and p["name"] not in ("since", "until", "limit", "max_rows")
            and "string" in json.dumps(p["schema"]) and "enum" not in json.dumps(p["schema"])
        ]
        routes.append((path, "get", names))
    return routes


def test_sql_injection_in_every_filter_is_4xx_or_empty(client: TestClient, loaded) -> None:
    store, _ = loaded
    other_ids = {r[0] for r in store.query_rows(
        f"SELECT event_id FROM {store.database}.events FINAL WHERE tenant != 'acme'")}
    routes = _string_params(client)
    assert len(routes) >= 12 and sum(len(n) for _, _, n in routes) >= 30
    checked = 0
    for path, _, names in routes:
        path_params = [n for n in names if "{" + n + "}" in path]
        for name in names:
            for attack in INJECTIONS:
                url = path
                for p in path_params:
                    url = url.replace("{" + p + "}", quote(attack, safe="") if p == name else "x")
                params = {} if name in path_params else {name: attack}
                r = client.get(url, params=params, headers=ACME)
                checked += 1
                assert r.status_code < 500, (path, name, attack, r.text)
                assert "DB::Exception" not in r.text and "Code:" not in r.text, (path, name, attack)
                if r.status_code == 200 and r.headers["content-type"].startswith("application/json"):
                    tenants = _tenants_in(r.json())
                    assert tenants <= {"acme"}, (path, name, attack, tenants)
                if r.status_code == 200 and "items" in r.text:
                    for item in r.json().get("items", []):
                        assert item.get("event_id") not in other_ids
    assert checked > 250
    # the tables are still there
    assert _count(store) > 0


def _tenants_in(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "tenant" and isinstance(v, str):
                found.add(v)
            elif k == "tenants" and isinstance(v, list):
                found.update(v)
            else:
                found |= _tenants_in(v)
    elif isinstance(value, list):
        for v in value:
            found |= _tenants_in(v)
    return found


def test_serve_mounts_the_same_query_routers() -> None:
    class _Runner:
        def start(self) -> None: ...
        def stop(self) -> None: ...

    serve_paths = set(create_app(Settings(), store=None, runner=_Runner()).openapi()["paths"])  # type: ignore[arg-type]
    api_paths = set(create_api_app(Settings(), store=None).openapi()["paths"])  # type: ignore[arg-type]
    assert {p for p in api_paths if p.startswith("/v1/")} <= serve_paths
    assert "/v1/events/{event_id}" in api_paths and "/v1/export/events" in api_paths


def test_openapi_has_examples_for_the_responses() -> None:
    spec = create_api_app(Settings(), store=None).openapi()  # type: ignore[arg-type]
    schemas = spec["components"]["schemas"]
    for name in ("EventPublic", "AlertPublic", "AlertDetail", "AlertUpdate", "TokenPublic", "ClientPublic",
                 "SessionTimeline", "ToolInventoryItem", "StatsPublic"):
        assert schemas[name].get("examples"), name
    patch = spec["paths"]["/v1/alerts/{alert_id}"]["patch"]
    assert patch["requestBody"]["content"]["application/json"]["examples"]
