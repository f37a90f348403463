"""Entity timelines read without FINAL (skip indexes, then one row per
event_id): a redelivered event — a second physical row — still counts once,
exactly as the FINAL reads of broad queries do."""

from __future__ import annotations

import datetime as dt
import json

from mcpsift.api.security import TenantScope
from mcpsift.settings import Settings
from mcpsift.store import queries
from mcpsift.streams.embedded import EmbeddedRunner
from tests.helpers.event_views import EXAMPLES

ALL = TenantScope(tenants=None)
WINDOW = queries.TimeRange(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2026, 12, 31, tzinfo=dt.timezone.utc))


def test_redelivered_events_count_once_in_timelines_and_summaries(store, tmp_path) -> None:
    runner = EmbeddedRunner(Settings(data_dir=tmp_path), store)
    lines = [json.dumps(e).encode() for e in EXAMPLES]
    runner.ingest(lines)
    runner.ingest(lines)  # a producer's retry: every event stored a second time
    assert store.raw_event_rows() == 2 * len(lines) and store.count_events() == len(lines)

    session = next(e["session"]["id"] for e in EXAMPLES if e.get("session"))
    token = next(e["token"]["fingerprint"] for e in EXAMPLES if e.get("token"))
    in_session = {e["event_id"] for e in EXAMPLES if (e.get("session") or {}).get("id") == session}
    with_token = {e["event_id"] for e in EXAMPLES if (e.get("token") or {}).get("fingerprint") == token}

    page, _ = queries.search_events(store, ALL, queries.EventFilters(session_id=session), WINDOW, limit=1000)
    assert sorted(r["event_id"] for r in page) == sorted(in_session)
    assert queries.session_summary(store, ALL, session, WINDOW)["events"] == len(in_session)
    assert queries.token_summary(store, ALL, token, WINDOW)["events"] == len(with_token)
    one = sorted(in_session)[0]
    assert [r["event_id"] for r in queries.events_by_id(store, ALL, [one])] == [one]
    # a broad query (FINAL) agrees
    page, _ = queries.search_events(store, ALL, queries.EventFilters(), WINDOW, limit=1000)
    assert len(page) == len(lines)
