"""Replay: run the detectors again over a stored time range.

For a new or re-tuned rule: the stored events of ``[since, until)`` (of the
caller's tenants) go, in event-time order, through a fresh pipeline built
from the current settings (optionally only some rules), and the alerts are
written like live ones — to the ``alerts`` table, then the SIEM outbox.
Alert ids are deterministic, so an alert that was already raised is the same
row and is not sent to an output again; a replay can be repeated safely.

Detector state starts empty at ``since``: a rule that needs history (a
baseline, a first-seen list) sees only the replayed window.

When it runs: :class:`ReplayJob.run` in a worker thread started by
``POST /v1/replay`` (one job at a time per process); ``progress`` is read by
``GET /v1/replay/{job_id}`` while it runs.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import msgspec

from mcpsift.events import EventRecord
from mcpsift.settings import Settings
from mcpsift.store import Store

from .pipeline import Pipeline
from .sinks import AlertSink

__all__ = ["ReplayJob", "ReplayBusy"]

_UTC = _dt.timezone.utc


class ReplayBusy(RuntimeError):
    """Another replay is running in this process."""


@dataclass
class ReplayJob:
    store: Store
    settings: Settings
    since: _dt.datetime
    until: _dt.datetime
    #: only these rule ids (default: every enabled rule)
    rules: Optional[Sequence[str]] = None
    #: only these tenants (None: all)
    tenants: Optional[frozenset[str]] = None
    #: where alerts are queued for the SIEM outputs (an Outbox), if any
    outbox: Any = None
    requested_by: str = "local"
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"  # queued | running | done | failed
    total: int = 0
    processed: int = 0
    alerts: int = 0
    error: Optional[str] = None
    started_at: Optional[float] = None
    finished_at: Optional[float] = None

    def pipeline(self) -> Pipeline:
        settings = self.settings
        if self.rules is not None:
            detectors = settings.detectors.model_copy(update={"enabled": list(self.rules), "disabled": []})
            settings = settings.model_copy(update={"detectors": detectors})
        return Pipeline(settings)

    def run(self) -> None:
        """Replay the range; never raises (the error is kept in ``error``)."""
        self.state, self.started_at = "running", time.time()
        try:
            pipeline = self.pipeline()  # unknown rule ids fail here, before any work
            self.total = self.store.count_events_between(self.since, self.until)
            sink = AlertSink(self.store, outbox=self.outbox)
            decode = msgspec.json.Decoder(EventRecord).decode
            for payload in self.store.iter_payloads_between(self.since, self.until):
                ev = decode(payload)
                self.processed += 1
                if self.tenants is not None and ev.tenant not in self.tenants:
                    continue
                pipeline.push(ev)
                if self.processed % 5_000 == 0:
                    self._write(sink, pipeline.release())
            self._write(sink, pipeline.drain())
            self.state = "done"
        except Exception as exc:
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.finished_at = time.time()

    def _write(self, sink: AlertSink, alerts: list[Any]) -> None:
        for alert in alerts:
            sink.add(alert)
        self.alerts += sink.flush()

    def progress(self) -> dict[str, Any]:
        elapsed = ((self.finished_at or time.time()) - self.started_at) if self.started_at else 0.0
        return {
            "job_id": self.job_id,
            "state": self.state,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "rules": list(self.rules) if self.rules is not None else None,
            "tenants": sorted(self.tenants) if self.tenants is not None else None,
            "requested_by": self.requested_by,
            "events_total": self.total,
            "events_processed": self.processed,
            "alerts_written": self.alerts,
            "elapsed_s": round(elapsed, 1),
            "error": self.error,
        }


class ReplayRunner:
    """At most one replay at a time per process; finished jobs are kept for status."""

    def __init__(self) -> None:
        self.jobs: dict[str, ReplayJob] = {}
        self._lock = threading.Lock()

    def start(self, job: ReplayJob) -> ReplayJob:
        with self._lock:
            running = [j for j in self.jobs.values() if j.state in ("queued", "running")]
            if running:
                raise ReplayBusy(f"replay {running[0].job_id} is still running; wait for it (GET /v1/replay/{running[0].job_id})")
            self.jobs[job.job_id] = job
        threading.Thread(target=job.run, name=f"mcpsift-replay-{job.job_id[:8]}", daemon=True).start()
        return job
