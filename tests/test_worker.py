"""The distributed runner end to end: real Tansu broker, real ``mcpsift worker`` processes
(faust), real chDB stores.

* the same alerts (ids and rules) as ``mcpsift detect`` on the same traffic, every event
  stored once, poison on mcp.events dead-lettered with reasons while the worker goes on;
* ``kill -9`` mid-stream and a restart: nothing lost, nothing doubled, detector state
  recovered from the changelog;
* two workers on 4 partitions share the work and find exactly what one worker finds.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mcpsift.bench.gen import generate
from mcpsift.streams.offline import detect_lines
from tests.fixtures.kafka import committed_offsets, end_offsets, read_topic
from tests.fixtures.serve import read_store
from tests.fixtures.worker import produce

N_EVENTS = 6_000
POISON = [
    b"\xff\xfe\x00 not even text",
    b"{this is not json",
    json.dumps({"schema_version": "1.0", "type": "mcp.tool_call", "event_id": "poison-missing-fields"}).encode(),
    json.dumps(["an", "array"]).encode(),
]


@pytest.fixture(scope="module")
def traffic() -> tuple[list[bytes], dict[str, str]]:
    lines = list(generate(N_EVENTS, seed=11))
    out = io.BytesIO()
    detect_lines(lines, out)
    expected = {json.loads(l)["alert_id"]: json.loads(l)["rule_id"] for l in out.getvalue().splitlines()}
    assert len(expected) >= 10, "the generated traffic should raise alerts of several rules"
    return lines, expected


def _topics(broker, partitions: int = 4) -> dict[str, str]:
    from mcpsift.settings import KafkaSettings
    from mcpsift.streams.topics import create_topics

    results = create_topics(KafkaSettings(bootstrap_servers=broker.bootstrap, partitions=partitions))
    assert {r.status for r in results} == {"created"}, results
    return {"kafka__partitions": str(partitions)}


def _alerts_on_topic(broker, expected: int) -> list:
    """Every record on mcp.alerts once ``expected`` distinct alert ids are there (a
    redelivered copy must not make the count look complete early), or after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        records = read_topic(broker.bootstrap, "mcp.alerts", expected, timeout=max(1.0, deadline - time.monotonic()))
        if len({r.key for r in records}) >= expected or time.monotonic() >= deadline:
            return records
        time.sleep(0.5)


def _caught_up(h: dict) -> bool:
    """Nothing left to read on any topic, after having read something."""
    lag = h["lag"]
    return h["status"] == "ok" and h["batches"] > 0 and "mcp.events" in lag and all(v == 0 for v in lag.values())


def _handled_everything(broker, worker, timeout: float = 90.0) -> dict:
    """Wait until every message of mcp.events and mcp.events.keyed is handled (an
    event taken is stored; a repartitioned one applied) -- by this worker, or
    committed before it started (a partition a killed worker had finished) -- and
    nothing waits in its event-time buffer."""
    topics = ("mcp.events", "mcp.events.keyed")
    deadline = time.monotonic() + timeout
    health = None
    while time.monotonic() < deadline:
        ends = {k: v for k, v in end_offsets(broker.bootstrap, topics).items() if v}
        health = worker.health()
        if health and health["status"] == "ok" and not health["waiting_events"] and not health["held_messages"]:
            handled = health["handled_up_to"]
            committed = committed_offsets(broker.bootstrap, "mcpsift", topics)
            if all(max(handled.get(k, 0), committed.get(k) or 0) >= v for k, v in ends.items()):
                return health
        time.sleep(0.5)
    raise AssertionError(f"the worker never handled everything: {health}")


def _quiet(worker, for_s: float = 2.0) -> dict:
    """The worker's health once its counters stopped moving for ``for_s`` seconds."""
    fields = ("events_in", "alerts_out", "alerts_stored", "batches")
    last = worker.health()
    since = time.monotonic()
    deadline = since + 60
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = worker.health()
        if [now[f] for f in fields] != [last[f] for f in fields]:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= for_s:
            return now
    raise AssertionError(f"the worker never went quiet: {last}")


