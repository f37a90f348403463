"""Three corrections to faust-streaming 0.15's offset handling, without which a
worker restarted after a crash can lose a message for good (the crash test in
tests/test_worker.py found it: one event of 6,000, in about one run of three on
a loaded machine, always in the first batch after the restart).

How the loss happens, in faust's own code:

1. At the end of recovery faust resumes the stream partitions, then seeks them
   to their committed offsets, then resumes flow control -- and resuming flow
   control *clears every stream queue* (``clear_on_resume``). A message
   fetched between the resume and the seek sits in a queue, faust has already
   moved its read position past it, and the clear drops it: it is never
   handled and never fetched again (faust-streaming issue #596).
2. The same seek makes the message fetched next look like the end of a gap
   (its offset is above the position the seek set), so faust records the
   offsets in between as "gap" -- offsets it treats as acknowledged when it
   commits.
3. A commit may pass an unacknowledged message at the head: faust checks
   ``min(acked) - committed > 1`` where at-least-once needs ``> 0``, so the
   message *at* the committed offset is skipped (issue #606). After 1, the
   lost message's offset is committed over and the loss is permanent.

The corrections: :class:`FlowControl` does not clear queues on resume (a
revocation still clears them, explicitly); :class:`SafeConsumer` records gaps
only for offsets it never delivered, and commits only a run of acknowledged
offsets that starts at the committed offset (or, with nothing committed yet, at
the first offset it delivered). A message that is somehow never acknowledged
now holds its partition's commit -- lag that shows, and a redelivery after a
restart -- instead of being skipped. Messages fetched twice around a seek are
delivered twice; every step of the worker is idempotent (streams/app.py).
"""

from __future__ import annotations

from typing import Any, Optional

import faust
from faust.transport.drivers.aiokafka import Consumer as _AIOKafkaConsumer
from faust.utils.functional import consecutive_numbers
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

__all__ = ["App", "FlowControl", "SafeConsumer"]


class App(faust.App):  # type: ignore[misc]
    """A faust App with the corrected flow control and consumer."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return FlowControl(loop=self.loop)

    def _new_consumer(self) -> Any:
        return SafeConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.loop,
        )


class FlowControl(FlowControlEvent):
    """faust's flow control, except that resuming flow keeps what the stream queues
    hold (they are cleared when partitions are revoked, by an explicit ``clear``)."""

    def resume(self) -> None:
        self._suspend.clear()
        self._resume.set()


class SafeConsumer(_AIOKafkaConsumer):
    """faust's aiokafka consumer with at-least-once commits (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: tp -> [lowest, highest] offset delivered to the streams since its assignment
        self._delivered: dict[Any, list[int]] = {}

    def track_message(self, message: Any) -> None:
        super().track_message(message)
        span = self._delivered.get(message.tp)
        offset = message.offset
        if span is None:
            self._delivered[message.tp] = [offset, offset]
        elif offset > span[1]:
            span[1] = offset
        elif offset < span[0]:
            span[0] = offset

    async def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:  # their queued messages are cleared: delivered no more
            self._delivered.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # offset_from .. offset_to - 1 were not seen in sequence; if every one of them
        # was delivered (before a seek moved the read position back), none is missing
        span = self._delivered.get(tp)
        if span is not None and span[0] <= offset_from and offset_to - 1 <= span[1]:
            return
        await super()._add_gap(tp, offset_from, offset_to)

    def _new_offset(self, tp: Any) -> Optional[int]:
        """The offset to commit for ``tp``: one past the run of acknowledged (or truly
        absent) offsets that starts at the committed offset; None while the message
        at the committed offset is not acknowledged."""
        acked = self._acked[tp]
        if not acked:
            return None
        expected = self._committed_offset[tp]
        if expected is None:
            span = self._delivered.get(tp)
            expected = span[0] if span is not None else None
        gaps = self._gap[tp]
        if gaps:
            top = max(acked)
            absent = [o for interval in sorted(gaps.overlap(0, top), key=lambda i: i.begin)
                      for o in range(interval.begin, interval.end)]
            if absent:
                acked.extend(absent)
                gaps.chop(0, max(absent[-1], top + 1))
        acked[:] = sorted({o for o in acked if expected is None or o >= expected})
        if not acked:
            return None
        if expected is not None and acked[0] > expected:
            return None  # the message at the head is still being handled (or was lost: hold)
        batch = next(consecutive_numbers(acked))
        del acked[: len(batch)]
        self._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1
