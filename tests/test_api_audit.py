"""The API's own accesses are recorded (who, what, when, the answer) in the
``api_audit`` table and readable by an all-tenant admin at ``GET /v1/audit``."""

from __future__ import annotations

import time

from tests.fixtures.receivers import wait_until


def test_every_api_call_is_recorded_with_its_caller(serve_factory) -> None:
    server = serve_factory()
    assert server.get("/v1/alerts", params={"limit": 5, "api_token": "s3cr3t-value"}).status_code == 200
    assert server.post("/v1/events", content=b"[]").status_code in (202, 400, 422)
    assert server.get("/v1/alerts", headers={"Authorization": "Bearer msk_forged_nope"}).status_code == 401

    def rows() -> list[dict]:
        r = server.get("/v1/audit", params={"limit": 100})
        assert r.status_code == 200, r.text
        return [row for row in r.json() if row["path"] != "/v1/audit"]

    assert wait_until(lambda: len(rows()) >= 3, timeout=20), rows()
    found = rows()
    listing = next(r for r in found if r["path"] == "/v1/alerts" and r["status"] == 200)
    assert listing["method"] == "GET" and listing["via"] == "api_key" and listing["subject"]
    assert listing["tenants"] == ["*"] and listing["duration_ms"] >= 0
    assert "api_token=[REDACTED]" in listing["query"] and "s3cr3t" not in str(found)
    ingest = next(r for r in found if r["path"] == "/v1/events")
    assert ingest["method"] == "POST" and ingest["subject"] and ingest["subject"] != listing["subject"]
    refused = next(r for r in found if r["status"] == 401)
    assert refused["via"] == "anonymous" and refused["subject"] == ""
    assert "msk_forged" not in str(found)

    # only an admin reads it
    assert server.get("/v1/audit", headers=server.ingest_headers).status_code == 403