def _where_lost(broker, report: dict, before: dict, after) -> str:
    """Which offsets of mcp.events have no stored row, as ranges per partition, with
    what the worker had handled when it was killed: the evidence for a loss."""
    records = read_topic(broker.bootstrap, "mcp.events", N_EVENTS, timeout=30)
    stored = {(seq >> 40, seq & ((1 << 40) - 1)) for seq, _ in report["seqs"]}
    ids = set(report["event_id_counts"])
    missing: dict[int, list[int]] = {}
    for r in records:
        try:
            event_id = json.loads(r.value)["event_id"]
        except Exception:
            continue
        if event_id not in ids:
            missing.setdefault(r.partition, []).append(r.offset)
    spans = {
        p: [(o, (p, o) in stored) for o in sorted(offsets)] for p, offsets in sorted(missing.items())
    }
    committed = committed_offsets(broker.bootstrap, "mcpsift", ("mcp.events",))
    gaps = [line for line in after.log.read_text(errors="replace").splitlines() if "offset gap" in line]
    return (
        f"an event was lost: missing (partition: [(offset, a row with that offset exists)]) {spans}; "
        f"handled when killed {before['handled_up_to']}; committed now {committed}; the worker's gap reports {gaps}"
    )


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_worker_finds_what_detect_finds_and_dead_letters_poison(broker, worker_factory, traffic) -> None:
    lines, expected = traffic
    # batches of 5,000 from 4 partitions interleave up to a minute of event time: allow that
    settings = {**_topics(broker), "allowed_lateness_s": "120"}
    worker = worker_factory(broker, **settings)
    worker.wait(lambda h: h["status"] == "ok", what="ready")
    # poison in the middle of the stream: the worker keeps going after it
    produce(broker.bootstrap, "mcp.events", lines[: N_EVENTS // 2], raw=POISON)
    produce(broker.bootstrap, "mcp.events", lines[N_EVENTS // 2 :])
    total = N_EVENTS + len(POISON)
    health = worker.wait(
        lambda h: h["events_in"] >= total and h["alerts_stored"] >= len(expected), what="all events and alerts"
    )
    assert health["events_stored"] == N_EVENTS and health["dead_letters"] == len(POISON)
    assert health["detector_errors"] == {}, "a detector failed on the worker's (changelogged, JSON) state"

    records = _alerts_on_topic(broker, len(expected))
    on_topic = {r.key.decode(): json.loads(r.value)["rule_id"] for r in records}
    assert on_topic == expected, "the worker's alerts differ from `mcpsift detect`'s on the same traffic"
    assert len(records) == len(expected), "an alert was published twice"

    dead = read_topic(broker.bootstrap, "mcp.deadletter", len(POISON), timeout=30)
    assert sorted(r.value for r in dead) == sorted(POISON), "dead letters keep the original bytes"
    for r in dead:
        headers = dict(r.headers)
        assert headers["mcpsift.reason"], "every dead letter says why"
        assert headers["mcpsift.source"].decode().startswith("kafka:mcp.events/")

    # self-telemetry of the worker, in the documented names
    metrics = worker.metrics()
    assert _metric(metrics, "mcpsift_worker_events_in_total") == total
    assert _metric(metrics, "mcpsift_worker_deadletters_total") == len(POISON)
    assert _metric(metrics, "mcpsift_worker_alerts_total") == len(expected)
    assert _metric(metrics, "mcpsift_worker_sink_batch_rows_count", sink="events") >= 1

    # the detector state is co-partitioned with the repartition topic: every key of the
    # changelog sits on the partition the ingest step sent its events to
    from mcpsift.streams.keyed import partition_for

    changelog = read_topic(broker.bootstrap, "mcpsift-detector-state-changelog", 1, timeout=10)
    assert changelog, "the detector state is changelogged"
    assert all(partition_for(r.key.decode(), 4) == r.partition for r in changelog)

    assert worker.stop() == 0
    report = read_store(worker.data_dir)
    assert set(report["event_id_counts"]) == {json.loads(l)["event_id"] for l in lines}
    assert set(report["event_id_counts"].values()) == {1}, "an event is stored more than once"
    assert {a["alert_id"]: a["rule_id"] for a in report["alerts"]} == expected
    reasons = [d["reason"] for d in report["dead_letters"]]
    assert len(reasons) == len(POISON) and all(reasons)
    assert any("poison-missing-fields" in json.dumps(d) for d in report["dead_letters"])


def test_kill_9_mid_stream_loses_nothing_and_doubles_nothing(broker, worker_factory, traffic) -> None:
    lines, expected = traffic
    # small batches, so the kill lands part-way through the stream
    # (and a short lateness, so detector state is written before the kill)
    settings = {**_topics(broker), "worker__batch_size": "300", "allowed_lateness_s": "5"}
    worker = worker_factory(broker, **settings)
    worker.wait(lambda h: h["status"] == "ok", what="ready")
    half = N_EVENTS // 2
    produce(broker.bootstrap, "mcp.events", lines[:half])
    # once some detector state exists and had a commit interval (1 s) to reach the changelog,
    # the second half starts arriving and the worker dies under it
    worker.wait(lambda h: h["events_in"] >= half // 2 and (h["detector_state_keys"] or 0) > 0, what="state")
    time.sleep(1.5)
    rest = threading.Thread(target=produce, args=(broker.bootstrap, "mcp.events", lines[half:]))
    rest.start()
    worker.wait(lambda h: h["events_in"] > half, what="the second half arriving")
    before = worker.health()
    worker.kill()
    rest.join(60)
    assert before["events_in"] < N_EVENTS, "the kill came too late to test anything"

    again = worker_factory(broker, data_dir=worker.data_dir, **settings)
    recovered = again.wait(lambda h: h["status"] == "ok", what="ready after the crash")
    assert recovered["recovered_state_keys"] > 0, "the detector state was not recovered from the changelog"
    again.wait(_caught_up, what="the rest of the stream")
    _handled_everything(broker, again)
    done = _quiet(again)
    records = _alerts_on_topic(broker, len(expected))
    per_alert = Counter(r.key.decode() for r in records)
    on_topic = {r.key.decode(): json.loads(r.value)["rule_id"] for r in records}
    assert on_topic == expected, "after the crash the alerts differ from `mcpsift detect`'s"
    assert again.stop() == 0

    report = read_store(worker.data_dir, "--seqs")
    counts = report["event_id_counts"]
    assert set(counts) == {json.loads(l)["event_id"] for l in lines}, _where_lost(broker, report, before, again)
    assert set(counts.values()) == {1}, "an event is stored more than once"
    assert {a["alert_id"]: a["rule_id"] for a in report["alerts"]} == expected
    assert report["alert_rows_final"] == len(expected), "an alert is stored more than once"
    print(
        f"\nworker crash: killed after {before['events_in']:,} of {N_EVENTS:,} events taken "
        f"({before['events_stored']:,} stored, {before['alerts_stored']} alerts stored); restart recovered "
        f"{recovered['recovered_state_keys']} detector state keys from the changelog, skipped "
        f"{done['skipped_redeliveries']} redelivered state updates; {len(counts):,} events stored once each "
        f"({report['raw_event_rows']:,} physical rows before merges), {len(expected)} alerts stored once each; "
        f"mcp.alerts holds {len(records)} messages for {len(per_alert)} alert ids "
        f"(redelivered: {sum(n - 1 for n in per_alert.values())})"
    )


def test_two_workers_share_four_partitions_and_agree_with_one(broker, worker_factory, traffic) -> None:
    lines, expected = traffic
    settings = {**_topics(broker), "allowed_lateness_s": "120"}
    first = worker_factory(broker, **settings)
    second = worker_factory(broker, **settings)

    def holds_partitions(h: dict) -> bool:
        return h["status"] == "ok" and bool(h["assigned"].get("mcp.events"))

    first.wait(holds_partitions, what="partitions of mcp.events")
    second.wait(holds_partitions, what="partitions of mcp.events")
    # both hold some (after the rebalance): the 4 partitions are split between them
    split = [first.health()["assigned"]["mcp.events"], second.health()["assigned"]["mcp.events"]]
    assert sorted(split[0] + split[1]) == [0, 1, 2, 3], split
    produce(broker.bootstrap, "mcp.events", lines)

    def both_done() -> bool:
        a, b = first.health(), second.health()
        return bool(a and b and a["events_in"] + b["events_in"] >= N_EVENTS and a["alerts_stored"] + b["alerts_stored"] >= len(expected))

    deadline = time.monotonic() + 90
    while not both_done() and time.monotonic() < deadline:
        time.sleep(0.25)
    a, b = first.health(), second.health()
    assert a["events_in"] > 0 and b["events_in"] > 0, f"both workers should process events: {a['events_in']}, {b['events_in']}"
    records = _alerts_on_topic(broker, len(expected))
    assert {r.key.decode(): json.loads(r.value)["rule_id"] for r in records} == expected
    assert first.stop() == 0 and second.stop() == 0

    reports = [read_store(first.data_dir), read_store(second.data_dir)]
    stored = Counter()
    for report in reports:
        stored.update(report["event_id_counts"])
    assert set(stored) == {json.loads(l)["event_id"] for l in lines}
    assert set(stored.values()) == {1}, "an event is stored by both workers"
    alerts = {a["alert_id"]: a["rule_id"] for report in reports for a in report["alerts"]}
    assert alerts == expected
    print(f"\ntwo workers: {a['events_in']:,} + {b['events_in']:,} events (partitions {split[0]} / {split[1]})")


def test_a_worker_without_a_broker_says_so_and_one_without_topics_says_how(broker, tmp_path) -> None:
    import os
    import subprocess
    import sys

    from tests.fixtures.serve import free_port

    closed = free_port()  # nothing listens there once free_port returns

    def worker(bootstrap: str, *extra: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPSIFT_")}
        env.update({"MCPSIFT_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "MCPSIFT_WORKER__METRICS_PORT": "0"})
        return subprocess.run(
            [sys.executable, "-m", "mcpsift.cli", "worker", "--data-dir", str(tmp_path / "w"), *extra],
            env=env, capture_output=True, text=True, timeout=120,
        )

    down = worker(f"127.0.0.1:{closed}", "--broker-wait-s", "1")
    assert down.returncode == 2
    assert f"cannot reach Kafka at 127.0.0.1:{closed}" in down.stderr and "Traceback" not in down.stderr

    assert "choose one of DEBUG" in worker(broker.bootstrap, "--loglevel", "LOUD").stderr

    # a broker without the topics: the worker names them and the command that makes them, then runs
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPSIFT_")}
    env.update({"MCPSIFT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap, "MCPSIFT_WORKER__METRICS_PORT": "0"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcpsift.cli", "worker", "--data-dir", str(tmp_path / "w2")],
        env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        first = proc.stderr.readline()
        assert "run `mcpsift topics create` first" in first and "mcp.events" in first, first
    finally:
        proc.kill()
        proc.wait(30)
