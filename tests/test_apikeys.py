"""API keys: made with their secret shown once, stored as a hash, verified in
constant time, revoked for good; ``mcpsift apikey`` against the store and
against a running serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mcpsift.store.keys import ApiKeys, hash_key, new_key, parse_key
from tests.fixtures.serve import REPO


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MCPSIFT_")}
    return subprocess.run([sys.executable, "-m", "mcpsift.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**base, "PYTHONPATH": str(REPO), **(env or {})})


def test_key_format_and_hash() -> None:
    key_id, key = new_key()
    assert key.startswith(f"msk_{key_id}_") and len(key_id) == 12 and parse_key(key) == key_id
    assert new_key()[1] != key
    for bad in ("", "msk_", "msk_zzzzzzzzzzzz_" + "a" * 43, f"msk_{key_id}_short", f"msk_{key_id}_{'a' * 40}'; DROP"):
        assert parse_key(bad) is None
    assert hash_key(key).startswith("sha256:") and key.split("_", 2)[2] not in hash_key(key)


def test_create_verify_list_revoke(store_factory) -> None:
    store = store_factory()
    keys = ApiKeys(store)
    record, key = keys.create(["viewer"], ["acme", "globex"], name="grafana")
    assert record.tenants == ("acme", "globex") and record.roles == ("viewer",) and record.active
    assert keys.verify(key) == record
    assert keys.verify(key[:-1] + ("x" if key[-1] != "x" else "y")) is None  # right id, wrong secret
    assert keys.verify("msk_000000000000_" + "a" * 43) is None  # unknown id
    admin, _ = keys.create(["admin"], None)
    assert admin.tenants is None and admin.public()["all_tenants"] is True
    assert [k.key_id for k in keys.list()] == [record.key_id, admin.key_id] and keys.count_active() == 2

    # only the hash is stored: no column of any row holds the key or its secret
    rows = store.query_rows(f"SELECT * FROM {store.database}.api_keys")
    assert key not in repr(rows) and key.split("_", 2)[2] not in repr(rows)

    revoked = keys.revoke(record.key_id)
    assert revoked is not None and revoked.revoked_at is not None
    assert keys.verify(key) is None and keys.count_active() == 1
    assert keys.revoke(record.key_id).revoked_at == revoked.revoked_at  # idempotent
    assert keys.revoke("000000000000") is None

    with pytest.raises(ValueError, match="unknown role"):
        keys.create(["root"], None)
    with pytest.raises(ValueError, match="at least one non-empty tenant"):
        keys.create(["viewer"], [])


def test_cli_against_the_store_and_against_a_running_serve(tmp_path: Path, serve_factory) -> None:
    data_dir = tmp_path / "data"
    made = _cli("apikey", "create", "--role", "viewer", "--tenant", "acme", "--name", "grafana", "--data-dir", str(data_dir))
    assert made.returncode == 0, made.stderr
    viewer = made.stdout.strip()
    assert parse_key(viewer) and "shown only now" in made.stderr and viewer not in made.stderr

    assert _cli("apikey", "create", "--role", "root", "--all-tenants", "--data-dir", str(data_dir)).returncode == 2
    both = _cli("apikey", "create", "--role", "viewer", "--data-dir", str(data_dir))
    assert both.returncode == 2 and "--tenant T (repeatable) or --all-tenants" in both.stderr

    listed = _cli("apikey", "list", "--json", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["key_id"] == parse_key(viewer) and row["tenants"] == ["acme"] and viewer not in listed.stdout

    # a store that already has keys: serve makes none of its own on first start...
    server = serve_factory(data_dir=data_dir)
    assert server.keys == {} and "1 active API key(s)" in server.output()
    r = httpx.get(server.url + "/v1/alerts", headers={"authorization": f"Bearer {viewer}"})
    assert r.status_code == 200
    # ...and while it runs, the CLI goes through it (it holds the embedded store), with an admin key
    refused = _cli("apikey", "list", "--data-dir", str(data_dir), env={"MCPSIFT_PORT": str(server.port)})
    assert refused.returncode == 2 and "--api-key" in refused.stderr
    as_viewer = _cli("apikey", "list", "--data-dir", str(data_dir), "--api-key", viewer, env={"MCPSIFT_PORT": str(server.port)})
    assert as_viewer.returncode == 2 and "403" in as_viewer.stderr
    server.stop()

    made = _cli("apikey", "create", "--role", "admin", "--all-tenants", "--json", "--data-dir", str(data_dir))
    admin = json.loads(made.stdout)["key"]
    server.start()
    env = {"MCPSIFT_PORT": str(server.port), "MCPSIFT_API_KEY": admin}
    second = _cli("apikey", "create", "--role", "ingest", "--all-tenants", "--data-dir", str(data_dir), env=env)
    assert second.returncode == 0, second.stderr
    ingest = second.stdout.strip()
    assert httpx.post(server.url + "/v1/events", headers={"authorization": f"Bearer {ingest}"},
                      content=b'{"x": 1}\n').status_code == 422  # let in; the event is invalid
    revoked = _cli("apikey", "revoke", viewer, "--data-dir", str(data_dir), env=env)  # the whole key works too
    assert revoked.returncode == 0 and f"revoked API key {parse_key(viewer)}" in revoked.stderr, revoked.stderr
    r = httpx.get(server.url + "/v1/alerts", headers={"authorization": f"Bearer {viewer}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    nope = _cli("apikey", "revoke", "000000000000", "--data-dir", str(data_dir), env=env)
    assert nope.returncode == 2 and "no API key" in nope.stderr
    server.stop()

    listed = json.loads(_cli("apikey", "list", "--json", "--data-dir", str(data_dir)).stdout)
    state = {r["key_id"]: r["revoked_at"] is not None for r in listed}
    assert state == {parse_key(viewer): True, parse_key(admin): False, parse_key(ingest): False}
