"""``mcpsift serve`` ingest benchmark: HTTP ingest -> stored, detection lag, RSS.

Starts a real ``mcpsift serve`` subprocess on a free loopback port with its own
data dir, posts N generated events (default 100k) as NDJSON in batches of
1,000 and reports:

* ingest -> stored events/s: every 202 means the batch is in the ``events``
  table, so this is events over the time until the last 202;
* how long detection needed to catch up after that;
* the server's RSS at start, after ingest, and (with ``--soak-seconds``) while
  it keeps ingesting fresh events for that long, sampled every few seconds,
  so a growing footprint shows;
* a same-process baseline (orjson.loads of the same lines) to read the rate
  as a ratio on a noisy machine.

Usage: ``python bench/bench_serve.py [--events 100000] [--soak-seconds 240]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import orjson

try:  # as a module: bench.bench_serve (or mcpsift.bench.bench_serve)
    from .gen import generate
    from .report import emit
except ImportError:  # as a script: python bench/bench_serve.py
    from gen import generate  # type: ignore[no-redef]
    from report import emit  # type: ignore[no-redef]

__all__ = ["run", "main"]

BATCH = 1_000
SOAK_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z


def _iso(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def _batches(n: int, seed: int, start: str) -> list[bytes]:
    lines = list(generate(n, seed=seed, start=start))
    return [b"\n".join(lines[i : i + BATCH]) for i in range(0, len(lines), BATCH)]


def _keys_file(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + ".keys.json")


def ingest_key(data_dir: Path) -> str:
    """The ingest key a server started by :func:`_start_server` made on its first start."""
    import json

    return json.loads(_keys_file(data_dir).read_text())["ingest"]


def _start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPSIFT_")}
    # secure by default: serve makes an ingest key on its first start and writes it here for us
    env["MCPSIFT_AUTH__BOOTSTRAP_KEYS_FILE"] = str(_keys_file(data_dir))
    cmd = [sys.executable, "-m", "mcpsift.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    log = open(data_dir / "serve.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mcpsift serve exited: {(data_dir / 'serve.log').read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("mcpsift serve did not start within 120 s")


def _wait_caught_up(url: str, timeout: float = 600) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(url + "/healthz", timeout=10).json()
        if health["detected_seq"] >= health["ingest_seq"] and health["queued_batches"] == 0:
            return health
        time.sleep(0.1)
    raise RuntimeError(f"detection did not catch up within {timeout} s")


def _post_all(client: Any, url: str, batches: list[bytes]) -> int:
    accepted = 0
    for body in batches:
        r = client.post(url + "/v1/events", content=body, headers={"content-type": "application/x-ndjson"})
        if r.status_code == 429:  # over the ingest key's rate limit: wait as told
            time.sleep(float(r.headers.get("retry-after", "1")))
            r = client.post(url + "/v1/events", content=body, headers={"content-type": "application/x-ndjson"})
        if r.status_code != 202:
            raise RuntimeError(f"ingest answered {r.status_code}: {r.text[:300]}")
        accepted += r.json()["accepted"]
    return accepted


def run(n: int = 100_000, soak_seconds: float = 0.0, seed: int = 7, progress: bool = True) -> dict[str, Any]:
    import httpx

    batches = _batches(n, seed, "2026-11-20T00:00:00Z")
    lines = [line for body in batches for line in body.split(b"\n")]
    t = time.perf_counter()
    for line in lines:
        orjson.loads(line)
    baseline = len(lines) / (time.perf_counter() - t)

    data_dir = Path(tempfile.mkdtemp(prefix="mcpsift-bench-serve-"))
    proc, url = _start_server(data_dir)
    result: dict[str, Any] = {"events": len(lines), "batch": BATCH, "orjson_events_per_s": baseline}
    try:
        result["rss_start_mib"] = _rss_mib(proc.pid)
        with httpx.Client(timeout=120, headers={"authorization": f"Bearer {ingest_key(data_dir)}"}) as client:
            t = time.perf_counter()
            accepted = _post_all(client, url, batches)
            ingest_s = time.perf_counter() - t
            health = _wait_caught_up(url)
            caught_up_s = time.perf_counter() - t
        result.update(
            accepted=accepted,
            ingest_s=ingest_s,
            ingest_events_per_s=accepted / ingest_s,
            ingest_ratio_to_orjson=(accepted / ingest_s) / baseline,
            detected_all_after_s=caught_up_s,
            end_to_end_events_per_s=accepted / caught_up_s,
            alerts=health["alerts_written"],
            rss_after_ingest_mib=_rss_mib(proc.pid),
        )
        if progress:
            print(
                f"ingest: {accepted:,} events in {ingest_s:.1f} s = {accepted / ingest_s:,.0f} events/s "
                f"({result['ingest_ratio_to_orjson']:.3f}x orjson.loads {baseline:,.0f}/s); "
                f"detection caught up after {caught_up_s:.1f} s; RSS {result['rss_after_ingest_mib']:.0f} MiB",
                flush=True,
            )
        if soak_seconds > 0:
            samples = []
            soaked = 0
            round_no = 0
            started = time.monotonic()
            with httpx.Client(timeout=120) as client:
                while time.monotonic() - started < soak_seconds:
                    round_no += 1
                    # fresh ids and event times 6 h later each round (still in the past),
                    # so per-key state expiry has work to do
                    start = _iso(SOAK_EPOCH + round_no * 6 * 3600)
                    soaked += _post_all(client, url, _batches(20_000, seed + round_no, start))
                    samples.append((round(time.monotonic() - started, 1), round(_rss_mib(proc.pid), 1)))
                    if progress:
                        print(f"  soak {samples[-1][0]:6.0f} s: {soaked:,} events, RSS {samples[-1][1]:.0f} MiB", flush=True)
            result.update(
                soak_seconds=time.monotonic() - started,
                soak_events=soaked,
                soak_events_per_s=soaked / (time.monotonic() - started),
                soak_rss_samples=samples,
                soak_rss_first_mib=samples[0][1],
                soak_rss_last_mib=samples[-1][1],
                soak_rss_max_mib=max(s[1] for s in samples),
            )
            _wait_caught_up(url)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--soak-seconds", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    result = run(args.events, args.soak_seconds, args.seed, progress=not args.json)
    return emit(result, args.json, _print_table)


def _print_table(result: dict[str, Any]) -> None:
    print(f"{'serve ingest -> stored':32s} {result['ingest_events_per_s']:>12,.0f} events/s "
          f"({result['ingest_ratio_to_orjson']:.3f}x orjson baseline)")
    print(f"{'ingest -> all detected':32s} {result['end_to_end_events_per_s']:>12,.0f} events/s")
    print(f"{'RSS start / after ingest':32s} {result['rss_start_mib']:>8.0f} / {result['rss_after_ingest_mib']:.0f} MiB")
    if "soak_rss_first_mib" in result:
        print(f"{'soak RSS first / last / max':32s} {result['soak_rss_first_mib']:>8.0f} / "
              f"{result['soak_rss_last_mib']:.0f} / {result['soak_rss_max_mib']:.0f} MiB over "
              f"{result['soak_seconds']:.0f} s, {result['soak_events']:,} events")


if __name__ == "__main__":
    main()
