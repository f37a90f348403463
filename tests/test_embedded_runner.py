"""The embedded runner's thread life cycle: however often it is started (the
app's lifespan starts it; a caller may have started it already), one ``stop``
leaves no detection thread behind to query a store that is gone."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mcpsift.settings import Settings
from mcpsift.streams.embedded import EmbeddedRunner


def _detect_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mcpsift-detect" and t.is_alive()]


def test_start_twice_then_stop_leaves_no_detection_thread(store: Any, tmp_path: Path) -> None:
    before = len(_detect_threads())
    runner = EmbeddedRunner(Settings(data_dir=tmp_path, database=store.database), store)
    runner.start()
    runner.start()
    assert len(_detect_threads()) == before + 1
    runner.stop()
    assert len(_detect_threads()) == before
    runner.start()  # restartable after a stop
    assert len(_detect_threads()) == before + 1
    runner.stop()
    assert len(_detect_threads()) == before
