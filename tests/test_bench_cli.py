"""`mcpsift bench` runs the benchmarks from the installed package (figures only; no timing asserted)."""

from __future__ import annotations

import subprocess
import sys


def test_bench_validate_runs_and_prints_figures() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mcpsift.cli", "bench", "validate", "--events", "2000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "orjson" in run.stdout and "decode_event" in run.stdout and "events/s" in run.stdout


def test_bench_rejects_an_unknown_benchmark() -> None:
    run = subprocess.run([sys.executable, "-m", "mcpsift.cli", "bench", "nope"], capture_output=True, text=True)
    assert run.returncode == 2 and "choose validate, detect, serve, outputs, hooks, publish, chain, worker, api or all" in run.stderr


def test_bench_outputs_runs_and_prints_figures() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "mcpsift.cli", "bench", "outputs", "--events", "200"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for output in ("webhook", "splunk_hec", "elastic", "syslog_tcp", "file", "ocsf_http"):
        assert output in run.stdout
    assert "direct/s" in run.stdout and "durable/s" in run.stdout
