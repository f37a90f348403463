"""Tamper evidence cost: ingest with vs without hash chaining, and verify speed.

In one process, on one chDB data path, two databases: the same generated
events (default 100k, ``mcpsift.bench.gen.generate``) go through
:meth:`EmbeddedRunner.ingest` in batches of 1,000 once with
``tamper_evidence`` off (baseline) and once on. Rounds alternate between the
two (default 3 rounds each, a fresh database per round) so machine noise
hits both alike; the figure is the median round. Then ``verify`` recomputes
the chain over the chained database (events/s).

The detection thread is not started (the runner only queues batches), so the
figures are the ingest path itself: validate, enrich, INSERT events
(+ chain entries).

Usage: ``python bench/bench_chain.py [--events 100000] [--rounds 3] [--json]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from typing import Any, Optional

try:  # as a module: bench.bench_chain (or mcpsift.bench.bench_chain)
    from .gen import generate
    from .report import emit
except ImportError:  # as a script: python bench/bench_chain.py
    from gen import generate  # type: ignore[no-redef]
    from report import emit  # type: ignore[no-redef]

__all__ = ["run", "main"]

BATCH = 1_000


def _ingest_once(path: str, database: str, batches: list[list[bytes]], chained: bool) -> tuple[float, float, Any]:
    """(seconds ingesting, seconds of that inside Chainer.append, the store)."""
    from mcpsift.settings import Settings
    from mcpsift.store import Store
    from mcpsift.streams.embedded import EmbeddedRunner

    store = Store(f"chdb://{path}", database)
    store.drop_database()
    store.migrate()
    runner = EmbeddedRunner(Settings(tamper_evidence=chained), store, queue_batches=len(batches) + 1)
    runner.recover()
    in_chain = [0.0]
    if runner.chain is not None:
        append = runner.chain.append

        def timed(rows: Any) -> bool:
            t = time.perf_counter()
            try:
                return append(rows)
            finally:
                in_chain[0] += time.perf_counter() - t

        runner.chain.append = timed  # type: ignore[method-assign]
    started = time.perf_counter()
    for batch in batches:
        runner.ingest(batch)
    return time.perf_counter() - started, in_chain[0], store


def run(n: int = 100_000, rounds: int = 3, seed: int = 7, progress: bool = True) -> dict[str, Any]:
    from mcpsift.store.chain import verify_chain

    lines = list(generate(n, seed=seed))
    batches = [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]
    path = tempfile.mkdtemp(prefix="mcpsift-bench-chain-")
    plain_s: list[float] = []
    chained_s: list[float] = []
    append_s: list[float] = []
    try:
        chained_store = None
        for r in range(rounds):
            for chained in (False, True) if r % 2 == 0 else (True, False):
                elapsed, in_chain, store = _ingest_once(path, f"bench_chain_{'on' if chained else 'off'}", batches, chained)
                (chained_s if chained else plain_s).append(elapsed)
                if chained:
                    chained_store = store
                    append_s.append(in_chain)
                if progress:
                    print(f"  round {r + 1} chaining {'on ' if chained else 'off'}: {n / elapsed:,.0f} events/s", flush=True)
        assert chained_store is not None
        entries = int(chained_store.query_rows(f"SELECT count() FROM {chained_store.database}.chain")[0][0])
        started = time.perf_counter()
        report = verify_chain(chained_store)
        verify_s = time.perf_counter() - started
        if not report.ok:
            raise RuntimeError("verify found a break in a freshly written chain")
        sizes = {
            table: int(b)
            for table, b in chained_store.query_rows(
                "SELECT table, sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} AND active "
                "AND table IN ('events', 'chain') GROUP BY table",
                {"db": chained_store.database},
            )
        }
    finally:
        shutil.rmtree(path, ignore_errors=True)
    plain, chained_median = statistics.median(plain_s), statistics.median(chained_s)
    return {
        "events": n,
        "batch": BATCH,
        "rounds": rounds,
        "ingest_plain_events_per_s": n / plain,
        "ingest_chained_events_per_s": n / chained_median,
        "chaining_cost_pct": (chained_median / plain - 1) * 100,
        # noise-robust: the time spent inside Chainer.append (row hashes + chain INSERT)
        "chain_append_us_per_event": statistics.median(append_s) / n * 1e6,
        "chain_append_share_of_chained_ingest_pct": statistics.median(a / c * 100 for a, c in zip(append_s, chained_s)),
        "ingest_plain_s_rounds": plain_s,
        "ingest_chained_s_rounds": chained_s,
        "chain_entries": entries,
        "verify_s": verify_s,
        "verify_events_per_s": report.rows_checked / verify_s,
        "events_bytes_on_disk": sizes.get("events", 0),
        "chain_bytes_on_disk": sizes.get("chain", 0),
    }


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    result = run(args.events, args.rounds, args.seed, progress=not args.json)
    return emit(result, args.json, _print_table)


def _print_table(result: dict[str, Any]) -> None:
    print(f"{'ingest, chaining off':32s} {result['ingest_plain_events_per_s']:>12,.0f} events/s")
    print(f"{'ingest, chaining on':32s} {result['ingest_chained_events_per_s']:>12,.0f} events/s "
          f"({result['chaining_cost_pct']:+.1f} % time per event, median of {result['rounds']} rounds)")
    print(f"{'time inside chaining':32s} {result['chain_append_us_per_event']:>12.1f} µs/event "
          f"({result['chain_append_share_of_chained_ingest_pct']:.1f} % of chained ingest time)")
    print(f"{'verify':32s} {result['verify_events_per_s']:>12,.0f} events/s "
          f"({result['events']:,} events, {result['chain_entries']:,} chain entries in {result['verify_s']:.1f} s)")
    print(f"{'on disk: events / chain':32s} {result['events_bytes_on_disk'] / 2**20:>9.1f} / "
          f"{result['chain_bytes_on_disk'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
