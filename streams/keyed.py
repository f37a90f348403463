"""The stateful detectors split by state key: what the distributed runner runs.

Plain code, no faust (streams/app.py wires it). The embedded runner keeps
every detector's state in one process (:class:`~.detect.DetectStage`); here
the work is split in two steps that may run on different workers:

1. :meth:`KeyedDetect.route` (after validate and enrich, on the partition the
   event arrived on): the state keys of ``ev`` -- for every stateful detector
   that reads it, ``Detector.key(ev)`` -- grouped, so that detectors sharing a
   key value share one repartitioned copy of the event: ``{key: [detector
   name, ...]}``. The runner sends one copy per key to the partition that owns
   the key (:func:`partition_for`).
2. :meth:`KeyedDetect.apply` (on the worker that owns that partition): one
   key's items of a batch against that key's stored value, which holds the
   state of each of its detectors, the alerts already raised under the key,
   and, per source partition, the offset of the last event applied -- so a
   redelivered or re-forwarded event (a crash between "forwarded" and
   "committed") is recognised and skipped: state never counts an event twice.

The runner hands a key's events to :meth:`KeyedDetect.apply` in the order they
are to be applied (event time, within the allowed lateness: streams/app.py),
with one source partition's events in their offset order.

The value is JSON-serialisable (a faust Table changelogs it): ``{"s": {detector
name: [state, last event time]}, "o": {source partition: offset}, "a": [alert
ids raised], "t": latest event time}``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence

from mcpsift.alerts import Alert
from mcpsift.detectors.base import Detector
from mcpsift.detectors.timing import prime
from mcpsift.events import EVENT_TYPES

from .detect import OUTCOME_STATUSES

__all__ = ["KeyedDetect", "Item", "partition_for"]

log = logging.getLogger("mcpsift.keyed")

#: (event time, source partition, source offset, event, detector names)
Item = tuple[float, int, int, Any, Sequence[str]]


def partition_for(key: str, partitions: int) -> int:
    """The partition a key lives on: Kafka's default partitioner (murmur2 of the
    UTF-8 key), the one the faust Table's changelog uses for the same key, so the
    repartitioned events and the state they update are co-partitioned."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


class KeyedDetect:
    def __init__(
        self,
        detectors: Iterable[Detector],
        wanted_rules: Optional[Iterable[str]] = None,
        *,
        remembered_alerts_per_key: int = 256,
    ):
        self.detectors = [d for d in detectors if d.key_kind is not None]
        self.wanted_rules = frozenset(wanted_rules) if wanted_rules is not None else None
        self.by_name: dict[str, Detector] = {d.name: d for d in self.detectors}
        self._ttl = {d.name: d.state_ttl_s() for d in self.detectors}
        self.remembered = remembered_alerts_per_key
        # event type -> outcome status -> [(name, key function)], bound once: route() runs per event
        self._plan: dict[str, dict[Optional[str], list[tuple[str, Any]]]] = {
            etype: {
                status: [
                    (d.name, d.key)
                    for d in self.detectors
                    if (not d.event_types or etype in d.event_types)
                    and (etype not in d.outcomes or status in d.outcomes[etype])
                ]
                for status in OUTCOME_STATUSES
            }
            for etype in EVENT_TYPES
        }
        self.detector_errors: dict[str, int] = {}
        self.skipped_redeliveries = 0

    # -- step 1: where an event goes ----------------------------------------

    def route(self, ev: Any) -> dict[str, list[str]]:
        """``{state key: [names of the detectors keyed by it]}`` for one event."""
        outcome = ev.outcome
        plan = self._plan[ev.type][outcome.status if outcome is not None else None]
        routes: dict[str, list[str]] = {}
        for name, key_of in plan:
            try:
                key = key_of(ev)
            except Exception:
                self._failed(name, ev)
                continue
            if key is None:
                continue
            names = routes.get(key)
            if names is None:
                routes[key] = [name]
            else:
                names.append(name)
        return routes

    # -- step 2: one key's events against its state -------------------------

    def apply(self, value: Optional[dict[str, Any]], items: Sequence[Item]) -> tuple[Optional[dict[str, Any]], list[Alert]]:
        """Run ``items`` (one key's, in the order to apply them) against ``value``.

        Returns the new value (None when no detector holds state for the key any
        more: delete it) and the alerts not raised under this key before."""
        if value is None:
            value = {"s": {}, "o": {}, "a": [], "t": None}
        states: dict[str, list[Any]] = value["s"]
        offsets: dict[str, int] = value["o"]
        fresh: list[Item] = []
        for item in items:
            part = str(item[1])
            if item[2] <= offsets.get(part, -1):
                self.skipped_redeliveries += 1
                continue
            fresh.append(item)
        if not fresh:
            return value, []
        raised: list[str] = value["a"]
        known = set(raised)
        out: list[Alert] = []
        latest = value["t"] if value["t"] is not None else float("-inf")
        by_name = self.by_name
        for event_time, part, offset, ev, names in fresh:
            prime(ev, event_time)
            if event_time > latest:
                latest = event_time
            for name in names:
                detector = by_name.get(name)
                if detector is None:  # disabled since the event was routed
                    continue
                slot = states.get(name)
                if slot is None:
                    slot = states[name] = [detector.initial_state(), event_time]
                elif event_time > slot[1]:
                    slot[1] = event_time
                try:
                    slot[0], alerts = detector.step(slot[0], ev)
                except Exception:
                    self._failed(name, ev)
                    continue
                for alert in alerts:
                    if self.wanted_rules is not None and alert.rule_id not in self.wanted_rules:
                        continue
                    if alert.alert_id in known:
                        continue
                    known.add(alert.alert_id)
                    raised.append(alert.alert_id)
                    out.append(alert)
            key = str(part)
            if offset > offsets.get(key, -1):
                offsets[key] = offset
        if len(raised) > self.remembered:
            del raised[: len(raised) - self.remembered]
        value["t"] = latest
        # idle detectors' state expires by event time, as in the embedded runner
        for name in [n for n, slot in states.items() if slot[1] < latest - self._ttl.get(n, 0.0)]:
            del states[name]
        if not states and not raised:
            return None, out
        return value, out

    def expired(self, value: dict[str, Any], now: float) -> bool:
        """True when every detector's state under this key is older than its TTL at
        event time ``now`` (the key may be deleted)."""
        return all(slot[1] < now - self._ttl.get(name, 0.0) for name, slot in value["s"].items())

    def _failed(self, name: str, ev: Any) -> None:
        count = self.detector_errors[name] = self.detector_errors.get(name, 0) + 1
        if count <= 10:  # enough to debug, not a log flood
            log.exception("detector %s failed on event %s; it skipped the event", name, ev.event_id)

