"""Query API latency on a large store: timelines, search, alert list.

Loads N generated events (default 5,000,000; ``mcpsift.bench.gen``, 5 tenants,
2,000 principals, attacks) into an embedded ClickHouse store under
``--data-dir`` — validated and stored the way ``mcpsift serve`` stores them,
with the detectors' alerts — once; later runs on the same data dir reuse it.
Then it calls the query API in-process (the FastAPI app over that store,
through httpx's ASGI transport, as an admin) and reports p50/p95 latency
(ms) of:

* a token timeline (``GET /v1/tokens/{fingerprint}``),
* a session timeline (``GET /v1/sessions/{id}``),
* a principal timeline (``GET /v1/principals/{subject}/timeline``),
* an event search with three filters (tenant, type, tool name, 24 h),
* an alert list (``GET /v1/alerts``),

each over ``--samples`` different entities picked from the data. Goal (issue
7): p95 ≤ 150 ms for timelines, ≤ 300 ms for search.

Usage: ``python bench/bench_api.py [--events 5000000] [--data-dir /tmp/mcpsift-bench-api] [--samples 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

try:  # as a module: bench.bench_api (or mcpsift.bench.bench_api)
    from .gen import generate
    from .report import emit
except ImportError:  # as a script: python bench/bench_api.py
    from gen import generate  # type: ignore[no-redef]
    from report import emit  # type: ignore[no-redef]

__all__ = ["run", "main", "load"]

CHUNK = 100_000


def load(store: Any, settings: Any, n: int, seed: int = 7, progress: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Store ``n`` generated events (validated, enriched, with their alerts) unless the store already has them."""
    from mcpsift.store import event_row
    from mcpsift.events import encode_event
    from mcpsift.streams.pipeline import Pipeline

    have = store.count_events()
    if have >= n:
        return {"loaded": 0, "events": have, "alerts": store.count_alerts(), "load_s": 0.0}
    if have:
        store.command(f"TRUNCATE TABLE {store.database}.events")
        store.command(f"TRUNCATE TABLE {store.database}.alerts")
    pipeline = Pipeline(settings)
    started = time.perf_counter()
    seq = 0
    alerts = 0
    now = dt.datetime.now(dt.timezone.utc)
    chunk: list[tuple[Any, ...]] = []

    def flush() -> None:
        nonlocal alerts
        store.insert_events(chunk)
        found = pipeline.release()
        store.insert_alerts(found)
        alerts += len(found)
        chunk.clear()

    for line in generate(n, seed=seed):
        ev = pipeline.validate(line)
        seq += 1
        chunk.append(event_row(ev, encode_event(ev), seq, now))
        pipeline.push(ev)
        if len(chunk) >= CHUNK:
            flush()
            if progress is not None:
                progress(seq)
    flush()
    found = pipeline.drain()
    store.insert_alerts(found)
    alerts += len(found)
    return {"loaded": seq, "events": seq, "alerts": alerts, "load_s": round(time.perf_counter() - started, 1)}


def _percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))]
    return {"p50_ms": round(statistics.median(samples), 1), "p95_ms": round(p95, 1), "n": len(samples)}


def _entities(store: Any, samples: int, seed: int) -> dict[str, list[Any]]:
    db = store.database
    rnd = random.Random(seed)

    def pick(sql: str) -> list[Any]:
        rows = [r[0] if len(r) == 1 else r for r in store.query_rows(sql)]
        rnd.shuffle(rows)
        return rows[:samples]

    first, last = store.query_rows(f"SELECT min(time), max(time) FROM {db}.events")[0]
    return {
        "window": [(first, last + dt.timedelta(seconds=1))],
        "tokens": pick(f"SELECT DISTINCT token_fingerprint FROM {db}.events WHERE token_fingerprint != '' LIMIT 5000"),
        "sessions": pick(f"SELECT DISTINCT session_id FROM {db}.events WHERE session_id != '' LIMIT 5000"),
        "principals": pick(f"SELECT DISTINCT principal_subject FROM {db}.events WHERE principal_subject != '' LIMIT 5000"),
        "searches": pick(
            f"SELECT tenant, tool_name, toStartOfDay(max(time)) FROM {db}.events WHERE type = 'mcp.tool_call' "
            "GROUP BY tenant, tool_name LIMIT 5000"
        ),
    }


async def _measure(app: Any, entities: dict[str, list[Any]], headers: dict[str, str]) -> dict[str, Any]:
    import httpx
    from urllib.parse import quote

    transport = httpx.ASGITransport(app=app)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers, timeout=60) as client:

        async def timed(name: str, requests: list[tuple[str, dict[str, Any]]]) -> None:
            times = []
            for path, params in requests:
                started = time.perf_counter()
                r = await client.get(path, params=params)
                times.append((time.perf_counter() - started) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: HTTP {r.status_code} {r.text[:300]}")
            results[name] = _percentiles(times)

        first, last = entities["window"][0]
        iso = lambda t: (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).isoformat()  # noqa: E731
        window = {"since": iso(first), "until": iso(last)}  # the whole load (under a day)
        await timed("token_timeline", [(f"/v1/tokens/{quote(t, safe='')}", window) for t in entities["tokens"]])
        await timed("session_timeline", [(f"/v1/sessions/{quote(s, safe='')}", window) for s in entities["sessions"]])
        await timed("principal_timeline", [(f"/v1/principals/{quote(p, safe='')}/timeline", window) for p in entities["principals"]])
        searches = [
            ("/v1/events", {"tenant": tenant, "type": "mcp.tool_call", "tool_name": tool, **window})
            for tenant, tool, _ in entities["searches"]
        ]
        await timed("event_search_3_filters", searches)
        await timed("alert_list", [("/v1/alerts", {"limit": 100, **window})] * max(1, len(entities["tokens"])))
    return results


def run(n: int = 5_000_000, data_dir: str = "/tmp/mcpsift-bench-api", samples: int = 50, seed: int = 7,
        progress: bool = True) -> dict[str, Any]:
    from mcpsift.api.app import create_api_app
    from mcpsift.settings import Settings
    from mcpsift.store import open_store

    settings = Settings(data_dir=Path(data_dir), database="bench_api")
    store = open_store(settings)
    report = load(store, settings, n, seed,
                  progress=(lambda k: print(f"  loaded {k:,} events", file=sys.stderr)) if progress else None)
    entities = _entities(store, samples, seed)
    app = create_api_app(settings, store)
    latencies = asyncio.run(_measure(app, entities, headers={}))
    return {"events": report["events"], "alerts": report["alerts"], "load_s": report["load_s"], "latency": latencies}


def _print_table(r: dict[str, Any]) -> None:
    print(f"query API on {r['events']:,} events, {r['alerts']:,} alerts (load {r['load_s']} s)")
    print(f"  {'query':26s} {'p50 ms':>8s} {'p95 ms':>8s} {'n':>5s}")
    for name, figures in r["latency"].items():
        print(f"  {name:26s} {figures['p50_ms']:>8.1f} {figures['p95_ms']:>8.1f} {figures['n']:>5d}")


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--data-dir", default="/tmp/mcpsift-bench-api", help="kept between runs: the load happens once")
    ap.add_argument("--samples", type=int, default=50, help="entities per query kind")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = run(args.events, args.data_dir, args.samples, args.seed, progress=not args.json)
    return emit(result, args.json, _print_table)


if __name__ == "__main__":
    main()
