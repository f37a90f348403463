"""Parse + validate throughput of one event, three ways, in one process.

On the same lines of a JSONL file (100k synthetic events by default, written
to a temporary directory by :mod:`gen`, or ``--input FILE``):

(a) ``orjson.loads`` per line -- the baseline: JSON parsing alone, no schema;
(b) ``mcpsift.events.decode_event`` per line -- the pipeline's fast path
    (typed msgspec decode + ``check_event``);
(c) ``mcpsift.events.Event.model_validate_json`` per line -- the pydantic
    model that is the schema's source of truth.

Lines are held in memory, so no I/O is timed. Each method runs ``--repeats``
times, interleaved, and its best run counts; the figure to compare across
machines and runs is the ratio to (a), measured alongside it.

    python bench/bench_validate.py [--events 100000] [--input FILE] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import orjson

try:  # as a module: bench.bench_validate (or mcpsift.bench.bench_validate)
    from . import gen
    from .report import emit
except ImportError:  # as a script: python bench/bench_validate.py
    import gen  # type: ignore[no-redef]
    from report import emit  # type: ignore[no-redef]

from mcpsift.events import Event, InvalidEvent, decode_event

__all__ = ["run", "main"]


def _read_lines(path: str | Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [line for line in (raw.rstrip(b"\r\n") for raw in f) if line.strip()]


def _time_pass(fn: Callable[[bytes], Any], lines: list[bytes]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for line in lines:
        fn(line)
    return time.perf_counter() - t0


def run(n: int = 100_000, input: Optional[str] = None, *, repeats: int = 3, seed: int = 7) -> dict[str, Any]:
    """Measure the three methods; return the figures (see the module docstring)."""
    if input is not None:
        source = str(input)
        lines = _read_lines(input)
    else:
        with tempfile.TemporaryDirectory(prefix="mcpsift-bench-") as tmp:
            path = Path(tmp) / f"events-{n}.jsonl"
            gen.write_file(path, n, seed)
            lines = _read_lines(path)
        source = f"generated: gen.write_file(n={n}, seed={seed})"
    if not lines:
        raise SystemExit("no events to measure")
    count = len(lines)
    total_bytes = sum(len(line) for line in lines)

    # every line must be valid for both views, or the timings measure error paths
    invalid = {"decode_event": 0, "model_validate_json": 0}
    for line in lines:
        try:
            decode_event(line)
        except InvalidEvent:
            invalid["decode_event"] += 1
        try:
            Event.model_validate_json(line)
        except ValueError:
            invalid["model_validate_json"] += 1

    methods: list[tuple[str, str, Callable[[bytes], Any]]] = [
        ("orjson", "orjson.loads (baseline)", orjson.loads),
        ("decode_event", "mcpsift.events.decode_event", decode_event),
        ("pydantic", "Event.model_validate_json", Event.model_validate_json),
    ]
    best = {key: float("inf") for key, _, _ in methods}
    runs: dict[str, list[float]] = {key: [] for key, _, _ in methods}
    for _ in range(max(1, repeats)):
        for key, _, fn in methods:
            dt = _time_pass(fn, lines)
            runs[key].append(round(dt, 4))
            best[key] = min(best[key], dt)

    base_rate = count / best["orjson"]
    results = {}
    for key, label, _ in methods:
        rate = count / best[key]
        results[key] = {
            "method": label,
            "events_per_s": round(rate),
            "us_per_event": round(best[key] / count * 1e6, 3),
            "mib_per_s": round(total_bytes / best[key] / 2**20, 1),
            "ratio_vs_orjson": round(rate / base_rate, 4),
            "seconds_per_run": runs[key],
        }
    return {
        "benchmark": "validate",
        "source": source,
        "events": count,
        "avg_event_bytes": round(total_bytes / count),
        "repeats": max(1, repeats),
        "invalid": invalid,
        "results": results,
        "decode_event_speedup_vs_pydantic": round(best["pydantic"] / best["decode_event"], 2),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def _print_table(r: dict[str, Any]) -> None:
    print(f"validate: {r['events']:,} events, {r['avg_event_bytes']} B/event avg, best of {r['repeats']} runs  [{r['source']}]")
    if any(r["invalid"].values()):
        print(f"  WARNING: invalid lines: {r['invalid']}")
    print(f"  {'method':<30} {'events/s':>12} {'us/event':>10} {'MiB/s':>8} {'x orjson':>9}")
    for res in r["results"].values():
        print(
            f"  {res['method']:<30} {res['events_per_s']:>12,} {res['us_per_event']:>10.2f} "
            f"{res['mib_per_s']:>8.1f} {res['ratio_vs_orjson']:>8.3f}x"
        )
    print(f"  decode_event is {r['decode_event_speedup_vs_pydantic']}x faster than Event.model_validate_json")


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="Parse+validate events/s: orjson vs decode_event vs pydantic.")
    ap.add_argument("--events", type=int, default=100_000, help="events to generate (ignored with --input)")
    ap.add_argument("--input", help="JSONL file of events to use instead of generated ones")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method; the best counts")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    result = run(args.events, args.input, repeats=args.repeats, seed=args.seed)
    return emit(result, args.json, _print_table)


if __name__ == "__main__":
    main()
