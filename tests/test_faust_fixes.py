"""The corrections to faust's offset handling (streams/faust_fixes.py), on the
consumer and flow control a real ``faust_fixes.App`` builds (no broker needed:
nothing here connects). The crash test in test_worker.py is what found the loss
these prevent; these pin each correction down on its own."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP
from faust.types.tuples import Message

from mcpsift.streams import faust_fixes

TOPIC = "mcp.events"
tp = TP(TOPIC, 0)


def _run(test: Any) -> None:
    async def main() -> None:
        app = faust_fixes.App("fixes-test", broker="kafka://127.0.0.1:9", autodiscover=False, web_enabled=False)
        app.topics._acking_topics.add(TOPIC)  # what subscribing an agent to the topic does
        await test(app, app.consumer)

    asyncio.run(main())


def _message(offset: int) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, None, None, b"v", None, tp=tp)


def _deliver_and_ack(consumer: Any, offsets: range, ack: Any = ()) -> dict[int, Message]:
    messages = {o: _message(o) for o in offsets}
    for m in messages.values():
        consumer.track_message(m)
    for o in ack:
        consumer.ack(messages[o])
    return messages


def test_the_app_uses_the_corrected_consumer_and_flow_control() -> None:
    async def test(app: Any, consumer: Any) -> None:
        assert isinstance(consumer, faust_fixes.SafeConsumer)
        assert isinstance(app.flow_control, faust_fixes.FlowControl)

    _run(test)


def test_a_commit_never_passes_the_unacknowledged_message_at_the_committed_offset() -> None:
    async def test(app: Any, consumer: Any) -> None:
        consumer._committed_offset[tp] = 2585
        messages = _deliver_and_ack(consumer, range(2585, 2590), ack=range(2586, 2590))
        # faust 0.15 returns 2590 here, skipping 2585 (faust-streaming #606)
        assert consumer._new_offset(tp) is None
        consumer.ack(messages[2585])
        assert consumer._new_offset(tp) == 2590

    _run(test)


def test_with_nothing_committed_the_run_starts_at_the_first_message_delivered() -> None:
    async def test(app: Any, consumer: Any) -> None:
        messages = _deliver_and_ack(consumer, range(100, 105), ack=range(101, 105))
        assert consumer._new_offset(tp) is None
        consumer.ack(messages[100])
        assert consumer._new_offset(tp) == 105

    _run(test)


def test_offsets_delivered_before_a_seek_back_are_no_gap_but_never_delivered_ones_are() -> None:
    async def test(app: Any, consumer: Any) -> None:
        consumer._committed_offset[tp] = 10
        messages = _deliver_and_ack(consumer, range(10, 21))
        # a seek back to 10 after 11..20 were delivered: faust sees 21 after 10 and calls it a gap
        await consumer._add_gap(tp, 11, 21)
        assert not consumer._gap[tp]
        for o in range(10, 15):
            consumer.ack(messages[o])
        assert consumer._new_offset(tp) == 15  # 15..20 are not acknowledged: not committed over
        consumer._committed_offset[tp] = 15
        # offsets never delivered (a transaction marker, a compacted record) are a real gap
        await consumer._add_gap(tp, 21, 23)
        for o in range(15, 21):
            consumer.ack(messages[o])
        last = _message(23)
        consumer.track_message(last)
        consumer.ack(last)
        assert consumer._new_offset(tp) == 24

    _run(test)


def test_resuming_flow_keeps_queued_messages_and_a_revocation_clear_drops_them() -> None:
    async def test(app: Any, consumer: Any) -> None:
        queue = app.FlowControlQueue(maxsize=10, clear_on_resume=True)
        for i in range(3):
            queue.put_nowait(i)
        app.flow_control.suspend()
        app.flow_control.resume()  # faust's own would drop the three (faust-streaming #596)
        assert queue.qsize() == 3 and app.flow_control.is_active()
        app.flow_control.clear()
        assert queue.qsize() == 0

    _run(test)


def test_a_message_is_delivered_directly_only_when_nothing_can_hold_its_delivery() -> None:
    async def test(app: Any, consumer: Any) -> None:
        topic = app.topic(TOPIC, value_type=bytes, value_serializer="raw")
        app.topics.add(topic)
        await app.topics._update_indices()
        assert not consumer._delivers_at_once(TOPIC), "flow control starts suspended: faust's way"
        app.flow_control.resume()
        assert consumer._delivers_at_once(TOPIC)
        assert not consumer._delivers_at_once("a-topic-no-stream-reads")
        for i in range(topic.queue.maxsize):
            topic.queue.put_nowait(i)
        assert not consumer._delivers_at_once(TOPIC), "a full stream queue would hold the delivery"
        topic.queue.clear()
        consumer.stop_flow()
        assert not consumer._delivers_at_once(TOPIC), "a stopped flow must be able to abandon the delivery"

    _run(test)
