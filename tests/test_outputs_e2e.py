"""SIEM outputs end to end: a real ``mcpsift serve`` subprocess with outputs in
its config file, real receivers on loopback, ``kill -9`` with a non-empty
outbox, and the ``mcpsift outputs`` commands."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

from mcpsift.bench.gen import generate
from mcpsift.streams.offline import detect_lines
from tests.fixtures.receivers import wait_until
from tests.fixtures.serve import REPO

SECRET = "whsec_" + base64.b64encode(b"e2e-secret-e2e-secret-e2e-secret").decode()


def _config(tmp_path: Path, outputs: list[dict], name: str = "mcpsift.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"outputs": outputs}), encoding="utf-8")
    return path


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mcpsift.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def test_serve_delivers_every_alert_once_through_an_outage_and_a_kill_9(tmp_path, serve_factory, http_receiver) -> None:
    lines = list(generate(24_000, seed=11))
    out = io.BytesIO()
    detect_lines(lines, out)
    expected = {json.loads(l)["alert_id"] for l in out.getvalue().splitlines()}
    assert len(expected) >= 5

    hook = http_receiver()
    hook.stop()  # the SIEM is down
    jsonl = tmp_path / "alerts.jsonl"
    config = _config(tmp_path, [
        {"type": "webhook", "name": "siem", "url": hook.url + "/in", "secret": SECRET,
         "retry_schedule_s": [0.3] * 200, "timeout_s": 2},
        {"type": "file", "name": "archive", "path": str(jsonl)},
    ])
    # checkpoints never happen in this test: after the kill, recovery replays every
    # event and the detectors produce every alert a second time
    server = serve_factory(config=config, allowed_lateness_s="1", checkpoint_interval_s="600")
    for i in range(0, len(lines), 2_000):
        r = httpx.post(server.url + "/v1/events", content=b"\n".join(lines[i : i + 2_000]), headers=server.ingest_headers, timeout=60)
        assert r.status_code == 202

    def status() -> dict:
        return {row["name"]: row for row in httpx.get(server.url + "/v1/outputs", headers=server.admin_headers, timeout=10).json()}

    assert wait_until(lambda: status()["archive"]["delivered"] == len(expected), timeout=60), status()
    siem = status()["siem"]
    assert siem["backlog"] == len(expected) and siem["delivered"] == 0 and "Connect" in siem["last_error"]

    server.kill()  # crash with a full outbox
    hook.start()
    server.start()
    assert wait_until(lambda: status()["siem"]["delivered"] == len(expected), timeout=60), status()
    time.sleep(1.0)  # anything sent twice would arrive now
    server.stop()

    assert Counter(r.headers["webhook-id"] for r in hook.ok_requests()) == Counter({a: 1 for a in expected})
    archived = [json.loads(l)["alert_id"] for l in jsonl.read_text().splitlines()]
    assert Counter(archived) == Counter({a: 1 for a in expected})


def test_outputs_commands(tmp_path, serve_factory, http_receiver) -> None:
    hook = http_receiver()
    config = _config(tmp_path, [
        {"type": "webhook", "name": "siem", "url": hook.url + "/in", "secret": SECRET},
        {"type": "webhook", "name": "nowhere", "url": "http://127.0.0.1:9/", "secret": SECRET, "timeout_s": 1},
        {"type": "file", "name": "off", "path": str(tmp_path / "x.jsonl"), "enabled": False},
    ])
    # test: every enabled output gets the synthetic alert, the unreachable one fails the command
    result = _cli("outputs", "test", "--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "delivered" in result.stdout and "retry" in result.stdout and "off" not in result.stdout
    (req,) = hook.requests
    assert json.loads(req.body)["data"]["rule_id"] == "mcpsift.test"
    result = _cli("outputs", "test", "--config", str(config), "--output", "siem")
    assert result.returncode == 0, result.stdout + result.stderr

    # status without a server reads the store; with one, asks it
    data_dir = tmp_path / "data"
    settings_args = ["--config", str(config)]
    env_dir = {"MCPSIFT_DATA_DIR": str(data_dir)}
    result = subprocess.run([sys.executable, "-m", "mcpsift.cli", "outputs", "status", *settings_args, "--json"],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **env_dir})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["siem", "nowhere", "off"] and rows[0]["backlog"] == 0

    server = serve_factory(data_dir=data_dir, config=config)
    result = subprocess.run([sys.executable, "-m", "mcpsift.cli", "outputs", "status", *settings_args, "--json"],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **env_dir,
                                 "MCPSIFT_PORT": str(server.port), "MCPSIFT_API_KEY": server.admin_key})
    assert result.returncode == 0, result.stderr
    assert "since_start" in json.loads(result.stdout)[0]  # the running server answered
    r = httpx.post(server.url + "/v1/outputs/nope/redrive", headers=server.admin_headers, timeout=10)
    assert r.status_code == 404 and "siem" in r.json()["detail"]
    r = httpx.post(server.url + "/v1/outputs/siem/redrive", headers=server.admin_headers, timeout=10)
    assert r.json() == {"output": "siem", "redriven": 0}
    server.stop()


def test_bad_output_config_stops_serve_with_a_clear_message(tmp_path) -> None:
    config = _config(tmp_path, [{"type": "pagerduty"}, {"type": "webhook", "url": "http://x/", "secret": SECRET, "colour": 1}])
    result = _cli("serve", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "unknown output type 'pagerduty'" in result.stderr
    assert "unknown key 'colour' for type webhook" in result.stderr
    assert SECRET not in result.stderr
