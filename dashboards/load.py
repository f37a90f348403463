"""Demo traffic into a store, as a live pipeline would have left it: what the
snapshot command's ``--demo`` and the dashboard tests look at.

:func:`load_demo` generates labelled demo traffic (``mcpsift.demo``), then:

* validates and enriches every event with the pipeline's own stage
  (:meth:`Pipeline.validate`) and stores it with :func:`event_row`, the row
  function of the embedded runner. ``received_at`` is the event time plus a
  simulated transport delay (50 ms to 2 s, one slow batch of 20-40 s every
  ~40 minutes), as if the traffic had arrived live; a bulk load would
  otherwise give every event the same arrival second and the ingest-rate and
  lag panels would show nothing real;
* stores a few invalid inputs as dead letters, with the pipeline's reasons;
* runs the detectors over the traffic (:func:`detect_lines`, the settings of
  the demo's config.yaml) and stores the alerts;
* queues every alert for one SIEM output (``siem-webhook``) in the outbox and
  moves them on as a dispatcher with a flaky receiver would: most delivered,
  some pending, a few dead. The demo has no SIEM to deliver to: these states
  are made up, so the outbox panels have something to show.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, Callable, Optional

__all__ = ["LoadReport", "load_demo", "INVALID_INPUTS"]

_UTC = _dt.timezone.utc

#: invalid inputs the loader dead-letters, one per common mistake of a producer
INVALID_INPUTS: tuple[bytes, ...] = (
    b'{"schema":"mcpsift.event/1","event_id":"broken-1","time":"2026-11-02T08:00:00Z","type":"mcp.tool_call"',
    b'{"schema":"mcpsift.event/1","event_id":"bad-type-1","time":"2026-11-02T08:00:00Z","type":"mcp.teleport",'
    b'"source":{"kind":"server","name":"x"}}',
    b'{"schema":"mcpsift.event/1","event_id":"no-time-1","type":"auth.token","source":{"kind":"server","name":"x"},'
    b'"token":{"fingerprint":"sha256:00"}}',
    b'{"schema":"mcpsift.event/1","event_id":"raw-token-1","time":"2026-11-02T08:00:00Z","type":"auth.token",'
    b'"source":{"kind":"server","name":"x"},"token":{"fingerprint":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"}}',
    b"not json at all",
)

DEMO_OUTPUT = "siem-webhook"


@dataclass
class LoadReport:
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    start: Optional[_dt.datetime] = None
    end: Optional[_dt.datetime] = None
    alerts_by_rule: dict[str, int] = field(default_factory=dict)


def _iso(t: _dt.datetime) -> str:
    return t.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def load_demo(
    store: Any,
    *,
    hours: float = 1.0,
    tenants: int = 3,
    seed: int = 1,
    end: Optional[_dt.datetime] = None,
    work_dir: Optional[Path] = None,
    on_progress: Optional[Callable[[str, float], None]] = None,
) -> LoadReport:
    """Generate ``hours`` of demo traffic ending at ``end`` (default: now) and
    load events, dead letters, alerts and outbox rows into ``store``.

    ``on_progress(stage, fraction)`` is called as the work goes on."""
    from mcpsift.alerts import Alert
    from mcpsift.demo.evaluate import load_settings_for
    from mcpsift.demo.generate import generate
    from mcpsift.events import InvalidEvent, encode_event
    from mcpsift.store import event_row
    from mcpsift.streams.offline import detect_lines
    from mcpsift.streams.pipeline import Pipeline

    report = on_progress or (lambda stage, fraction: None)
    end = (end or _dt.datetime.now(_UTC)).replace(second=0, microsecond=0)
    start = end - _dt.timedelta(hours=hours)
    with tempfile.TemporaryDirectory(prefix="mcpsift-dashboards-", dir=work_dir) as tmp:
        directory = Path(tmp) / "traffic"
        report("generate", 0.0)
        generate(directory, seed=seed, hours=hours, tenants=tenants, start=_iso(start), progress=False)
        lines = [line for line in (directory / "events.jsonl").read_bytes().splitlines() if line.strip()]
        notes: list[str] = []
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        settings = load_settings_for(directory, None, data_dir, notes)

        # events, as the embedded runner stores them, arriving with a transport delay
        pipeline = Pipeline(settings)
        rng = Random(seed)
        rows, dead = [], []
        slow_until = None
        for seq, raw in enumerate(lines, start=1):
            try:
                ev = pipeline.validate(raw)
            except InvalidEvent as exc:  # the generator writes valid events; keep any that is not
                dead.append(("file", str(exc), raw, seq))
                continue
            if slow_until is None or ev.time > slow_until:
                slow_until = None
                if rng.random() < 1 / 2400:  # about once every 40 minutes of traffic: a slow batch
                    slow_until = ev.time + _dt.timedelta(seconds=rng.uniform(20, 40))
            lag = rng.uniform(0.05, 2.0) + (rng.uniform(20, 40) if slow_until is not None else 0.0)
            rows.append(event_row(ev, encode_event(ev), seq, ev.time + _dt.timedelta(seconds=lag)))
            if len(rows) == 10_000:
                store.insert_events(rows)
                rows.clear()
                report("store events", seq / len(lines))
        store.insert_events(rows)
        report("store events", 1.0)
        for position, raw in enumerate(INVALID_INPUTS):
            try:
                pipeline.validate(raw)
            except InvalidEvent as exc:
                dead.append(("http", str(exc), raw, position))
        store.insert_dead_letters(dead)

        # alerts, from the same traffic through the detectors
        report("detect", 0.0)
        out = io.BytesIO()
        detect_lines(lines, out, settings)
        alerts = [Alert(**json.loads(line)) for line in out.getvalue().splitlines() if line.strip()]
        store.insert_alerts(alerts)
        report("detect", 1.0)

        # the SIEM outbox: every alert queued, then moved on by a made-up dispatcher
        now = _dt.datetime.now(_UTC)
        store.enqueue_deliveries([(DEMO_OUTPUT, a.alert_id) for a in alerts], now=now)
        moves = []
        states: dict[str, int] = {"pending": 0, "delivered": 0, "dead": 0}
        for alert in sorted(alerts, key=lambda a: a.alert_id):
            roll = rng.random()
            if roll < 0.9:
                moves.append((DEMO_OUTPUT, alert.alert_id, "delivered", 1, now, "", now))
                states["delivered"] += 1
            elif roll < 0.97:
                moves.append((DEMO_OUTPUT, alert.alert_id, "pending", 2, now + _dt.timedelta(seconds=30),
                              "HTTP 503 Service Unavailable", now))
                states["pending"] += 1
            else:
                moves.append((DEMO_OUTPUT, alert.alert_id, "dead", 8, now, "HTTP 400 Bad Request: mapping error", now))
                states["dead"] += 1
        store.record_deliveries(moves)

    by_rule: dict[str, int] = {}
    for a in alerts:
        by_rule[a.rule_id] = by_rule.get(a.rule_id, 0) + 1
    return LoadReport(
        events=len(lines) - sum(1 for d in dead if d[0] == "file"), dead_letters=len(dead), alerts=len(alerts),
        deliveries=states, start=start, end=end, alerts_by_rule=dict(sorted(by_rule.items())),
    )
