"""Sinks: ``add(item)`` buffers, ``flush()`` writes. A runner marks work done
(commits offsets, advances its checkpoint) only after every sink flushed."""

from .clickhouse import AlertSink, DeadLetterSink, EventSink

__all__ = ["AlertSink", "DeadLetterSink", "EventSink"]
