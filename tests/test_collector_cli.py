"""`mcpsift collector status` reads a publisher's spool dir (what is waiting, its last counters)."""

from __future__ import annotations

import json
import subprocess
import sys

from mcpsift.collectors.publishers import HttpPublisher
from tests.fixtures.serve import free_port


def test_collector_status_reports_the_spool_and_counters(tmp_path) -> None:
    spool = tmp_path / "spool"
    publisher = HttpPublisher(f"http://127.0.0.1:{free_port()}/v1/events", spool_dir=str(spool))  # nobody listens
    publisher.start()
    for i in range(3):
        assert publisher.submit({"schema": "mcpsift.event/1", "event_id": f"e{i}", "type": "mcp.request"})
    publisher.close(timeout=5)  # cannot deliver: everything stays in the spool

    run = subprocess.run([sys.executable, "-m", "mcpsift.cli", "collector", "status", "--spool-dir", str(spool), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["spool"]["records"] == 3 and report["running"] is False
    assert report["publisher"]["sent"] == 0 and "cannot reach" in report["publisher"]["last_error"]

    run = subprocess.run([sys.executable, "-m", "mcpsift.cli", "collector", "status", "--spool-dir", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "is not a directory" in run.stderr
