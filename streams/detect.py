"""The detect stage: dispatch each event to the detectors that read its type,
keep their state per key, expire idle keys, and drop repeated alert ids.

This is the embedded runner's (and ``mcpsift detect``'s) state store: a dict.
The faust runner calls the same ``Detector.key``/``Detector.step`` with its
state in a Table instead; no detection logic lives here.

The detectors of one event run in a fixed order: the stateless ones
(``key_kind = None``: they depend on nothing but the event), then the stateful
ones. ``mcpsift detect`` splits that order between two processes: its reader
process, which decodes every event anyway, runs the stateless ones
(:meth:`DetectStage.reader_alerts`, in any order) and the detecting process
the rest (:meth:`DetectStage.process` with the reader's alerts). Either way
the alerts of one event come out in the same order, and repeated alert ids
are dropped in one place, in event-time order.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Iterable, Optional

from mcpsift.alerts import Alert
from mcpsift.detectors.base import NO_ALERTS, Detector
from mcpsift.detectors.timing import prime
from mcpsift.events import EVENT_TYPES

__all__ = ["DetectStage"]

log = logging.getLogger("mcpsift.detect")

#: the values ``outcome.status`` may take (None: no outcome), see Detector.outcomes
OUTCOME_STATUSES: tuple[Optional[str], ...] = (None, "ok", "error", "denied")


class DetectStage:
    def __init__(
        self,
        detectors: Iterable[Detector],
        wanted_rules: Iterable[str] | None = None,
        *,
        remembered_alerts: int = 100_000,
        sweep_every: int = 20_000,
    ):
        self.detectors = list(detectors)
        self.wanted_rules = frozenset(wanted_rules) if wanted_rules is not None else None
        # stateless first: the order alerts of one event come out in, whichever
        # process runs the stateless ones
        ordered = [d for d in self.detectors if d.key_kind is None] + [
            d for d in self.detectors if d.key_kind is not None
        ]
        self.by_type: dict[str, list[Detector]] = {
            etype: [d for d in ordered if not d.event_types or etype in d.event_types] for etype in EVENT_TYPES
        }
        # detector name -> key -> [state, last event time]
        self.states: dict[str, dict[str, list[Any]]] = {d.name: {} for d in self.detectors}
        self._ttl = {d.name: d.state_ttl_s() for d in self.detectors}
        self.emitted: OrderedDict[str, None] = OrderedDict()
        self.remembered_alerts = remembered_alerts
        self.sweep_every = sweep_every
        self._since_sweep = 0
        self.events_processed = 0
        self.detector_errors: dict[str, int] = {}
        self._build_plan()

    def _build_plan(self) -> None:
        # per event type: (step, key function or None, state table, initial state, name)
        # bound once, because this loop runs for every event
        def entry(d: Detector) -> tuple[Any, ...]:
            key = None if d.key_kind is None else d.key
            return (d.step, key, self.states[d.name], d.initial_state, type(d).__name__)

        def in_reader(d: Detector) -> bool:
            return d.key_kind is None

        def plans(keep: Any) -> dict[str, dict[Optional[str], list[tuple[Any, ...]]]]:
            # event type -> outcome status -> the detectors to run, in order
            return {
                etype: {
                    status: [
                        entry(d)
                        for d in dets
                        if keep(d) and (etype not in d.outcomes or status in d.outcomes[etype])
                    ]
                    for status in OUTCOME_STATUSES
                }
                for etype, dets in self.by_type.items()
            }

        self._plan = plans(lambda d: True)
        self._reader_plan = plans(in_reader)
        self._rest_plan = plans(lambda d: not in_reader(d))

    def reader_alerts(self, ev: Any, event_time: float) -> list[Alert]:
        """The alerts of the stateless detectors on ``ev``, not yet deduplicated.
        Pass them to :meth:`process` with the same event, in event-time order,
        in the stage that runs the rest (its own instance, maybe in another
        process)."""
        prime(ev, event_time)
        outcome = ev.outcome
        plan = self._reader_plan[ev.type][outcome.status if outcome is not None else None]
        return self._run(plan, ev, event_time, NO_ALERTS, dedup=False)

    def stateless(self, ev: Any, event_time: float) -> list[Alert]:
        """The new, wanted alerts of the stateless detectors alone on ``ev`` (the
        distributed runner runs the stateful ones per key: streams/keyed.py)."""
        found = self.reader_alerts(ev, event_time)
        return self._new(found) if found else NO_ALERTS

    def process(self, ev: Any, event_time: float, reader: Optional[list[Alert]] = None) -> list[Alert]:
        """Run every subscribed detector on one event (in event-time order).

        ``event_time`` is ``ev.time.timestamp()`` as the runner ordered the
        event by it (a live runner orders an event stamped beyond now +
        lateness at now + lateness); detectors asking ``timing.event_ts(ev)``
        get this value without converting the time again.

        With ``reader`` (what :meth:`reader_alerts` gave for this event,
        computed elsewhere) only the other detectors run here.
        """
        prime(ev, event_time)
        outcome = ev.outcome
        status = outcome.status if outcome is not None else None
        if reader is None:
            out = self._run(self._plan[ev.type][status], ev, event_time, NO_ALERTS, dedup=True)
        else:
            first = (self._new(reader) or NO_ALERTS) if reader else NO_ALERTS
            out = self._run(self._rest_plan[ev.type][status], ev, event_time, first, dedup=True)
        self._since_sweep += 1
        if self._since_sweep >= self.sweep_every:
            self.expire(event_time)
        return out

    def _run(
        self, plan: list[tuple[Any, ...]], ev: Any, event_time: float, out: list[Alert], dedup: bool
    ) -> list[Alert]:
        for step, key_of, table, initial, name in plan:
            try:
                if key_of is None:
                    _, alerts = step(None, ev)
                else:
                    key = key_of(ev)
                    if key is None:
                        continue
                    slot = table.get(key)
                    if slot is None:
                        slot = table[key] = [initial(), event_time]
                    elif event_time > slot[1]:
                        slot[1] = event_time
                    slot[0], alerts = step(slot[0], ev)
            except Exception:
                # a detector bug must not stop the others, nor the pipeline
                self._detector_failed(name, ev)
                continue
            if alerts:
                fresh = self._new(alerts) if dedup else alerts
                if fresh:
                    out = fresh if out is NO_ALERTS else out + fresh
        return out

    def _detector_failed(self, name: str, ev: Any) -> None:
        self.detector_errors[name] = self.detector_errors.get(name, 0) + 1
        if self.detector_errors[name] <= 10:  # enough to debug, not a log flood
            log.exception("detector %s failed on event %s; it skipped the event", name, ev.event_id)

    def _new(self, alerts: list[Alert]) -> list[Alert]:
        fresh = []
        for alert in alerts:
            if self.wanted_rules is not None and alert.rule_id not in self.wanted_rules:
                continue
            if alert.alert_id in self.emitted:
                continue
            self.emitted[alert.alert_id] = None
            if len(self.emitted) > self.remembered_alerts:
                self.emitted.popitem(last=False)
            fresh.append(alert)
        return fresh

    def expire(self, now: float) -> int:
        """Drop keys idle for longer than their detector's TTL (event time). Returns how many."""
        self.events_processed += self._since_sweep
        self._since_sweep = 0
        dropped = 0
        for name, table in self.states.items():
            horizon = now - self._ttl[name]
            stale = [k for k, slot in table.items() if slot[1] < horizon]
            for k in stale:
                del table[k]
            dropped += len(stale)
        return dropped

    def state_size(self) -> int:
        return sum(len(t) for t in self.states.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "states": self.states,
            "emitted": list(self.emitted),
            "events_processed": self.events_processed + self._since_sweep,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        for name, table in snap.get("states", {}).items():
            if name in self.states:  # a detector disabled since is simply forgotten
                self.states[name] = table
        self.emitted = OrderedDict((a, None) for a in snap.get("emitted", []))
        self.events_processed = snap.get("events_processed", 0)
        self._build_plan()
