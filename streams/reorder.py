"""Event-time reordering within the allowed lateness.

Events go in as they arrive; they come out in event-time order once the
watermark (the latest event time seen, or the wall clock in a live runner)
has passed them by ``lateness_s``. Events later than that are released at
once and counted as late: never dropped.

Most traffic arrives in order, so in-order arrivals go to a deque (O(1)) and
only out-of-order ones to a heap; release merges the two. The output order is
the same total order either way: (event time, arrival number).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any, Optional

__all__ = ["ReorderBuffer"]

Entry = tuple[float, int, Any]


class ReorderBuffer:
    def __init__(self, lateness_s: float):
        self.lateness_s = lateness_s
        self._run: deque[Entry] = deque()
        self._heap: list[Entry] = []
        self._counter = 0
        self.max_time = -math.inf
        self.released_until = -math.inf
        self.late_events = 0
        self.future_events = 0

    def __len__(self) -> int:
        return len(self._run) + len(self._heap)

    def push(self, event_time: float, item: Any, wall_now: Optional[float] = None) -> None:
        """Add one item with its event time (POSIX seconds).

        With ``wall_now`` (live runners) an event stamped further in the future
        than the lateness neither moves the watermark (one producer with a bad
        clock must not make everyone else's events late) nor waits for its own
        time to come (memory would grow with every such event): it is ordered
        as if stamped ``wall_now + lateness`` and counted in ``future_events``.
        """
        if wall_now is not None and event_time > wall_now + self.lateness_s:
            self.future_events += 1
            event_time = wall_now + self.lateness_s
        if event_time < self.released_until:
            self.late_events += 1
        if event_time > self.max_time:
            self.max_time = event_time
        entry = (event_time, self._counter, item)
        self._counter += 1
        run = self._run
        if not run or event_time >= run[-1][0]:
            run.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def pop_ready(self, wall_now: Optional[float] = None) -> list[Entry]:
        """``(event time, arrival number, item)`` of every item whose event time is at or
        before the watermark minus the lateness, in event-time order."""
        watermark = self.max_time if wall_now is None else max(self.max_time, wall_now)
        threshold = watermark - self.lateness_s
        ready: list[Entry] = []
        run, heap = self._run, self._heap
        if not heap:
            popleft = run.popleft
            while run and run[0][0] <= threshold:
                ready.append(popleft())
        else:
            while run or heap:
                if heap and (not run or heap[0] < run[0]):
                    if heap[0][0] > threshold:
                        break
                    ready.append(heapq.heappop(heap))
                else:
                    if run[0][0] > threshold:
                        break
                    ready.append(run.popleft())
        if ready and ready[-1][0] > self.released_until:
            self.released_until = ready[-1][0]
        return ready

    def drain(self) -> list[Entry]:
        """Everything still buffered, in event-time order (end of a finite input)."""
        ready = sorted([*self._run, *self._heap])
        if ready:
            self.released_until = max(self.released_until, ready[-1][0])
        self._run.clear()
        self._heap.clear()
        return ready

    def items(self) -> list[tuple[float, Any]]:
        """The buffered items in order, for a snapshot."""
        return [(t, item) for t, _, item in sorted([*self._run, *self._heap])]
