"""Publishers against a real ``mcpsift serve`` and a real Tansu broker:
delivery exactly once (after dedup by event_id), order per session, outages,
a kill -9 with a non-empty spool, full queues and spools, status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import orjson

from mcpsift.bench.gen import generate
from mcpsift.collectors.publishers import HttpPublisher, KafkaPublisher, collector_status, event_key
from mcpsift.collectors.sink import EventSink
from mcpsift.collectors.spool import spool_status
from tests.fixtures.kafka import TansuBroker, read_topic
from tests.fixtures.serve import ServeProcess, free_port, read_store

REPO = Path(__file__).resolve().parents[1]

#: quick retries for tests: outages are declared within ~0.2 s, retried within 0.3 s
FAST = dict(timeout=3.0, spill_after=0.2, backoff_base=0.05, backoff_max=0.3, linger_ms=5)


def _events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in generate(n, seed=seed)]


def _store_arrivals(data_dir: Path) -> dict[str, tuple[int, int]]:
    """event_id -> (first ingest_seq, physical rows) of a stopped server's store."""
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from mcpsift.settings import Settings\n"
        "from mcpsift.store import open_store\n"
        "s = open_store(Settings(data_dir=Path(sys.argv[1])), migrate=False)\n"
        "rows = s.query_rows(f\"SELECT event_id, min(ingest_seq), count() FROM {s._t('events')} GROUP BY event_id\")\n"
        "json.dump({r[0]: [int(r[1]), int(r[2])] for r in rows}, sys.stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(data_dir)], cwd=REPO, capture_output=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr.decode()
    return {k: (v[0], v[1]) for k, v in json.loads(out.stdout).items()}


def _assert_in_order_per_session(events: list[dict[str, Any]], position: dict[str, int]) -> None:
    """Within each key (session, else subject, else fingerprint), ``position`` (the
    first arrival of each event) grows in the order the events were submitted."""
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for ev in events:
        by_key[event_key(ev)].append(position[ev["event_id"]])
    for key, seen in by_key.items():
        assert seen == sorted(seen), f"events of {key!r} arrived out of order"
    assert len(by_key) > 10


def _submit_paced(pub: EventSink, events: list[dict[str, Any]], every: int = 20, pause: float = 0.002) -> None:
    for i, ev in enumerate(events):
        assert pub.submit(ev)
        if i % every == 0:
            time.sleep(pause)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_event_key_follows_the_spec_order() -> None:
    ev: dict[str, Any] = {"event_id": "e1", "token": {"fingerprint": "sha256:ab"}}
    assert event_key(ev) == b"sha256:ab"
    ev["principal"] = {"subject": "alice"}
    assert event_key(ev) == b"alice"
    ev["session"] = {"id": "s-1"}
    assert event_key(ev) == b"s-1"
    assert event_key({"event_id": "e2"}) == b"e2"


# -- HTTP to mcpsift serve -------------------------------------------------------


