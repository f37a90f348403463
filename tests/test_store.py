"""The ClickHouse store on the real engine (chDB), one database per test."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mcpsift.events import decode_event, encode_event
from mcpsift.settings import ClickHouseSettings, Settings
from mcpsift.store import Store, StoreError, event_row
from mcpsift.streams.pipeline import Pipeline

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples.jsonl"
NOW = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)


def _rows(n: int, start_seq: int = 1) -> list[tuple]:
    template = EXAMPLES.read_bytes().splitlines()[6]  # an mcp.tool_call
    rows = []
    for i in range(n):
        ev = decode_event(template)
        ev.event_id = f"evt-{i:06d}"
        ev.time = ev.time + dt.timedelta(milliseconds=i)
        rows.append(event_row(ev, encode_event(ev), start_seq + i, NOW))
    return rows


def test_migrations_are_versioned_and_idempotent(store: Store) -> None:
    assert store.migrate() == []  # already applied by the fixture
    tables = {r[0] for r in store.query_rows(f"SHOW TABLES FROM {store.database}")}
    assert {"events", "alerts", "dead_letter", "checkpoints", "schema_migrations"} <= tables


def test_a_batch_written_twice_is_one_row_per_event(store: Store) -> None:
    store.insert_events(_rows(5_000))
    # redelivered: the same events under new ingest_seqs (a byte-identical block is
    # dropped on insert instead: tests/test_clickhouse_server.py)
    store.insert_events(_rows(5_000, start_seq=5_001))
    assert store.raw_event_rows() == 10_000  # physically twice until merged...
    assert store.count_events() == 5_000  # ...but once for every query
    assert set(store.event_id_counts().values()) == {1}
    store.command(f"OPTIMIZE TABLE {store.database}.events FINAL")
    assert store.raw_event_rows() == 5_000


def test_alerts_written_twice_are_one_alert(store: Store) -> None:
    pipeline = Pipeline(Settings())
    for line in EXAMPLES.read_bytes().splitlines():
        pipeline.push(pipeline.validate(line))
    alerts = pipeline.drain()
    assert alerts, "the spec examples contain a token replayed at a second server"
    store.insert_alerts(alerts)
    store.insert_alerts(alerts)
    assert store.count_alerts() == len(alerts)
    listed = store.list_alerts()
    newest_first = sorted(alerts, key=lambda a: (-a.time.timestamp(), a.alert_id))  # list_alerts' order
    assert [a.alert_id for a in listed] == [a.alert_id for a in newest_first]
    assert [a.model_dump() for a in listed] == [a.model_dump() for a in newest_first]


def test_payloads_replay_in_ingest_order_across_pages(store: Store) -> None:
    store.insert_events(_rows(2_500))
    seqs = [seq for seq, _ in store.iter_payloads_after(1_000, batch=700)]
    assert seqs == list(range(1_001, 2_501))
    assert store.max_ingest_seq() == 2_500
    _, payload = next(store.iter_payloads_after(0))
    assert decode_event(payload).event_id == "evt-000000"


def test_checkpoints_keep_the_latest_snapshot(store: Store) -> None:
    assert store.load_checkpoint("embedded") is None
    store.save_checkpoint("embedded", 10, b"\x00first")
    store.save_checkpoint("embedded", 20, b"\xffsecond")
    assert store.load_checkpoint("embedded") == (20, b"\xffsecond")


def test_dead_letters_keep_the_raw_payload_and_reason(store: Store) -> None:
    store.insert_dead_letters([("http", "not valid JSON", b"{oops", 3)])
    (letter,) = store.list_dead_letters()
    assert letter["payload"] == "{oops" and letter["reason"] == "not valid JSON" and letter["position"] == 3


def test_retention_setting_becomes_a_ttl_and_can_be_removed(store_factory) -> None:
    store = store_factory(retention_days=30)
    assert "toIntervalDay(30)" in store.command(f"SHOW CREATE TABLE {store.database}.events")
    again = Store(store.dsn, store.database, retention_days=0)
    again.migrate()
    assert "TTL" not in again.command(f"SHOW CREATE TABLE {store.database}.events")


def test_a_bad_database_name_is_refused_with_a_reason(chdb_path: str) -> None:
    with pytest.raises(StoreError, match="letters, digits and underscores"):
        Store(f"chdb://{chdb_path}", "x; DROP TABLE y")


def test_an_unreachable_server_gives_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to ClickHouse"):
        Store("http://127.0.0.1:9/", "mcpsift", options=ClickHouseSettings(retries=0))
