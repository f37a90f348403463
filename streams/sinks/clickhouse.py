"""ClickHouse sinks for events, alerts and dead letters.

Each ``flush()`` is one batched INSERT; writes are idempotent by the tables'
design (events by ``event_id``, alerts by ``alert_id``; see mcpsift.store).
"""

from __future__ import annotations

from typing import Any, Optional

from mcpsift.alerts import Alert
from mcpsift.store import Store

__all__ = ["EventSink", "AlertSink", "DeadLetterSink"]


class _BatchSink:
    def __init__(self, store: Store, max_batch: int = 10_000):
        self.store = store
        self.max_batch = max_batch
        self._items: list[Any] = []
        self.written = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Any) -> None:
        self._items.append(item)
        if len(self._items) >= self.max_batch:
            self.flush()

    def flush(self) -> int:
        """Write what is buffered; on error the items stay buffered for the next try."""
        if not self._items:
            return 0
        items = self._items
        self._write(items)
        self._items = []
        self.written += len(items)
        return len(items)

    def discard(self) -> int:
        """Drop what is buffered (the caller reports the failure instead); returns how many."""
        dropped = len(self._items)
        self._items = []
        return dropped

    def _write(self, items: list[Any]) -> None:
        raise NotImplementedError


class EventSink(_BatchSink):
    """Rows made by :func:`mcpsift.store.event_row`."""

    def _write(self, items: list[Any]) -> None:
        self.store.insert_events(items)


class AlertSink(_BatchSink):
    """Alerts, then (when an outbox is given) their pending SIEM deliveries: an
    alert reaches an output only after it is stored."""

    def __init__(self, store: Store, max_batch: int = 10_000, outbox: Optional[Any] = None):
        super().__init__(store, max_batch)
        self.outbox = outbox

    def _write(self, items: list[Alert]) -> None:
        self.store.insert_alerts(items)
        if self.outbox is not None:
            self.outbox.enqueue(items)


class DeadLetterSink(_BatchSink):
    """Items are (source, reason, raw payload, position)."""

    def _write(self, items: list[Any]) -> None:
        self.store.insert_dead_letters(items)
