"""Print a JSON report of a (stopped) embedded store: ``python -m tests.helpers.read_store DATA_DIR [--seqs] [--events [TYPE]]``.

With ``--seqs`` the report also has ``seqs``: [ingest_seq, event_id] of every physical event row.

With ``--events`` the report also has ``stored_events``: the payloads of the
stored events (physical rows, in ingest order; all types, or only ``TYPE``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    # the store (chDB) is imported here, not at module level: tests import
    # stored_events() below and must not load chDB into their own process
    from mcpsift.settings import Settings
    from mcpsift.store import open_store

    settings = Settings(data_dir=Path(sys.argv[1]))
    store = open_store(settings, migrate=False)
    report = {
        "event_id_counts": store.event_id_counts(),
        "raw_event_rows": store.raw_event_rows(),
        "alerts": [a.model_dump(mode="json") for a in store.list_alerts(limit=100_000)],
        "alert_rows_final": store.count_alerts(),
        "dead_letters": store.list_dead_letters(limit=100_000),
        "checkpoint_seq": (store.load_checkpoint("embedded") or (0, b""))[0],
    }
    if "--seqs" in sys.argv:  # [ingest_seq, event_id] of every physical row (a worker's: partition << 40 | offset)
        report["seqs"] = [list(r) for r in store.query_rows(f"SELECT ingest_seq, event_id FROM {store._t('events')}")]
    if "--events" in sys.argv:
        rest = sys.argv[sys.argv.index("--events") + 1 :]
        wanted = rest[0] if rest else None
        events = (json.loads(payload) for _, payload in store.iter_payloads_after(0))
        report["stored_events"] = [e for e in events if wanted is None or e.get("type") == wanted]
    json.dump(report, sys.stdout)


def stored_events(data_dir: Path, event_type: Optional[str] = None) -> dict[str, Any]:
    """The report of a stopped server's store, with ``stored_events`` (of ``event_type``, or all)."""
    cmd = [sys.executable, "-m", "tests.helpers.read_store", str(data_dir), "--events"]
    if event_type:
        cmd.append(event_type)
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"read_store failed: {out.stderr.decode(errors='replace')}")
    return json.loads(out.stdout)


if __name__ == "__main__":
    main()
