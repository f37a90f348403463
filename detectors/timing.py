"""Event time as POSIX seconds, computed once per event for every detector that asks.

Several detectors read the time of every tool call; converting an aware
datetime costs more than the rest of most steps, and the runner hands each
event to the detectors one after the other, so remembering the last event's
value makes the second and later conversions a pointer comparison.
"""

from __future__ import annotations

from typing import Any

__all__ = ["event_ts"]

_last: tuple[Any, float] = (None, 0.0)


def event_ts(ev: Any) -> float:
    """``ev.time.timestamp()``, remembered for the last event (a pure function of ``ev``)."""
    global _last
    last = _last
    if last[0] is ev:
        return last[1]
    value = ev.time.timestamp()
    _last = (ev, value)
    return value
