"""Print a JSON report of a (stopped) embedded store: ``python -m tests.helpers.read_store DATA_DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mcpsift.settings import Settings
from mcpsift.store import open_store


def main() -> None:
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
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
