"""Event-time reordering within the allowed lateness.

Events go in as they arrive; they come out in event-time order once the
watermark (the latest event time seen, or the wall clock in a live runner)
has passed them by ``lateness_s``. Events later than that are released at
once and counted as late: never dropped.
"""

from __future__ import annotations

import heapq
import math
from typing import Any, Optional

__all__ = ["ReorderBuffer"]


class ReorderBuffer:
    def __init__(self, lateness_s: float):
        self.lateness_s = lateness_s
        self._heap: list[tuple[float, int, Any]] = []
        self._counter = 0
        self.max_time = -math.inf
        self.released_until = -math.inf
        self.late_events = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event_time: float, item: Any, wall_now: Optional[float] = None) -> None:
        """Add one item with its event time (POSIX seconds).

        With ``wall_now`` (live runners) an event stamped further in the future
        than the lateness does not move the watermark: one producer with a bad
        clock must not make everyone else's events late.
        """
        if event_time < self.released_until:
            self.late_events += 1
        if wall_now is None or event_time <= wall_now + self.lateness_s:
            if event_time > self.max_time:
                self.max_time = event_time
        heapq.heappush(self._heap, (event_time, self._counter, item))
        self._counter += 1

    def pop_ready(self, wall_now: Optional[float] = None) -> list[Any]:
        """Items whose event time is at or before the watermark minus the lateness, in order."""
        watermark = self.max_time if wall_now is None else max(self.max_time, wall_now)
        threshold = watermark - self.lateness_s
        ready = []
        heap = self._heap
        while heap and heap[0][0] <= threshold:
            event_time, _, item = heapq.heappop(heap)
            if event_time > self.released_until:
                self.released_until = event_time
            ready.append(item)
        return ready

    def drain(self) -> list[Any]:
        """Everything still buffered, in event-time order (end of a finite input)."""
        ready = [item for _, _, item in sorted(self._heap)]
        if self._heap:
            self.released_until = max(self.released_until, max(t for t, _, _ in self._heap))
        self._heap.clear()
        return ready

    def items(self) -> list[tuple[float, Any]]:
        """The buffered items in order, for a snapshot."""
        return [(t, item) for t, _, item in sorted(self._heap)]
