"""An ingest key scoped to some tenants writes events of those tenants only:
an event of another tenant is rejected (and kept as a dead letter), the rest
of the batch is accepted."""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples.jsonl"


def test_a_tenant_scoped_ingest_key_cannot_write_another_tenants_events(serve_factory) -> None:
    server = serve_factory()
    r = server.post("/v1/apikeys", json={"role": "ingest", "tenants": ["acme"], "name": "acme-gateway"})
    assert r.status_code in (200, 201), r.text
    key = r.json()["key"]
    events = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    forged = dict(events[0], event_id="forged-for-globex", tenant="globex")
    r = server.post("/v1/events", json=events + [forged], headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 202, r.text
    verdicts = r.json()
    assert verdicts["accepted"] == len(events) and verdicts["rejected"] == 1
    bad = verdicts["results"][-1]
    assert bad["status"] == "rejected" and "tenant 'globex' is outside" in bad["reason"]
    letters = server.get("/v1/dead-letters").json()
    assert any("forged-for-globex" in l["payload"] for l in letters)
    # the bootstrap ingest key (every tenant) may write it
    r = server.post("/v1/events", json=[forged])
    assert r.status_code == 202 and r.json()["accepted"] == 1
