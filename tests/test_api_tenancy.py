"""Tenant isolation through every route: tenant A's principal, given tenant B's
ids, gets 404 or empty answers from every read (and write) of the app, never a
row of B. The route list comes from the app's own OpenAPI document, so a route
added later is checked without touching this test.

The control: the same calls made as tenant B do return B's rows, so the test
would fail if isolation broke.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from mcpsift.api.app import create_app
from mcpsift.settings import Settings
from mcpsift.streams.embedded import EmbeddedRunner

from .helpers.query_api import HeaderAuthenticator, as_, load, window_params

A, B = "acme", "globex"


@pytest.fixture(scope="module")
def world(chdb_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from mcpsift.store import Store

    store = Store(f"chdb://{chdb_path}", f"t_api_tenancy_{uuid.uuid4().hex[:8]}")
    store.migrate()
    report = load(store)
    db = store.database

    def only_b(column: str, table: str = "events") -> str:
        return store.query_rows(
            f"SELECT {column} FROM {db}.{table} FINAL WHERE tenant = {{b:String}} AND {column} != '' "
            f"AND {column} NOT IN (SELECT {column} FROM {db}.{table} FINAL WHERE tenant != {{b:String}}) "
            f"GROUP BY {column} ORDER BY count() DESC, {column} LIMIT 1",
            {"b": B},
        )[0][0]

    ids = {
        "event_id": only_b("event_id"),
        "session_id": only_b("session_id"),
        "subject": only_b("principal_subject"),
        "fingerprint": only_b("token_fingerprint"),
        "client_id": only_b("client_id"),
        "alert_id": only_b("alert_id", "alerts"),
    }
    secrets = set(ids.values()) | {r[0] for r in store.query_rows(
        f"SELECT event_id FROM {db}.events FINAL WHERE tenant = {{b:String}} UNION ALL "
        f"SELECT alert_id FROM {db}.alerts FINAL WHERE tenant = {{b:String}}", {"b": B})}
    settings = Settings(data_dir=tmp_path_factory.mktemp("tenancy"))
    app = create_app(settings, store, EmbeddedRunner(settings, store), authenticator=HeaderAuthenticator())
    with TestClient(app) as client:
        yield {"client": client, "store": store, "ids": ids, "secrets": secrets, "window": window_params(report)}
    store.drop_database()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _leaks(r: Any, secrets: set[str]) -> set[str]:
    """B's ids and tenant name found in a response (JSON, NDJSON or CSV)."""
    text = r.text
    found = {s for s in secrets if s in text}
    if f'"tenant":"{B}"' in text.replace(" ", "") or f",{B}," in text or f'"{B}"' in text:
        found.add(f"tenant {B}")
    return found


def _calls(world: dict[str, Any]) -> list[tuple[str, str, str, dict[str, str], Any]]:
    """(method, path template, url, query, body) for every operation of the app, with B's ids."""
    client: TestClient = world["client"]
    ids = world["ids"]
    calls = []
    for path, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, op in operations.items():
            url = path
            names = {p["name"]: p for p in op.get("parameters", [])}
            for name, p in names.items():
                if p["in"] == "path":
                    url = url.replace("{" + name + "}", quote(ids.get(name, "x"), safe=":"))
            query = {k: v for k, v in world["window"].items() if k in names}
            if "tenant" in json.dumps(names.get("by", {}).get("schema", {})):
                query["by"] = "tenant"  # stats: a series per tenant names them
            body = {"status": "resolved", "note": "x"} if method in ("patch", "post", "put") else None
            calls.append((method, path, url, query, body))
            if "tenant" in names:
                calls.append((method, path + "?tenant=B", url, {**query, "tenant": B}, body))
    return calls


def _call(client: TestClient, method: str, url: str, query: dict, body: Any, headers: dict) -> Any:
    return client.request(method.upper(), url, params=query, json=body, headers=headers)


def test_tenant_a_reads_nothing_of_tenant_b_through_any_route(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    calls = _calls(world)
    reads = [c for c in calls if c[0] == "get" and c[1].startswith("/v1/")]
    assert len({c[1] for c in reads}) >= 14, sorted({c[1] for c in reads})
    for method, path, url, query, body in calls:
        if method not in ("get", "patch"):
            continue  # writes of other parts (ingest, keys, replay) carry no path ids of B's rows
        for role in ("viewer", "admin"):
            r = _call(client, method, url, query, body, as_(role, A))
            assert r.status_code in (200, 403, 404), (method, path, role, r.status_code, r.text[:300])
            assert not _leaks(r, world["secrets"]), (method, path, role, _leaks(r, world["secrets"]))
            if r.status_code == 200 and r.headers["content-type"].startswith("application/json"):
                body_json = r.json()
                items = body_json.get("items") if isinstance(body_json, dict) else body_json
                if isinstance(items, list):
                    assert all(not isinstance(i, dict) or i.get("tenant") in (None, A) for i in items), path


def test_the_same_calls_as_tenant_b_do_see_b(world: dict[str, Any]) -> None:
    """The control: isolation, not missing data, is why tenant A saw nothing."""
    client: TestClient = world["client"]
    seen = set()
    for method, path, url, query, body in _calls(world):
        if method != "get":
            continue
        r = _call(client, method, url, query, body, as_("viewer", B))
        if r.status_code == 200 and _leaks(r, world["secrets"]):
            seen.add(path)
    for expected in ("/v1/events", "/v1/events/{event_id}", "/v1/sessions/{session_id}",
                     "/v1/principals/{subject}/timeline", "/v1/tokens/{fingerprint}", "/v1/clients/{client_id}",
                     "/v1/alerts", "/v1/alerts/{alert_id}", "/v1/export/events", "/v1/inventory/servers",
                     "/v1/clients", "/v1/stats"):
        assert expected in seen, expected


def test_a_can_not_triage_b_and_b_keeps_its_state(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    url = f"/v1/alerts/{world['ids']['alert_id']}"
    r = client.patch(url, json={"status": "false_positive"}, headers=as_("admin", A))
    assert r.status_code == 404
    mine = client.get(url, headers=as_("viewer", B)).json()
    assert mine["status"] == "open" and mine["history"] == []
    store = world["store"]
    assert store.query_rows(f"SELECT count() FROM {store.database}.alert_changes WHERE alert_id = {{a:String}}",
                            {"a": world["ids"]["alert_id"]})[0][0] == 0


def test_an_all_tenant_principal_sees_both(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    r = client.get("/v1/stats", params={**world["window"], "by": "tenant"}, headers=as_("viewer", "*"))
    assert {A, B} <= {s["key"] for s in r.json()["series"]}
    r = client.get("/v1/stats", params={**world["window"], "by": "tenant"}, headers=as_("viewer", f"{A},{B}"))
    assert {s["key"] for s in r.json()["series"]} == {A, B}