def test_http_every_event_once_and_rejected_ones_are_not_retried(serve_factory: Callable[..., ServeProcess],
                                                                 tmp_path: Path) -> None:
    server = serve_factory()
    events = _events(1000)
    bad = [{"schema": "mcpsift.event/1", "event_id": f"bad-{i}", "time": "2026-11-20T00:00:00Z"} for i in range(3)]
    pub = HttpPublisher(server.url + "/v1/events", spool_dir=tmp_path / "spool", batch_size=200, ingest_key=server.ingest_key, **FAST)
    assert isinstance(pub, EventSink)
    for i, ev in enumerate(events):
        assert pub.submit(ev)
        if i % 300 == 0:
            assert pub.submit(bad[i // 300 % 3]) if i < 900 else True
    assert pub.flush(20)
    st = pub.status()
    assert st["sent"] == 1000 and st["rejected"] == 3 and st["dropped"] == 0
    assert st["queue_depth"] == 0 and st["spool_records"] == 0 and st["connected"] is True
    assert pub.close(5)
    written = collector_status(tmp_path / "spool")
    assert written["running"] is False and written["publisher"]["sent"] == 1000
    server.stop()
    report = read_store(server.data_dir)
    assert report["event_id_counts"] == {ev["event_id"]: 1 for ev in events}
    assert len(report["dead_letters"]) == 3, "rejected events are dead-lettered once, never resent"


def test_http_outage_mid_stream_every_event_once_in_order(serve_factory: Callable[..., ServeProcess],
                                                          tmp_path: Path) -> None:
    server = serve_factory()
    port = server.port
    events = _events(3000, seed=11)
    pub = HttpPublisher(server.url, spool_dir=tmp_path / "spool", batch_size=100, ingest_key=server.ingest_key, **FAST)
    _submit_paced(pub, events[:1000])
    server.kill()
    _submit_paced(pub, events[1000:2000])
    _wait_for(lambda: pub.status()["spool_records"] > 0, 10, "events to spill to the spool")
    assert pub.status()["outage"] is True
    server.start(port=port)
    _submit_paced(pub, events[2000:])
    assert pub.flush(30), pub.status()
    st = pub.status()
    assert st["failed"] > 0 and st["retried"] > 0 and st["spilled"] > 0 and st["replayed"] > 0
    assert st["dropped"] == 0 and st["spool_records"] == 0
    pub.close(5)
    server.stop()
    arrivals = _store_arrivals(server.data_dir)
    assert set(arrivals) == {ev["event_id"] for ev in events}
    report = read_store(server.data_dir)
    assert set(report["event_id_counts"].values()) == {1}
    _assert_in_order_per_session(events, {k: v[0] for k, v in arrivals.items()})


_KILLED_PUBLISHER = r"""
import sys, time, orjson
from mcpsift.collectors.publishers import HttpPublisher
from mcpsift.bench.gen import generate
url, spool_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pub = HttpPublisher(url, spool_dir=spool_dir, spool_fsync="always", spill_after=0, retries=1,
                    backoff_base=0.05, backoff_max=0.2, timeout=1)
for line in generate(n, seed=5):
    assert pub.submit(orjson.loads(line))
deadline = time.monotonic() + 20
while pub.status()["spool_records"] < n and time.monotonic() < deadline:
    time.sleep(0.01)
print("spooled", pub.status()["spool_records"], flush=True)
time.sleep(60)
"""


def test_kill_9_with_a_non_empty_spool_then_a_restart_drains_it(serve_factory: Callable[..., ServeProcess],
                                                                tmp_path: Path) -> None:
    n = 500
    spool_dir = tmp_path / "spool"
    dead = f"http://127.0.0.1:{free_port()}/v1/events"  # nothing listens: ingest is down
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_PUBLISHER, dead, str(spool_dir), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline().decode()  # type: ignore[union-attr]
        assert line.split() == ["spooled", str(n)], proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
    left = spool_status(spool_dir)
    assert left["records"] == n and left["in_use"] is False

    server = serve_factory()
    pub = HttpPublisher(server.url, spool_dir=spool_dir, ingest_key=server.ingest_key, **FAST)
    assert pub.flush(20), pub.status()
    assert pub.status()["replayed"] == n
    pub.close(5)
    assert spool_status(spool_dir)["records"] == 0
    server.stop()
    events = _events(n, seed=5)
    arrivals = _store_arrivals(server.data_dir)
    assert set(arrivals) == {ev["event_id"] for ev in events}
    assert all(rows == 1 for _, rows in arrivals.values())
    _assert_in_order_per_session(events, {k: v[0] for k, v in arrivals.items()})


def test_close_during_an_outage_keeps_the_rest_in_the_spool(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    pub = HttpPublisher(dead, spool_dir=tmp_path / "spool", **FAST)
    for ev in _events(200):
        pub.submit(ev)
    t = time.monotonic()
    assert pub.close(timeout=0.5) is False
    assert time.monotonic() - t < 5
    assert not pub.submit(_events(1)[0]), "a closed publisher takes nothing"
    status = collector_status(tmp_path / "spool")
    assert status["spool"]["records"] == 200 and status["running"] is False
    assert status["publisher"]["last_error"].startswith("cannot reach http://127.0.0.1"), status["publisher"]
    assert status["publisher"]["dropped_by_reason"] == {}


def test_without_a_spool_a_full_queue_drops_the_newest_and_counts(tmp_path: Path) -> None:
    pub = HttpPublisher(f"http://127.0.0.1:{free_port()}", queue_size=50, autostart=False, **FAST)
    results = [pub.submit(ev) for ev in _events(80)]
    assert results == [True] * 50 + [False] * 30
    assert pub.status()["dropped_by_reason"] == {"queue_full": 30}
    assert pub.submit({"not": float("nan"), "x": object()}) is False  # never raises
    pub.close(0.2)
    st = pub.status()
    assert st["dropped_by_reason"] == {"queue_full": 30, "invalid": 1, "closed": 50}
    assert st["dropped"] == 81


def test_a_full_spool_drops_the_newest_and_says_so(tmp_path: Path) -> None:
    events = _events(600)
    pub = HttpPublisher(f"http://127.0.0.1:{free_port()}", spool_dir=tmp_path / "spool", spool_max_bytes=64 * 1024,
                        queue_size=100, **{**FAST, "spill_after": 0})
    accepted = [pub.submit(ev) for ev in events[:50]]
    _wait_for(lambda: pub.status()["outage"], 5, "the outage")
    for ev in events[50:]:
        accepted.append(pub.submit(ev))
        time.sleep(0.0005)
    _wait_for(lambda: pub.status()["dropped"] > 0, 5, "drops")
    st = pub.status()
    assert st["spool"]["disk_bytes"] <= 64 * 1024
    assert st["dropped_by_reason"].get("spool_full", 0) > 0
    assert st["submitted"] + st["dropped"] == 600 == len(accepted)
    assert accepted.index(False) > 40, "the oldest events are the ones kept"
    pub.close(0.2)
    assert spool_status(tmp_path / "spool")["records"] == st["spool_records"]


def test_block_policy_makes_submit_wait_for_room(serve_factory: Callable[..., ServeProcess], tmp_path: Path) -> None:
    server = serve_factory()
    events = _events(11)
    pub = HttpPublisher(server.url, queue_size=10, autostart=False, full_policy="block", block_timeout=10,
                        ingest_key=server.ingest_key, **FAST)
    for ev in events[:10]:
        assert pub.submit(ev)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(pub.submit(events[10])))
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and not result, "submit must wait while the queue is full"
    pub.start()
    t.join(10)
    assert result == [True]
    assert pub.flush(10)
    assert pub.status()["sent"] == 11
    pub.close()

    quick = HttpPublisher(server.url, queue_size=2, autostart=False, full_policy="block", block_timeout=0.2,
                           ingest_key=server.ingest_key)
    quick.submit(events[0])
    quick.submit(events[1])
    t0 = time.monotonic()
    assert quick.submit(events[2]) is False
    assert 0.15 < time.monotonic() - t0 < 3
    assert quick.status()["dropped_by_reason"] == {"queue_full": 1}
    quick.close(5)


def test_a_body_limit_splits_batches(serve_factory: Callable[..., ServeProcess], tmp_path: Path) -> None:
    server = serve_factory(max_body_bytes=16384)
    events = _events(300)
    with HttpPublisher(server.url, batch_size=300, ingest_key=server.ingest_key, **FAST) as pub:
        for ev in events:
            pub.submit(ev)
        assert pub.flush(20)
        assert pub.status()["sent"] == 300 and pub.status()["rejected"] == 0
    server.stop()
    assert read_store(server.data_dir)["event_id_counts"] == {ev["event_id"]: 1 for ev in events}


def test_submit_never_waits_for_the_network(tmp_path: Path) -> None:
    """A target that accepts connections and never answers: submit stays in microseconds."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(100)
    try:
        pub = HttpPublisher(f"http://127.0.0.1:{silent.getsockname()[1]}", spool_dir=tmp_path / "spool",
                            **{**FAST, "timeout": 30})
        events = _events(5000)
        latencies = []
        for ev in events:
            t = time.perf_counter()
            assert pub.submit(ev)
            latencies.append(time.perf_counter() - t)
        latencies.sort()
        assert latencies[len(latencies) // 2] < 200e-6, latencies[len(latencies) // 2]
        assert latencies[int(len(latencies) * 0.99)] < 5e-3
        assert latencies[-1] < 1.0, "a send hangs for 30 s: submit must not wait for it"
        _wait_for(lambda: pub.status()["spool_records"] == 5000, 10, "the hung send's events to reach the spool")
        pub.close(0.2)
    finally:
        silent.close()


def test_async_host_uses_async_with_and_aflush(serve_factory: Callable[..., ServeProcess], tmp_path: Path) -> None:
    server = serve_factory()
    events = _events(300)

    async def host() -> dict[str, Any]:
        async with HttpPublisher(server.url, ingest_key=server.ingest_key, **FAST) as pub:
            for ev in events:
                pub.submit(ev)
                await asyncio.sleep(0)
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(ticker())
            assert await pub.aflush(10)
            task.cancel()
            assert ticks >= 1, "aflush must not block the host's loop"
            return pub.status()

    st = asyncio.run(host())
    assert st["sent"] == 300
    server.stop()
    assert len(read_store(server.data_dir)["event_id_counts"]) == 300


# -- Kafka (Tansu) -------------------------------------------------------------


def _check_topic(records: list[Any], events: list[dict[str, Any]], *, exact: bool) -> None:
    """Every event present, keyed per spec, in submit order per key (first copies)."""
    by_id = {ev["event_id"]: ev for ev in events}
    first: dict[str, int] = {}
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        ev = orjson.loads(r.value)
        assert r.key == event_key(ev)
        partition_of[r.key].add(r.partition)
        first.setdefault(ev["event_id"], r.partition * 10**9 + r.offset)
        assert ev == by_id[ev["event_id"]]
    assert set(first) == set(by_id)
    if exact:
        assert len(records) == len(events)
    assert all(len(p) == 1 for p in partition_of.values()), "one key, one partition"
    _assert_in_order_per_session(events, first)


def test_kafka_every_event_once_keyed_and_in_order(broker: TansuBroker, topic_factory: Callable[..., str],
                                                   tmp_path: Path) -> None:
    topic = topic_factory(partitions=3)
    events = _events(2000, seed=3)
    with KafkaPublisher(broker.bootstrap, topic, spool_dir=tmp_path / "spool", **FAST) as pub:
        for ev in events:
            assert pub.submit(ev)
        assert pub.flush(20), pub.status()
        st = pub.status()
        assert st["sent"] == 2000 and st["failed"] == 0 and st["connected"] is True
    records = read_topic(broker.bootstrap, topic, 2000)
    _check_topic(records, events, exact=True)
    assert len({r.partition for r in records}) == 3


def test_kafka_broker_hangs_mid_stream_then_recovers(broker: TansuBroker, topic_factory: Callable[..., str],
                                                     tmp_path: Path) -> None:
    topic = topic_factory(partitions=3)
    events = _events(3000, seed=9)
    pub = KafkaPublisher(broker.bootstrap, topic, spool_dir=tmp_path / "spool", **{**FAST, "timeout": 2.0})
    _submit_paced(pub, events[:1000])
    broker.pause()
    try:
        _submit_paced(pub, events[1000:2000])
        _wait_for(lambda: pub.status()["failed"] > 0 and pub.status()["spool_records"] > 0, 10,
                  "a timed-out send and events in the spool")
        assert pub.status()["connected"] is False
    finally:
        broker.resume()
    _submit_paced(pub, events[2000:])
    assert pub.flush(30), pub.status()
    st = pub.status()
    assert st["failed"] > 0 and st["spilled"] > 0 and st["dropped"] == 0
    pub.close(5)
    _check_topic(read_topic(broker.bootstrap, topic, 3000), events, exact=False)


def test_kafka_broker_crash_and_restart_on_the_same_port(broker: TansuBroker, tmp_path: Path) -> None:
    topic = broker.create_topic(partitions=2)
    events = _events(1500, seed=13)
    pub = KafkaPublisher(broker.bootstrap, topic, spool_dir=tmp_path / "spool", **FAST)
    for ev in events[:500]:
        pub.submit(ev)
    assert pub.flush(20)
    _check_topic(read_topic(broker.bootstrap, topic, 500), events[:500], exact=True)
    broker.kill()
    _submit_paced(pub, events[500:])
    _wait_for(lambda: pub.status()["spool_records"] == 1000, 15, "the events to reach the spool")
    broker.start(port=broker.port)  # memory storage: a new, empty broker
    broker.create_topic(topic, partitions=2, exist_ok=True)  # the reconnecting producer may be first
    assert pub.flush(30), pub.status()
    assert pub.status()["replayed"] >= 1000
    pub.close(5)
    _check_topic(read_topic(broker.bootstrap, topic, 1000), events[500:], exact=False)
