"""Property-based requests generated from the OpenAPI document (schemathesis),
authenticated with a real admin API key, against the whole ``serve`` app over
a real chDB store with events and alerts in it: no request gets a 5xx."""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings

from mcpsift.api.app import create_app
from mcpsift.api.auth import ApiAuthenticator
from mcpsift.settings import Settings
from mcpsift.store.keys import ApiKeys
from mcpsift.streams.embedded import EmbeddedRunner
from tests.helpers.event_views import EXAMPLES


def test_no_request_gets_a_server_error(store: Any, tmp_path: Any) -> None:
    config = Settings(data_dir=tmp_path, database=store.database)
    runner = EmbeddedRunner(config, store)
    runner.ingest([json.dumps(e).encode() for e in EXAMPLES])
    runner.start()  # the app's lifespan starts it again on each call: a no-op
    _, key = ApiKeys(store).create(["admin", "ingest"], None, name="schemathesis")
    app = create_app(config, store, runner, authenticator=ApiAuthenticator(config, store))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    operations = 0
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            @given(case=operation.as_strategy())
            @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                response = case.call(headers=headers)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}")

            run()
    finally:
        runner.stop()
    assert operations >= 25, f"only {operations} operations in the OpenAPI document"
    assert not failures, "\n".join(failures[:20])
