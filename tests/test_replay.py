"""``POST /v1/replay`` on a real ``mcpsift serve``: a rule that was off while the
events arrived is turned on, and a replay over the stored range raises
exactly the alerts ``mcpsift detect`` finds for it; replays are idempotent."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import yaml

from mcpsift.bench.gen import generate
from mcpsift.streams.offline import detect_lines
from tests.fixtures.serve import ServeProcess

RANGE = {"since": "2026-11-19T23:00:00Z", "until": "2026-11-20T01:00:00Z"}
LATE_RULE = "session.hijack"


def _wait(server: ServeProcess, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.get(f"/v1/replay/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"replay did not finish: {job}")


def _alerts(server: ServeProcess) -> dict[str, str]:
    return {a["alert_id"]: a["rule_id"] for a in server.get("/v1/alerts", params={"limit": 1000}).json()["items"]}


def _settle(server: ServeProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        h = server.get("/healthz").json()
        if h["detected_seq"] == h["ingest_seq"] and h["reorder_buffer_events"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError("detection did not catch up")


def test_replay_raises_a_newly_enabled_rule_over_stored_events(serve_factory, tmp_path: Path) -> None:
    lines = list(generate(24_000, seed=11))
    out = io.BytesIO()
    detect_lines(lines, out)
    expected = {json.loads(l)["alert_id"]: json.loads(l)["rule_id"] for l in out.getvalue().splitlines()}
    late = {a for a, r in expected.items() if r == LATE_RULE}
    assert late, f"the generated traffic should raise {LATE_RULE}"

    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"detectors": {"disabled": [LATE_RULE]}}))
    server = serve_factory(config=off, allowed_lateness_s="1")
    for i in range(0, len(lines), 4_000):
        assert server.post("/v1/events", content=b"\n".join(lines[i : i + 4_000])).status_code == 202
    _settle(server)
    before = _alerts(server)
    assert not late & set(before) and set(before) == set(expected) - late
    server.stop()

    server.config = tmp_path / "on.yaml"  # the rule is turned on; the events are already stored
    server.config.write_text(yaml.safe_dump({"detectors": {"disabled": []}}))
    server.start()
    r = server.post("/v1/replay", json={**RANGE, "rules": [LATE_RULE]})
    assert r.status_code == 202, r.text
    job = _wait(server, r.json()["job_id"])
    assert job["state"] == "done" and job["events_processed"] == job["events_total"] == len(lines)
    assert job["alerts_written"] == len(late)
    assert _alerts(server) == expected

    # the whole catalogue again: the same ids, nothing duplicated
    job = _wait(server, server.post("/v1/replay", json=RANGE).json()["job_id"])
    assert job["state"] == "done" and job["alerts_written"] == len(expected)
    assert _alerts(server) == expected
    assert [j["job_id"] for j in server.get("/v1/replay").json()][0] == job["job_id"]
    server.stop()


def test_replay_requests_are_validated(serve_factory) -> None:
    server = serve_factory()
    for body, message in (
        ({"since": "2026-11-21T00:00:00Z", "until": "2026-11-20T00:00:00Z"}, "since must be before until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-11-20T00:00:00Z"}, "at most 31 days"),
        ({**RANGE, "rules": ["tool.rug_pull"]}, "unknown rule id(s) tool.rug_pull"),
        ({**RANGE, "colour": "red"}, "Extra inputs are not permitted"),
    ):
        r = server.post("/v1/replay", json=body)
        assert r.status_code == 422 and message in r.text, (body, r.text)
    assert server.get("/v1/replay/nope").status_code == 404
