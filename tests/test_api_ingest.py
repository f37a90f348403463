"""Ingest endpoint edge cases with the app's own collaborators stubbed (the real
server, store and runner are covered end to end in test_serve_e2e.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mcpsift.api.app import create_app
from mcpsift.api.routes.ingest import BodyError, split_body
from mcpsift.settings import Settings


class _FailingRunner:
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def ingest(self, items, source, tenants=None):  # the store refused the insert
        raise OSError("No space left on device")

    def dead_letter(self, source, reason, raw) -> None: ...


def test_a_store_failure_answers_503_and_accepts_nothing() -> None:
    app = create_app(Settings(), store=None, runner=_FailingRunner())  # type: ignore[arg-type]
    with TestClient(app) as client:
        r = client.post("/v1/events", content=b'{"a": 1}\n')
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "nothing was accepted" in r.json()["error"] and "No space left" in r.json()["error"]


def test_split_body_handles_arrays_ndjson_and_garbage() -> None:
    assert split_body(b' [ {"a": 1}, {"b": [2, {"c": 3}]} ] ') == [b'{"a": 1}', b'{"b": [2, {"c": 3}]}']
    assert split_body(b'{"a": 1}\n\n{"b": 2}\r\n') == [b'{"a": 1}', b'{"b": 2}']
    assert split_body(b'{"a": 1}') == [b'{"a": 1}']
    for bad in (b"", b"   ", b"[1, 2"):
        with pytest.raises(BodyError):
            split_body(bad)
