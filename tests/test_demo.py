"""``mcpsift demo``: labelled traffic, scoring the detectors on it, streaming it into a real server.

No mocks: the generator writes real files, ``evaluate`` runs the real
detectors, ``run`` posts to a real ``mcpsift serve`` subprocess. Recall and
precision are not asserted here (the quality gate is ``mcpsift demo
evaluate``'s exit code); these tests pin what the traffic and the labels
promise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest

from mcpsift.demo.evaluate import evaluate
from mcpsift.demo.generate import file_digest, generate
from mcpsift.demo.run import ServerUnreachable, run
from mcpsift.events import decode_event
from tests.fixtures.serve import free_port, read_store

ROOT = Path(__file__).resolve().parents[1]
MCPSIFT = [sys.executable, "-m", "mcpsift.cli"]
FILES = ("events.jsonl", "labels.json", "config.yaml", "README.md")


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([*MCPSIFT, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout)


def catalogue() -> dict[str, list[str]]:
    """Rule id -> its "must not fire when" clauses, from the tables of docs/detections.md."""
    rules: dict[str, list[str]] = {}
    header: list[str] | None = None
    for line in (ROOT / "docs" / "detections.md").read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0] == "rule_id":
            header = cells
            continue
        if header is None or "must not fire when" not in header or set(cells[0]) <= {"-", ":"}:
            continue
        match = re.fullmatch(r"`([a-z_.]+)`", cells[0])
        if match:
            text = cells[header.index("must not fire when")].replace("`", "").replace("\\|", "|")
            rules[match.group(1)] = [" ".join(part.split()) for part in text.split(";") if part.strip()]
    return rules


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory):
    """The default day (8 h, seed 1): the one full-size generation of the suite."""
    out = tmp_path_factory.mktemp("demo-day")
    summary = generate(out, seed=1, hours=8.0, progress=False)
    return out, summary


def test_a_day_labels_every_rule_and_every_must_not_fire_clause(day) -> None:
    out, summary = day
    rules = catalogue()
    assert len(rules) >= 20, "could not read the rule tables of docs/detections.md"
    labels = json.loads((out / "labels.json").read_bytes())
    attacks = Counter(a["rule_id"] for a in labels["attacks"])
    clauses: dict[str, set[str]] = defaultdict(set)
    for case in labels["benign"]:
        assert case["event_ids"] and case["clause"]
        clauses[case["rule_id"]].add(" ".join(case["clause"].split()))
    for rule, must_not in rules.items():
        assert attacks[rule] >= 10, f"{rule}: only {attacks[rule]} attack instances"
        assert clauses[rule], f"{rule}: no benign case"
        missing = [c for c in must_not if c not in clauses[rule]]
        assert not missing, f"{rule}: no benign case for must-not-fire clause(s) {missing}"
    assert summary.sessions >= 2000
    assert summary.events == sum(summary.types.values())
    assert len(summary.tenants) >= 3
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "auth.new_client" in readme and f"{summary.events:,}" in readme


def test_every_line_is_a_valid_event_and_every_label_points_at_one(day) -> None:
    out, _ = day
    ids: dict[str, dict] = {}
    previous = ""
    for line in (out / "events.jsonl").read_bytes().splitlines():
        ev = decode_event(line)  # raises on anything spec/events.md forbids, raw credentials in token/principal included
        assert ev.event_id not in ids
        doc = json.loads(line)
        assert doc["time"] > previous, "events must be sorted by time (and times unique)"
        previous = doc["time"]
        if doc.get("token") is not None and "fingerprint" in doc["token"]:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", doc["token"]["fingerprint"])
        ids[ev.event_id] = doc
    labels = json.loads((out / "labels.json").read_bytes())
    for attack in labels["attacks"]:
        assert attack["evidence"] and all(e in ids for e in attack["evidence"]), attack["note"]
    for case in labels["benign"]:
        assert all(e in ids for e in case["event_ids"]), case["note"]

    # attacks of the rules with preconditions respect them
    order = {e: i for i, e in enumerate(ids)}
    registry_tenant = labels["tenants"][0]
    ends: dict[str, list[int]] = defaultdict(list)
    first_seen: dict[tuple[str, str], int] = {}
    for i, (event_id, doc) in enumerate(ids.items()):
        if doc["type"] == "mcp.session_end":
            ends[doc["tenant"]].append(i)
        subject = (doc.get("principal") or {}).get("subject")
        if subject and doc["type"] == "mcp.tool_call":
            first_seen.setdefault((doc["tenant"], subject), i)
    times = [doc["time"] for doc in ids.values()]
    # every event that shows a tool definition other than the first one seen is evidence of a rug pull
    drift_evidence = {e for a in labels["attacks"] if a["rule_id"] == "tool.definition_drift" for e in a["evidence"]}
    first_hash: dict[tuple[str, str, str], str] = {}
    for event_id, doc in ids.items():
        server = (doc.get("server") or {}).get("name")
        shown = [(t["name"], t["definition_hash"]) for t in doc.get("tools") or []]
        if doc.get("tool") and doc["tool"].get("definition_hash"):
            shown.append((doc["tool"]["name"], doc["tool"]["definition_hash"]))
        for name, digest in shown:
            key = (doc["tenant"], server, name)
            if first_hash.setdefault(key, digest) != digest:
                assert event_id in drift_evidence, f"{key} changed its definition in {event_id} with no label"
    for attack in labels["attacks"]:
        first = min(order[e] for e in attack["evidence"])
        if attack["rule_id"] == "server.unapproved":
            assert attack["tenant"] == registry_tenant
        if attack["rule_id"] == "tool.unusual_sequence":
            assert sum(1 for i in ends[attack["tenant"]] if i < first) >= 500
        if attack["rule_id"] == "volume.anomaly":
            doc = ids[attack["evidence"][0]]
            since = first_seen[(doc["tenant"], doc["principal"]["subject"])]
            assert _seconds(times[since], times[first]) >= 1800


def _seconds(a: str, b: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()


def test_same_seed_same_bytes_in_any_process_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", seed=3, hours=0.5, progress=False)
    # another process, another string-hash seed: nothing may depend on set or dict order of the process
    made = _cli("demo", "generate", "--out", str(tmp_path / "b"), "--seed", "3", "--hours", "0.5", "--quiet",
                env={"PYTHONHASHSEED": "4242"})
    assert made.returncode == 0, made.stderr
    generate(tmp_path / "c", seed=4, hours=0.5, progress=False)
    for name in FILES:
        assert file_digest(tmp_path / "a" / name) == file_digest(tmp_path / "b" / name), name
    assert file_digest(tmp_path / "a" / "events.jsonl") != file_digest(tmp_path / "c" / "events.jsonl")


def test_evaluate_cli_prints_the_score_table(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    made = _cli("demo", "generate", "--out", str(out), "--hours", "1", "--seed", "2")
    assert made.returncode == 0, made.stderr
    assert "wrote" in made.stderr and all((out / name).exists() for name in FILES)
    table = _cli("demo", "evaluate", str(out))
    assert table.returncode in (0, 1), table.stderr  # 1: the quality gate failed (not asserted here)
    for text in ("rule", "attacks", "recall", "on must-not-fire", "auth.audience_mismatch", "all rules", "precision"):
        assert text in table.stdout, table.stdout
    report = _cli("demo", "evaluate", str(out), "--json")
    assert report.returncode == table.returncode
    data = json.loads(report.stdout)
    assert data["events"] == sum(1 for _ in (out / "events.jsonl").open("rb"))
    assert {r["rule_id"] for r in data["rules"]} >= set(catalogue())
    assert data["passed"] == (report.returncode == 0) and data["passed"] == (not data["failures"])
    missing = _cli("demo", "evaluate", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "mcpsift demo generate" in missing.stderr


def test_evaluate_matches_alerts_to_attacks_and_must_not_fire_cases(tmp_path: Path) -> None:
    """The spec's example session: its token replayed at billing is one attack; a made-up case is missed."""
    shutil.copy(ROOT / "docs" / "examples.jsonl", tmp_path / "events.jsonl")
    docs = [json.loads(line) for line in (tmp_path / "events.jsonl").read_bytes().splitlines()]
    replay = next(d for d in docs if (d.get("outcome") or {}).get("reason") == "wrong_audience")
    first_client_event = next(d for d in docs if (d.get("principal") or {}).get("client_id"))
    labels = {
        "tenants": ["acme"],
        "attacks": [
            {"rule_id": "auth.token_reuse_across_audiences", "evidence": [replay["event_id"]], "note": "replayed at billing"},
            {"rule_id": "tool.ssrf", "evidence": [docs[0]["event_id"]], "note": "not in these events"},
        ],
        # the first event naming the client is not labelled an attack: its new-client alert is a must-not-fire hit
        "benign": [{"rule_id": "auth.new_client", "event_ids": [first_client_event["event_id"]], "clause": "any later event of that client"}],
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    report = evaluate(tmp_path)
    by_rule = {r.rule_id: r for r in report.rules}
    assert by_rule["auth.token_reuse_across_audiences"].detected == 1
    assert by_rule["tool.ssrf"].detected == 0 and report.missed["tool.ssrf"] == ["not in these events"]
    assert report.alerts == report.true_positives + len(report.false_positives)
    new_client = by_rule["auth.new_client"]
    assert new_client.alerts >= 1 and new_client.benign_alerts >= 1 and new_client.true_positives == 0
    assert any(fp.clause == "any later event of that client" for fp in report.false_positives)
    assert not report.passed and any("tool.ssrf: recall" in f for f in report.failures())


def test_run_streams_every_event_into_serve_live_or_not(serve_factory, tmp_path: Path) -> None:
    server = serve_factory(allowed_lateness_s="1", checkpoint_interval_s="0.5")
    out = tmp_path / "demo"
    generate(out, seed=7, hours=0.25, progress=False)
    lines = (out / "events.jsonl").read_bytes().splitlines()
    ids = {json.loads(line)["event_id"] for line in lines}
    report = run(server.url, directory=out, batch=300, api_key=server.ingest_key)
    assert (report.sent, report.accepted, report.rejected) == (len(lines), len(lines), 0)
    assert set(report.statuses) == {202} and report.batches == -(-len(lines) // 300)

    # the CLI, live: a generated day moved so that it ends as the stream ends, sent as its time comes
    live = _cli("demo", "run", "--url", server.url, "--seed", "8", "--hours", "0.1", "--live", "--speed", "600", "--batch", "200",
                env={"MCPSIFT_API_KEY": server.ingest_key})
    assert live.returncode == 0, live.stderr
    sent = int(re.search(r"sent ([\d,]+) events", live.stderr).group(1).replace(",", ""))
    assert f"{sent:,} accepted, 0 rejected" in live.stderr and "/v1/alerts" in live.stderr and "mcpsift alerts" in live.stderr

    deadline = time.monotonic() + 60
    while True:
        health = httpx.get(server.url + "/healthz", timeout=5).json()
        if health["detected_seq"] == health["ingest_seq"] == len(lines) + sent and health["reorder_buffer_events"] == 0:
            break
        assert time.monotonic() < deadline, health
        time.sleep(0.3)
    assert health["accepted"] == len(lines) + sent and health["rejected"] == 0
    assert health["future_events"] == 0 and health["late_events"] == 0
    alerts = httpx.get(server.url + "/v1/alerts", params={"limit": 1000}, headers=server.admin_headers, timeout=30).json()["items"]
    assert alerts and "auth.new_client" in {a["rule_id"] for a in alerts}
    assert any(set(a["event_ids"]) <= ids and a["rule_id"] != "auth.new_client" for a in alerts)

    # the same traffic again is taken once (event ids are kept)
    again = run(server.url, directory=out, batch=1000, api_key=server.ingest_key)
    assert again.accepted == len(lines)
    assert server.stop() in (0, -15), server.output()
    stored = read_store(server.data_dir)
    assert len(stored["event_id_counts"]) == len(lines) + sent and set(stored["event_id_counts"].values()) == {1}


def test_run_says_how_to_start_the_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match="mcpsift serve"):
        run(url, directory=tmp_path)
    cli = _cli("demo", "run", "--url", url, "--hours", "0.1")
    assert cli.returncode == 2 and "start it with `mcpsift serve`" in cli.stderr
