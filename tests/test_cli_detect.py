"""``mcpsift detect`` as a user runs it: a subprocess over JSONL files."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: the CLI over one case of every rule (the first "fires" case of each folder,
#: and the mixed ones): every case runs in-process in test_detector_cases.py;
#: this proves the installed command gives the same alerts
CASES = sorted(
    next(iter(sorted(folder.glob("fires_*.jsonl")) or sorted(folder.glob("*.jsonl"))))
    for folder in (ROOT / "tests" / "cases").iterdir()
    if folder.is_dir() and any(folder.glob("*.jsonl"))
)
MCPSIFT = [sys.executable, "-m", "mcpsift.cli"]


def _detect(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*MCPSIFT, "detect", *args], input=stdin, capture_output=True, env=env, timeout=120)


@pytest.mark.parametrize("case", CASES, ids=[str(c.relative_to(ROOT / "tests" / "cases")) for c in CASES])
def test_detect_cli_produces_the_expected_alerts(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    expect = json.loads(case.with_name(case.stem + ".expect.json").read_text())
    config = []
    if expect.get("settings"):  # the case needs configuration: give it as a user would, in a file
        (tmp_path / "case.yaml").write_text(yaml.safe_dump(expect["settings"]))
        config = ["--config", str(tmp_path / "case.yaml")]
    run = _detect("--input", str(case), "--output", str(out), "--data-dir", str(tmp_path / "data"), *config)
    assert run.returncode == 0, run.stderr.decode()
    expected = expect["alerts"]
    alerts = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert Counter(a["rule_id"] for a in alerts) == Counter({k: v for k, v in expected.items() if v})
    for alert in alerts:  # fields per spec/detections.md "Alert"
        assert {"alert_id", "rule_id", "severity", "time", "tenant", "event_ids", "title", "description", "score"} <= set(alert)


def test_detect_is_deterministic_and_reports_invalid_lines(tmp_path: Path) -> None:
    lines = (ROOT / "docs" / "examples.jsonl").read_bytes().splitlines()
    broken = b"\n".join(lines[:5] + [b"{not json", b"", b'{"schema": "mcpsift.event/1"}'] + lines[5:]) + b"\n"
    src = tmp_path / "in.jsonl"
    src.write_bytes(broken)
    first = _detect("--input", str(src), "--output", str(tmp_path / "a.jsonl"))
    second = _detect("--input", str(src), "--output", str(tmp_path / "b.jsonl"))
    assert first.returncode == second.returncode == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() != b""
    err = first.stderr.decode()
    assert "line 6: invalid event: not valid JSON" in err
    assert "line 8: invalid event: missing required field" in err
    assert "line 7" not in err  # a blank line is not an event
    assert "14 events (2 invalid lines" in err


def test_detect_reads_stdin_and_writes_stdout() -> None:
    run = _detect("--input", "-", stdin=(ROOT / "docs" / "examples.jsonl").read_bytes())
    assert run.returncode == 0
    alerts = [json.loads(line) for line in run.stdout.splitlines()]
    # the examples' two clients are new, and one token is replayed at a second server
    assert Counter(a["rule_id"] for a in alerts) == {"auth.new_client": 2, "auth.token_reuse_across_audiences": 1}


def test_unreadable_input_is_the_only_failure(tmp_path: Path) -> None:
    run = _detect("--input", str(tmp_path / "missing.jsonl"))
    assert run.returncode != 0 and b"cannot read input" in run.stderr


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("detectors:\n  disabled: [auth.nope]\n")
    run = _detect("--input", str(ROOT / "docs" / "examples.jsonl"), "--config", str(config))
    assert run.returncode == 2 and b"'auth.nope'" in run.stderr
