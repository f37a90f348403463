"""validate → enrich → (drop redeliveries) → reorder by event time → detect.

One object that both the embedded runner (``mcpsift serve``) and ``mcpsift
detect`` drive; the faust runner wires the same stage functions itself.

When it is called: :meth:`Pipeline.validate` on raw bytes as they arrive
(invalid → :class:`~mcpsift.events.InvalidEvent`, which the caller dead-letters);
:meth:`Pipeline.push` with each valid, enriched event in arrival order;
:meth:`Pipeline.release` whenever the caller wants the alerts of every event
that is now past the allowed lateness; :meth:`Pipeline.drain` at the end of a
finite input.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import msgspec

from mcpsift.alerts import Alert
from mcpsift.detectors import build_from_settings
from mcpsift.events import EventRecord, decode_event, encode_event
from mcpsift.settings import Settings

from .detect import DetectStage
from .enrich import Enricher
from .reorder import ReorderBuffer

__all__ = ["Pipeline"]


class Pipeline:
    def __init__(self, settings: Settings):
        detectors, wanted = build_from_settings(settings)
        self.settings = settings
        self.enricher = Enricher(settings.default_tenant, settings.servers)
        self.detect = DetectStage(detectors, wanted)
        self.buffer = ReorderBuffer(settings.allowed_lateness_s)
        # recent event ids: a set to look up, a bounded deque to forget the oldest
        self.dedup_window = settings.dedup_window_events
        self.seen: set[str] = set()
        self._seen_order: deque[str] = deque()
        self.duplicates = 0

    # -- stages ------------------------------------------------------------

    def validate(self, raw: bytes | str) -> Any:
        """Decode, validate and enrich one event. Raises InvalidEvent."""
        return self.enricher(decode_event(raw))

    def admit(self, ev: Any) -> bool:
        """False when ``ev`` is a redelivery (an event_id among the recent ones)."""
        if ev.event_id in self.seen:
            self.duplicates += 1
            return False
        self.remember((ev.event_id,))
        return True

    def remember(self, event_ids: Any) -> None:
        """Count these event ids as seen (a runner that admits a batch only once it is
        durably handled checks ``event_id in seen`` first, then remembers them)."""
        seen = self.seen
        order = self._seen_order
        for event_id in event_ids:
            if event_id in seen:
                continue
            seen.add(event_id)
            order.append(event_id)
            if len(order) > self.dedup_window:
                seen.discard(order.popleft())

    def push(self, ev: Any, wall_now: Optional[float] = None) -> bool:
        """Queue a valid event for detection; False when it is a redelivery (same event_id)."""
        if not self.admit(ev):
            return False
        self.buffer.push(ev.time.timestamp(), ev, wall_now)
        return True

    def release(self, wall_now: Optional[float] = None) -> list[Alert]:
        """Detect on every event now past the allowed lateness; their alerts."""
        return self._run(self.buffer.pop_ready(wall_now))

    def drain(self) -> list[Alert]:
        """Detect on everything buffered (end of input)."""
        return self._run(self.buffer.drain())

    def _run(self, ready: list[tuple[float, int, Any]]) -> list[Alert]:
        alerts: list[Alert] = []
        process = self.detect.process
        for event_time, _, ev in ready:
            found = process(ev, event_time)
            if found:
                alerts.extend(found)
        return alerts

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything needed to resume: detector state, buffered events, recent ids."""
        return msgspec.json.encode(
            {
                "detect": self.detect.snapshot(),
                "buffer": [encode_event(ev).decode("utf-8") for _, ev in self.buffer.items()],
                "seen": list(self._seen_order),
                "max_time": self.buffer.max_time if self.buffer.max_time != float("-inf") else None,
                "released_until": self.buffer.released_until
                if self.buffer.released_until != float("-inf")
                else None,
            }
        )

    def restore(self, blob: bytes) -> None:
        snap = msgspec.json.decode(blob)
        self.detect.restore(snap["detect"])
        self._seen_order = deque(snap.get("seen", []))
        self.seen = set(self._seen_order)
        for raw in snap.get("buffer", []):
            ev = msgspec.json.decode(raw, type=EventRecord)
            self.buffer.push(ev.time.timestamp(), ev)
        if snap.get("max_time") is not None:
            self.buffer.max_time = max(self.buffer.max_time, snap["max_time"])
        if snap.get("released_until") is not None:
            self.buffer.released_until = snap["released_until"]
