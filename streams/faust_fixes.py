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
restart -- instead of being skipped. Should a message still be delivered twice,
every step of the worker is idempotent (streams/app.py).

One more change is for speed, not safety: faust hands every fetched message to
the streams through ``wait_first(deliver, suspend_flow.wait())`` -- two tasks
per message, so that a delivery blocked during a rebalance can be abandoned --
which alone holds a do-nothing agent to about 10,000 messages/s on our 2-core
machine (30,000 without it). :meth:`SafeConsumer._drain_messages` delivers
directly when nothing can block the delivery (flow running, the producer
buffer below its limit, no full stream queue for the topic: then faust's
delivery never suspends) and keeps faust's way otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

import faust
from faust.transport.consumer import CONSUMER_FETCHING
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

    def _delivers_at_once(self, topic: str) -> bool:
        """True when delivering a message of ``topic`` cannot suspend: flow runs, the
        producer buffer is below its limit, and no stream queue of the topic is full
        (what faust's delivery waits on, in the conductor)."""
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        channels = app.topics._topic_name_index.get(topic)
        return channels is not None and not any(chan.queue.full() for chan in channels)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - run by every worker test
        # faust 0.15's Consumer._drain_messages, with one change: a message is
        # delivered directly when _delivers_at_once() (see the module doc)
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        at_once = self._delivers_at_once
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)  # getmany may not have released the loop
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > 100:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if at_once(message.topic):
                                await callback(message)
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)
