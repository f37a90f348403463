"""Event time as POSIX seconds, computed once per event for every detector that asks.

Several detectors read the time of every tool call; converting an aware
datetime costs more than the rest of most steps, and the runner hands each
event to the detectors one after the other, so remembering the last event's
value makes the second and later conversions a pointer comparison (and the
first too when the runner, which has the value already, calls :func:`prime`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["event_ts", "prime"]

#: [the last event asked about, its time] (a list, updated in place: no tuple per event)
_last: list[Any] = [None, 0.0]


def event_ts(ev: Any, _last: list[Any] = _last) -> float:
    """``ev.time.timestamp()``, remembered for the last event (a pure function of ``ev``)."""
    if _last[0] is ev:
        return _last[1]
    value = ev.time.timestamp()
    _last[0] = ev
    _last[1] = value
    return value


def prime(ev: Any, value: float) -> None:
    """Remember ``value`` as the time of ``ev``: a runner that has already computed
    ``ev.time.timestamp()`` (it orders events by it) saves every detector the
    conversion. ``value`` must be exactly that."""
    _last[0] = ev
    _last[1] = value
