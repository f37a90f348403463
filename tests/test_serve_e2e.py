"""``mcpsift serve`` end to end: a real subprocess on loopback, real chDB, real HTTP.

The crash test kills the server with SIGKILL in the middle of a batch,
restarts it on the same data dir, lets the client retry what it did not see
acknowledged, and proves: every accepted event stored once, every expected
alert present once (expected = what ``mcpsift detect`` finds offline in the
same events).
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from mcpsift.bench.gen import generate
from mcpsift.streams.offline import detect_lines
from tests.fixtures.serve import ServeProcess, read_store

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples.jsonl"
FAST = {"allowed_lateness_s": "1", "checkpoint_interval_s": "0.5"}


def _wait_until_detected(server: ServeProcess, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(server.url + "/healthz", timeout=5).json()
        if health["detected_seq"] == health["ingest_seq"] and health["reorder_buffer_events"] == 0:
            return health
        time.sleep(0.2)
    raise AssertionError(f"detection did not catch up: {health}")


def test_ingest_verdicts_alerts_and_dead_letters(serve_factory) -> None:
    server = serve_factory(max_body_bytes="65536", **FAST)
    events = [json.loads(line) for line in EXAMPLES.read_bytes().splitlines()]
    body = events + [{"schema": "mcpsift.event/1", "event_id": "bad-1"}, 42]
    r = httpx.post(server.url + "/v1/events", json=body, timeout=30)
    assert r.status_code == 401  # secure by default: nobody may inject audit events
    r = httpx.post(server.url + "/v1/events", json=body, headers=server.admin_headers, timeout=30)
    assert r.status_code == 403  # ingest is its own role
    r = httpx.post(server.url + "/v1/events", json=body, headers=server.ingest_headers, timeout=30)
    assert r.status_code == 202, r.text
    verdict = r.json()
    assert (verdict["accepted"], verdict["rejected"]) == (14, 2)
    bad = verdict["results"][14]
    assert bad["status"] == "rejected" and bad["event_id"] == "bad-1" and "missing required field" in bad["reason"]

    # NDJSON works too, and the same events again are idempotent
    ndjson = EXAMPLES.read_bytes()
    r = httpx.post(server.url + "/v1/events", content=ndjson, headers={"content-type": "application/x-ndjson", **server.ingest_headers})
    assert r.status_code == 202 and r.json()["accepted"] == 14

    r = httpx.post(server.url + "/v1/events", content=b'[{"broken"', headers=server.ingest_headers, timeout=10)
    assert r.status_code == 400 and "not a valid JSON array" in r.json()["error"]
    r = httpx.post(server.url + "/v1/events", content=b"[" + b" " * 70_000 + b"]", headers=server.ingest_headers, timeout=10)
    assert r.status_code == 413
    r = httpx.post(server.url + "/v1/events", json=[{"nope": 1}], headers=server.ingest_headers, timeout=10)
    assert r.status_code == 422 and r.json()["rejected"] == 1

    _wait_until_detected(server)
    assert httpx.get(server.url + "/v1/alerts", timeout=10).status_code == 401
    alerts = httpx.get(server.url + "/v1/alerts", headers=server.admin_headers, timeout=10).json()["items"]
    # the examples' two new clients, and the token replayed at a second server
    assert sorted(a["rule_id"] for a in alerts) == ["auth.new_client", "auth.new_client", "auth.token_reuse_across_audiences"]
    reuse = next(a for a in alerts if a["rule_id"] == "auth.token_reuse_across_audiences")
    assert "https://mcp.acme.example/billing" in reuse["description"]
    letters = httpx.get(server.url + "/v1/dead-letters", headers=server.admin_headers, timeout=10).json()
    assert len(letters) == 4 and any(l["payload"] == '[{"broken"' for l in letters)

    code = server.stop()
    assert code in (0, -15), server.output()
    assert "stopped cleanly" in server.output()
    report = read_store(server.data_dir)
    assert len(report["event_id_counts"]) == 14 and set(report["event_id_counts"].values()) == {1}
    assert report["alert_rows_final"] == 3
    assert report["checkpoint_seq"] == 28  # both deliveries taken, the second dropped as redelivery


@pytest.mark.parametrize("checkpoint_interval_s", ["0.3", "600"], ids=["frequent-checkpoints", "replay-everything"])
def test_kill_9_mid_batch_loses_nothing_and_alerts_nothing_twice(serve_factory, checkpoint_interval_s) -> None:
    lines = list(generate(24_000, seed=11))
    out = io.BytesIO()
    detect_lines(lines, out)
    expected = {json.loads(l)["alert_id"]: json.loads(l)["rule_id"] for l in out.getvalue().splitlines()}
    assert len(expected) >= 5, "the generator's injected attacks should raise alerts"
    batches = [lines[i : i + 1_000] for i in range(0, len(lines), 1_000)]

    def post(server: ServeProcess, batch: list[bytes]) -> httpx.Response:
        return httpx.post(server.url + "/v1/events", content=b"\n".join(batch), headers=server.ingest_headers, timeout=60)

    server = serve_factory(allowed_lateness_s="1", checkpoint_interval_s=checkpoint_interval_s)
    accepted: set[str] = set()
    for batch in batches[:10]:
        r = post(server, batch)
        assert r.status_code == 202
        accepted.update(v["event_id"] for v in r.json()["results"] if v["status"] == "accepted")
    time.sleep(1.0)  # some detection and (maybe) a checkpoint happen

    # kill -9 while batch 10 is in flight
    in_flight: dict[str, object] = {}

    def send() -> None:
        try:
            in_flight["response"] = post(server, batches[10])
        except httpx.HTTPError as exc:
            in_flight["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.05)
    server.kill()
    sender.join(60)
    response = in_flight.get("response")
    if isinstance(response, httpx.Response) and response.status_code == 202:
        accepted.update(v["event_id"] for v in response.json()["results"])
        fate = "was acknowledged before the kill"
    else:
        fate = f"died with the server ({type(in_flight.get('error')).__name__})"

    accepted_before_kill = len(accepted)
    # restart on the same data: it replays what was accepted after its checkpoint
    server.start()
    recovery = next((l for l in server.output().splitlines() if l.startswith("recovered:")), "recovered: nothing to replay")
    # the client retries what it did not see acknowledged (at-least-once), sends the
    # rest, and redelivers one batch it had seen acknowledged
    for batch in batches[10:] + [batches[3]]:
        r = post(server, batch)
        assert r.status_code == 202
        accepted.update(v["event_id"] for v in r.json()["results"] if v["status"] == "accepted")
    _wait_until_detected(server, timeout=120)
    server.stop()

    report = read_store(server.data_dir)
    counts = report["event_id_counts"]
    assert set(counts) == accepted == {json.loads(l)["event_id"] for l in lines}
    assert set(counts.values()) == {1}, "an event is stored more than once"
    stored = {a["alert_id"]: a["rule_id"] for a in report["alerts"]}
    assert stored == expected
    assert report["alert_rows_final"] == len(expected), "an alert is stored more than once"
    print(
        f"\ncrash test ({checkpoint_interval_s} s checkpoints): {len(accepted)} events accepted and stored once "
        f"({report['raw_event_rows']} physical rows before merge), {len(expected)} alerts expected, "
        f"{len(stored)} stored once each; {accepted_before_kill} acknowledged before the kill, the in-flight batch "
        f"{fate}; restart {recovery}"
    )


def test_a_busy_port_is_refused_with_advice(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "mcpsift.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert run.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in run.stderr and "--port" in run.stderr
