"""The enrich stage."""

from __future__ import annotations

import orjson

from mcpsift.canonical import definition_hash
from mcpsift.events import decode_event
from mcpsift.streams.enrich import Enricher

BASE = {
    "schema": "mcpsift.event/1",
    "event_id": "e1",
    "time": "2026-11-20T09:00:00Z",
    "type": "mcp.request",
    "source": {"kind": "gateway", "name": "gw"},
}


def _ev(**fields):
    return decode_event(orjson.dumps({**BASE, **fields}))


def test_resource_uris_are_normalised() -> None:
    ev = Enricher()(_ev(server={"name": "crm", "resource": "HTTPS://MCP.Acme.Example:443/crm/"}))
    assert ev.server.resource == "https://mcp.acme.example/crm"


def test_configured_names_and_resources_fill_each_other() -> None:
    enrich = Enricher(servers={"crm": "https://mcp.acme.example/crm/"})
    assert enrich(_ev(server={"name": "crm"})).server.resource == "https://mcp.acme.example/crm"
    assert enrich(_ev(server={"resource": "https://MCP.acme.example/crm"})).server.name == "crm"
    assert enrich(_ev(server={"name": "other"})).server.resource is None


def test_default_tenant_applies_only_to_events_without_one() -> None:
    enrich = Enricher(default_tenant="acme")
    assert enrich(_ev()).tenant == "acme"
    assert enrich(_ev(tenant="globex")).tenant == "globex"


def test_missing_definition_hashes_are_computed_canonically() -> None:
    tool = {"name": "find", "description": "Find.", "annotations": {"readOnlyHint": True}}
    ev = Enricher()(_ev(type="mcp.tools_list", tools=[tool, {**tool, "name": "x", "definition_hash": "sha256:given"}]))
    assert ev.tools[0].definition_hash == definition_hash(tool)
    assert ev.tools[1].definition_hash == "sha256:given"
