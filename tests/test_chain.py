"""Tamper evidence on the real engine (chDB): events stored by the embedded
runner are hash-chained per tenant, and ``verify`` finds rows altered,
deleted or inserted directly in the table."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mcpsift.bench.gen import generate
from mcpsift.settings import Settings
from mcpsift.store import Store
from mcpsift.store.chain import GENESIS, verify_chain
from mcpsift.streams.embedded import EmbeddedRunner

BATCH = 300
BATCHES = 3


def _runner(store: Store, **settings: Any) -> EmbeddedRunner:
    runner = EmbeddedRunner(Settings(**settings), store, queue_batches=10_000)  # no detection thread: queue only
    runner.recover()
    return runner


def _ingest(runner: EmbeddedRunner, lines: list[bytes]) -> None:
    for i in range(0, len(lines), BATCH):
        verdicts = runner.ingest(lines[i : i + BATCH])
        assert all(v.status == "accepted" for v in verdicts)


@pytest.fixture
def chained(store_factory: Any) -> Store:
    """A store holding BATCHES batches of generated events (5 tenants), chained."""
    store = store_factory()
    _ingest(_runner(store), list(generate(BATCH * BATCHES, seed=11)))
    return store


def _rows(store: Store, where: str = "1", params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    return store.query_rows(
        f"SELECT event_id, tenant, ingest_seq FROM {store.database}.events WHERE {where} ORDER BY ingest_seq", params
    )


def _in_entry(store: Store, tenant: str, entry: int) -> tuple[str, int]:
    """(event_id, ingest_seq) of a row chained in ``tenant``'s entry number ``entry``."""
    ids, seqs = store.query_rows(
        f"SELECT event_ids, ingest_seqs FROM {store.database}.chain WHERE tenant = {{t:String}} AND seq = {{s:UInt64}}",
        {"t": tenant, "s": entry},
    )[0]
    return ids[len(ids) // 2], int(seqs[len(seqs) // 2])


def _mutate(store: Store, sql: str, params: dict[str, Any]) -> None:
    store.command(f"{sql} SETTINGS mutations_sync = 1", params)


def test_a_clean_log_verifies_with_one_chain_per_tenant(chained: Store) -> None:
    report = verify_chain(chained)
    assert report.ok
    tenants = {r[1] for r in _rows(chained)}
    assert set(report.tenants) == tenants and len(tenants) >= 3
    assert report.rows_checked == BATCH * BATCHES
    for t in report.tenants.values():
        assert t.entries_checked == BATCHES and t.head_seq == BATCHES and t.head_hash != GENESIS
        assert not (t.altered or t.deleted or t.inserted or t.chain_problems or t.unchained)
    # each chain is its own: entries number 1..BATCHES in every tenant, linked from GENESIS
    firsts = chained.query_rows(f"SELECT tenant, prev_hash FROM {chained.database}.chain WHERE seq = 1")
    assert {r[0] for r in firsts} == tenants and {r[1] for r in firsts} == {GENESIS}


@pytest.mark.parametrize(
    "column, value",
    [("payload", "concat(payload, ' ')"), ("principal_subject", "'mallory'")],
    ids=["payload", "derived-column"],
)
def test_an_altered_row_is_named_and_other_tenants_stay_intact(chained: Store, column: str, value: str) -> None:
    tenant = sorted(verify_chain(chained).tenants)[0]
    victim, seq = _in_entry(chained, tenant, 2)
    _mutate(chained, f"ALTER TABLE {chained.database}.events UPDATE {column} = {value} WHERE event_id = {{id:String}}", {"id": victim})
    report = verify_chain(chained)
    broken = report.tenants[tenant]
    assert not report.ok and not broken.ok
    assert broken.altered == [{"ingest_seq": seq, "event_id": victim}]
    assert broken.break_at_entry == 2 and "altered" in broken.break_reason
    assert not broken.deleted and not broken.inserted
    assert broken.entries_checked == 2  # the first break ends this tenant's check
    assert all(t.ok for name, t in report.tenants.items() if name != tenant)


def test_a_deleted_row_is_named(chained: Store) -> None:
    tenant = sorted(verify_chain(chained).tenants)[1]
    victim, seq = _in_entry(chained, tenant, 3)
    _mutate(chained, f"ALTER TABLE {chained.database}.events DELETE WHERE event_id = {{id:String}}", {"id": victim})
    broken = verify_chain(chained).tenants[tenant]
    assert not broken.ok and broken.break_at_entry == 3 and "deleted" in broken.break_reason
    assert broken.deleted == [{"ingest_seq": seq, "event_id": victim}]
    assert not broken.altered and not broken.inserted


def _forge(store: Store, like_event_id: str, **changes: Any) -> None:
    """INSERT a copy of a stored row with some columns changed, straight into the table."""
    from mcpsift.store.schema import EVENT_COLUMNS

    row = dict(
        zip(
            EVENT_COLUMNS,
            store.client.query(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM {store.database}.events WHERE event_id = {{id:String}}",
                parameters={"id": like_event_id},
                column_formats={"payload": "bytes"},
            ).result_rows[0],
        )
    )
    row.update(changes)
    store.insert_events([tuple(row[c] for c in EVENT_COLUMNS)])


@pytest.mark.parametrize("where", ["between-entries", "same-ingest-seq", "after-last-entry"])
def test_an_inserted_row_is_named(chained: Store, where: str) -> None:
    tenant = sorted(verify_chain(chained).tenants)[2]
    template, seq = _in_entry(chained, tenant, 2)
    if where == "between-entries":  # an ingest_seq inside the chain that belongs to another tenant
        seq = next(s for _, t, s in _rows(chained) if t != tenant and s > seq)
        expected_entry = 2 if seq <= _in_entry_last(chained, tenant, 2) else 3
    elif where == "same-ingest-seq":
        expected_entry = 2
    else:  # beyond this tenant's last entry but inside the chain (another tenant's last rows)
        last = _in_entry_last(chained, tenant, BATCHES)
        seq = next(s for _, t, s in _rows(chained) if t != tenant and s > last)
        expected_entry = BATCHES + 1
    _forge(chained, template, event_id="forged-0001", ingest_seq=seq)
    broken = verify_chain(chained).tenants[tenant]
    assert not broken.ok and "inserted" in broken.break_reason
    assert broken.inserted == [{"ingest_seq": seq, "event_id": "forged-0001"}]
    assert broken.break_at_entry == expected_entry
    assert not broken.altered and not broken.deleted


def _in_entry_last(store: Store, tenant: str, entry: int) -> int:
    return int(
        store.query_rows(
            f"SELECT last_ingest_seq FROM {store.database}.chain WHERE tenant = {{t:String}} AND seq = {{s:UInt64}}",
            {"t": tenant, "s": entry},
        )[0][0]
    )


def test_a_redelivery_merged_away_is_not_tampering(store_factory: Any) -> None:
    store = store_factory()
    runner = _runner(store)
    lines = list(generate(200, seed=5))
    _ingest(runner, lines)
    _ingest(runner, lines[10:11])  # redelivered: a second physical row, new ingest_seq
    assert store.raw_event_rows() == 201
    store.command(f"OPTIMIZE TABLE {store.database}.events FINAL")
    assert store.raw_event_rows() == 200  # the merge dropped the older row
    report = verify_chain(store)
    assert report.ok
    assert sum(t.deduplicated_by_merge for t in report.tenants.values()) == 1


def test_a_crash_window_is_unchained_then_chained_by_recovery(store_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_factory()
    runner = _runner(store)
    lines = list(generate(BATCH * 2, seed=3))
    _ingest(runner, lines[:BATCH])

    def crash(entries: Any) -> None:
        raise ConnectionError("process killed between the events write and the chain write")

    monkeypatch.setattr(runner.chain, "_write", crash)
    _ingest(runner, lines[BATCH:])  # stored and accepted, not chained
    report = verify_chain(store)
    assert report.ok, "unchained rows are not tampering"
    assert sum(t.unchained for t in report.tenants.values()) == BATCH
    assert all(t.entries_checked == 1 for t in report.tenants.values())

    restarted = _runner(store)  # recover() chains the crash window
    assert restarted.chain is not None and restarted.chain.recovered_rows == BATCH
    report = verify_chain(store)
    assert report.ok and report.rows_checked == BATCH * 2
    assert all(t.unchained == 0 and t.recovered_entries for t in report.tenants.values())
    _ingest(restarted, list(generate(BATCH, seed=4, start="2026-11-21T00:00:00Z")))  # the chain goes on
    report = verify_chain(store)
    assert report.ok and report.rows_checked == BATCH * 3 and all(t.head_seq == 3 for t in report.tenants.values())


def test_a_failed_chain_write_is_retried_with_the_next_batch(store_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = store_factory()
    runner = _runner(store)
    assert runner.chain is not None
    real_write = runner.chain._write
    calls = {"n": 0}

    def flaky(entries: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("ClickHouse briefly unavailable")
        real_write(entries)

    monkeypatch.setattr(runner.chain, "_write", flaky)
    _ingest(runner, list(generate(BATCH * 2, seed=8)))
    report = verify_chain(store)
    assert report.ok and report.rows_checked == BATCH * 2
    assert all(t.unchained == 0 and not t.recovered_entries and t.head_seq == 2 for t in report.tenants.values())


def test_a_deleted_chain_entry_breaks_the_chain(chained: Store) -> None:
    tenant = sorted(verify_chain(chained).tenants)[0]
    _mutate(chained, f"ALTER TABLE {chained.database}.chain DELETE WHERE tenant = {{t:String}} AND seq = 2", {"t": tenant})
    broken = verify_chain(chained).tenants[tenant]
    assert not broken.ok and broken.break_at_entry == 3
    assert "chain entries 2..2 are missing" in broken.chain_problems


def test_checkpoints_are_checked_and_a_rewrite_is_seen(store_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcpsift.store import chain

    monkeypatch.setattr(chain, "CHECKPOINT_EVERY", 1)
    store = store_factory()
    _ingest(_runner(store), list(generate(BATCH * BATCHES, seed=12)))
    report = verify_chain(store)
    assert report.ok and all(t.checkpoints_checked == BATCHES for t in report.tenants.values())
    tenant = sorted(report.tenants)[0]
    _mutate(store, f"ALTER TABLE {store.database}.chain_checkpoints UPDATE chain_hash = 'f00' WHERE tenant = {{t:String}} AND seq = 2", {"t": tenant})
    broken = verify_chain(store).tenants[tenant]
    assert not broken.ok and broken.break_at_entry == 2 and "checkpoint" in broken.break_reason


def test_no_chain_is_written_when_tamper_evidence_is_off(store_factory: Any) -> None:
    store = store_factory()
    _ingest(_runner(store, tamper_evidence=False), list(generate(BATCH, seed=2)))
    assert store.query_rows(f"SELECT count() FROM {store.database}.chain")[0][0] == 0
    report = verify_chain(store)
    assert report.ok and sum(t.unchained for t in report.tenants.values()) == BATCH


def test_verify_from_and_to_select_entries_by_when_they_were_written(chained: Store) -> None:
    # entry 1 of every tenant is dated in the past; a row altered there is outside --from
    _mutate(chained, f"ALTER TABLE {chained.database}.chain UPDATE created_at = created_at - INTERVAL 1 DAY WHERE seq = 1", {})
    tenant = sorted(verify_chain(chained).tenants)[0]
    victim, _ = _in_entry(chained, tenant, 1)
    _mutate(chained, f"ALTER TABLE {chained.database}.events UPDATE payload = '{{}}' WHERE event_id = {{id:String}}", {"id": victim})
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    windowed = verify_chain(chained, since=since)
    assert windowed.ok and all(t.entries_checked == BATCHES - 1 for t in windowed.tenants.values())
    before = verify_chain(chained, until=since)  # only entry 1: the altered one
    assert all(t.entries_checked == 1 for t in before.tenants.values())
    assert not before.ok and before.tenants[tenant].altered[0]["event_id"] == victim
    assert not verify_chain(chained).ok


def test_cli_verify_exit_codes_and_output(chained: Store, chdb_path: str, tmp_path: Path) -> None:
    from mcpsift.cli import app

    config = tmp_path / "mcpsift.yaml"
    config.write_text(f"clickhouse_dsn: chdb://{chdb_path}\ndatabase: {chained.database}\ndata_dir: {tmp_path}\n")
    cli = CliRunner()
    result = cli.invoke(app, ["verify", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "chain verified" in result.output

    tenant = sorted(verify_chain(chained).tenants)[0]
    victim, _ = _in_entry(chained, tenant, 1)
    _mutate(chained, f"ALTER TABLE {chained.database}.events UPDATE payload = '{{}}' WHERE event_id = {{id:String}}", {"id": victim})
    result = cli.invoke(app, ["verify", "--config", str(config)])
    assert result.exit_code == 1
    assert f"tenant {tenant}: BROKEN" in result.output and victim in result.output and "altered rows" in result.output

    result = cli.invoke(app, ["verify", "--config", str(config), "--json", "--tenant", tenant])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and list(data["tenants"]) == [tenant]
    assert data["tenants"][tenant]["altered"][0]["event_id"] == victim

    other = sorted(verify_chain(chained).tenants)[1]
    assert cli.invoke(app, ["verify", "--config", str(config), "--tenant", other]).exit_code == 0
    bad = cli.invoke(app, ["verify", "--config", str(config), "--from", "yesterday"])
    assert bad.exit_code == 2 and "--from" in bad.output


def test_serve_killed_mid_batch_then_restarted_verifies(serve_factory: Any) -> None:
    """A real ``mcpsift serve`` killed with SIGKILL while a batch is in flight,
    restarted (recovery), stopped; ``mcpsift verify`` in its own process."""
    import subprocess
    import sys
    import threading

    import httpx

    lines = list(generate(4_000, seed=21))
    batches = [b"\n".join(lines[i : i + 500]) for i in range(0, len(lines), 500)]
    server = serve_factory()

    def post(body: bytes) -> httpx.Response:
        return httpx.post(server.url + "/v1/events", content=body, headers=server.ingest_headers, timeout=60)

    for body in batches[:4]:
        assert post(body).status_code == 202
    sender = threading.Thread(target=lambda: _swallow(post, batches[4]))
    sender.start()
    time.sleep(0.05)
    server.kill()
    sender.join(60)
    server.start()
    for body in batches[4:] + [batches[1]]:  # the client retries; one batch redelivered
        assert post(body).status_code == 202
    server.stop()

    result = subprocess.run(
        [sys.executable, "-m", "mcpsift.cli", "verify", "--data-dir", str(server.data_dir), "--json"],
        env=server.env, capture_output=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["ok"] and report["rows_checked"] >= len(lines) + 500
    assert all(t["unchained"] == 0 and t["entries_checked"] >= 8 for t in report["tenants"].values())


def _swallow(post: Any, body: bytes) -> None:
    try:
        post(body)
    except Exception:  # the server died under it: that is the point
        pass
