"""Where a hook puts the events it builds: an :class:`EventSink`.

A hook (SDK middleware, token verifier, ASGI middleware) calls
:meth:`EventSink.submit` on the MCP request path, so ``submit`` must never
block and never await the network: a publisher only enqueues into a bounded
in-memory queue there, and sends from its own task or thread.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["EventSink", "ListSink"]


@runtime_checkable
class EventSink(Protocol):
    def submit(self, event: dict[str, Any]) -> bool:
        """Take one event (a dict valid per docs/events.md). Never blocks, never
        raises; False when it had to drop the event (the sink counts that)."""
        ...


class ListSink:
    """Keeps submitted events in a list: for tests of a hook's own output and
    for debugging an integration (``sink.events``)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def submit(self, event: dict[str, Any]) -> bool:
        self.events.append(event)
        return True
