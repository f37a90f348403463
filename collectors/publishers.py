"""Publishers: the :class:`~mcpsift.collectors.sink.EventSink`\\ s that ship a
hook's events to ``mcpsift serve`` (:class:`HttpPublisher`) or to a Kafka
topic (:class:`KafkaPublisher`) without slowing the MCP server down and
without losing events when the other end is away.

**The request path only enqueues.** A hook calls :meth:`Publisher.submit` on
the MCP request path; it serialises the event (``orjson``), appends it to a
bounded in-memory queue and returns, never touching the network or the disk.
A sender -- a daemon thread running its own asyncio loop, so it works the
same under an async host (an MCP server under uvicorn) and from sync code,
and never competes with the host's loop -- batches events (``batch_size``,
``linger_ms``) and sends them.

**When the other end is unreachable** (connection refused, timeout, HTTP
5xx/429, a broker error) the sender retries with exponential backoff and full
jitter (``backoff_base``, ``backoff_max``). After ``retries`` failed attempts
in a row or ``spill_after`` seconds, whichever comes first, it declares an
outage and *spills*: every queued event goes to the on-disk spool
(:mod:`mcpsift.collectors.spool`, given by ``spool_dir``), and so does
everything submitted while the outage lasts (moved every 0.1 s). A send that
hangs longer than ``spill_after`` spills the same way while it waits. Under
``full_policy="drop_newest"`` the sender also spills whenever the queue
passes ``spill_watermark`` of its size (it is behind). The spool is replayed
oldest first, before anything newer is sent -- also at start, so events left
by a previous run (a crash, a shutdown during an outage) go out first -- so
one session's events stay in order through an outage. Without a spool the
queue holds what it can and the newest events beyond ``queue_size`` are
dropped and counted.

**When the spool is full** too, ``full_policy`` decides: ``"drop_newest"``
(default) drops the newest events and counts them (``status()["dropped"]``,
``dropped_by_reason["spool_full"]``); ``"block"`` makes :meth:`submit` wait
(up to ``block_timeout``) until there is room -- only for producers off the
MCP request path (a log shipper, a batch import).

**Delivery** is at least once; duplicates (a batch resent after an answer
was lost) are removed downstream, where the pipeline is idempotent on
``event_id``. Events the receiver refuses for good -- ``mcpsift serve``'s
``rejected`` verdicts (it dead-letters them), a record too large for the
broker -- are counted in ``rejected`` and not retried.

**Lifecycle.** ``start()`` starts the sender (``submit`` does it on first use
unless ``autostart=False``); ``flush(timeout)`` waits until the queue and the
spool are empty; ``close(timeout)`` stops accepting, keeps sending until
everything is out or ``timeout`` passes, then moves what is left to the spool
for the next start (without a spool it is counted as dropped) and stops the
sender. ``with publisher:`` / ``async with publisher:`` start and close;
``aflush`` / ``aclose`` are the awaitable forms (they wait in a worker thread,
not on the host's loop). A publisher still open at interpreter exit is closed
with ``exit_timeout`` seconds.

**What a crash loses** (``kill -9`` of the host process) is what was still
in memory: in healthy operation the events not yet acknowledged (at most
``linger_ms`` of events plus the batch in flight); during an outage or a
hanging send, the events submitted in the first ``spill_after`` seconds
(or ``retries`` attempts) before the first spill, then at most the last
0.1 s of events (``spill_after=0`` spills on the first failure). Everything
in the spool survives a process crash under every fsync policy; an OS crash
or power loss loses what ``spool_fsync`` says (see
:mod:`mcpsift.collectors.spool`).

:func:`collector_status` reads a spool directory and the status its
publisher last wrote there (every ``status_interval`` seconds and at close),
for ``mcpsift collector status``.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as _dt
import json
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit, urlunsplit

import orjson

from .spool import MAX_RECORD_BYTES, FsyncPolicy, Spool, spool_status

__all__ = [
    "Publisher",
    "HttpPublisher",
    "KafkaPublisher",
    "event_key",
    "collector_status",
    "FullPolicy",
]

log = logging.getLogger("mcpsift.collector.publisher")

FullPolicy = Literal["drop_newest", "block"]

_MiB = 1024 * 1024
_EXTRA_HINT = "pip install 'mcpsift[collector]'"
_SPILL_TICK = 0.1  # seconds between spills while an outage lasts
_KEY_PATHS = (("session", "id"), ("principal", "subject"), ("token", "fingerprint"))


def event_key(event: dict[str, Any]) -> bytes:
    """The Kafka message key of an event (docs/events.md "Keys and ordering"):
    the session id, else the principal subject, else the token fingerprint,
    else the event id -- so one session's events stay in one partition, in order."""
    for outer, inner in _KEY_PATHS:
        obj = event.get(outer)
        if isinstance(obj, dict):
            value = obj.get(inner)
            if isinstance(value, str) and value:
                return value.encode()
    return str(event.get("event_id", "")).encode()


def _build_deferred() -> None:
    """Events the hooks build just after a response (off the request path) must
    reach this publisher before it flushes or closes."""
    from .build import flush_pending

    flush_pending()


def _utcnow() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _CutByClose(Exception):
    """close()'s timeout ran out while a batch was being sent."""


class _RetryLater(Exception):
    """A send that did not go through and must be tried again."""

    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Delivered:
    sent: int
    rejected: int = 0


@dataclass
class _Batch:
    source: Literal["queue", "spool"]
    items: list[tuple[Optional[bytes], bytes]]
    spool_batch: Any = None


def _close_at_exit(ref: "weakref.ReferenceType[Publisher]") -> None:
    pub = ref()
    if pub is not None and not pub.closed:
        pub.close(pub.exit_timeout)


class Publisher:
    """Base of the publishers: the queue, the sender thread, retries, the spool
    and ``status()``. Subclasses say how to send one batch (``_send``).

    Parameters common to every publisher:

    * ``queue_size``: events held in memory (default 10,000);
    * ``batch_size`` / ``max_batch_bytes``: the largest batch sent at once;
    * ``linger_ms``: how long the sender waits for a batch to fill (default 20 ms);
    * ``timeout``: seconds one send may take before it counts as failed;
    * ``retries`` / ``spill_after``: an outage is declared (and events spilled
      to the spool) after that many failed attempts in a row or that many
      seconds, whichever comes first; sending is retried for as long as it takes;
    * ``backoff_base`` / ``backoff_max``: exponential backoff with full jitter
      between attempts, in seconds;
    * ``spool_dir`` (None: no spool), ``spool_max_bytes``, ``spool_fsync``
      (``always`` | ``interval`` | ``never``), ``spool_fsync_interval``;
    * ``full_policy`` (``drop_newest`` | ``block``) and ``block_timeout``;
    * ``spill_watermark``: fraction of ``queue_size`` above which the sender
      moves the queue to the spool even without an outage (default 0.5;
      ``drop_newest`` only -- under ``block`` the submitter waits instead);
    * ``status_interval``: seconds between status snapshots written to the spool dir;
    * ``autostart``: start the sender on the first ``submit`` (default True);
    * ``exit_timeout``: seconds the close at interpreter exit may take.
    """

    kind = "base"
    _keyed = False

    def __init__(
        self,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        max_batch_bytes: int = 4 * _MiB,
        linger_ms: float = 20.0,
        timeout: float = 10.0,
        retries: int = 3,
        spill_after: float = 2.0,
        backoff_base: float = 0.1,
        backoff_max: float = 30.0,
        spool_dir: Optional[str | os.PathLike[str]] = None,
        spool_max_bytes: int = 256 * _MiB,
        spool_fsync: FsyncPolicy = "interval",
        spool_fsync_interval: float = 1.0,
        full_policy: FullPolicy = "drop_newest",
        block_timeout: Optional[float] = None,
        spill_watermark: float = 0.5,
        status_interval: float = 5.0,
        autostart: bool = True,
        exit_timeout: float = 5.0,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if full_policy not in ("drop_newest", "block"):
            raise ValueError(f"full_policy={full_policy!r}: choose 'drop_newest' or 'block'")
        if not 0 < spill_watermark <= 1:
            raise ValueError(f"spill_watermark={spill_watermark}: give a fraction in (0, 1]")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout}: give a positive number of seconds")
        self.queue_size = int(queue_size)
        self.batch_size = int(batch_size)
        self.max_batch_bytes = int(max_batch_bytes)
        self.linger = max(0.0, linger_ms / 1000.0)
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.spill_after = max(0.0, float(spill_after))
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.full_policy = full_policy
        self.block_timeout = block_timeout
        self.status_interval = float(status_interval)
        self.autostart = autostart
        self.exit_timeout = float(exit_timeout)
        self._watermark = max(1, int(self.queue_size * spill_watermark))

        self.spool: Optional[Spool] = None
        if spool_dir is not None:
            self.spool = Spool(
                spool_dir,
                max_bytes=spool_max_bytes,
                fsync=spool_fsync,
                fsync_interval=spool_fsync_interval,
                full_policy=full_policy,
                block_timeout=block_timeout,
            )

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiters = 0
        self._queue: deque[tuple[Optional[bytes], bytes]] = deque()
        self._inflight: Optional[list[tuple[Optional[bytes], bytes]]] = None
        self._inflight_spooled = 0  # how many of the in-flight items a spill already put in the spool
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._wake: Optional[asyncio.Event] = None
        self._kick: Optional[asyncio.Event] = None
        self._pressure: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self._closing = False
        self._closed = False
        self._deadline: Optional[float] = None
        self._urgent = 0  # flush() callers waiting: no lingering
        self._failures = 0
        self._failing_since: Optional[float] = None
        self._outage = False
        self._spool_full = False
        self._last_status_write = 0.0
        self._retry_after: Optional[float] = None
        self._sync_tick = max(0.05, spool_fsync_interval / 4)

        # counters (submitted/dropped under the lock by submitters; the rest by the sender)
        self.submitted = 0
        self.sent = 0
        self.rejected = 0
        self.failed = 0
        self.retried = 0
        self.spilled = 0
        self.replayed = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.connected = False
        self.last_error: Optional[str] = None
        self.last_error_at: Optional[str] = None
        self.last_sent_at: Optional[str] = None

        self._atexit = lambda ref=weakref.ref(self): _close_at_exit(ref)
        atexit.register(self._atexit)

    # -- the request path ------------------------------------------------------

    def submit(self, event: dict[str, Any]) -> bool:
        """Take one event. Called by a hook on the MCP request path: serialises it
        and appends it to the in-memory queue; never awaits the network, never
        raises. ``False`` when the event was dropped (queue and spool full,
        publisher closed, or the event is not serialisable), counted in
        ``status()["dropped"]``. Blocks only under ``full_policy="block"``."""
        try:
            return self._submit(event)
        except Exception:  # pragma: no cover - never let a hook's request fail because of us
            self._drop("error")
            log.exception("%s publisher: could not take an event", self.kind)
            return False

    def _submit(self, event: dict[str, Any]) -> bool:
        try:
            value = orjson.dumps(event)
            key = event_key(event) if self._keyed else None
        except Exception:
            self._drop("invalid")
            if self.dropped_by_reason.get("invalid") == 1:
                log.warning("%s publisher: dropped an event that is not JSON-serialisable (a hook bug)", self.kind)
            return False
        if len(value) > MAX_RECORD_BYTES or len(value) > self.max_batch_bytes:
            self._drop("too_large")
            return False
        if self._thread is None and self.autostart and not self._closing:
            try:
                self.start()
            except Exception:  # pragma: no cover - a thread that cannot start
                log.exception("%s publisher: could not start the sender", self.kind)
        with self._lock:
            if self._closing:
                self._drop_locked("closed")
                return False
            q = self._queue
            if len(q) >= self.queue_size:
                if not self._wait_for_room_locked():
                    self._drop_locked("spool_full" if self._spool_full else "queue_full")
                    return False
            q.append((key, value))
            n = len(q)
            self.submitted += 1
        if n == 1 or n == self.batch_size:
            self._signal("_wake")
        if n == self._watermark or n == self.queue_size:
            self._signal("_pressure")
        return True

    def _wait_for_room_locked(self) -> bool:
        if self.full_policy != "block" or threading.current_thread() is self._thread:
            return False
        deadline = None if self.block_timeout is None else time.monotonic() + self.block_timeout
        self._waiters += 1
        try:
            while len(self._queue) >= self.queue_size and not self._closing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining if remaining is not None else 1.0)
        finally:
            self._waiters -= 1
        return not self._closing

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._drop_locked(reason)

    def _drop_locked(self, reason: str, n: int = 1) -> None:
        self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + n

    def _signal(self, name: str) -> None:
        loop = self._loop
        event = getattr(self, name)
        if loop is None or event is None:
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop is closed: the publisher is shutting down
            pass

    def _notify_changed(self) -> None:
        if self._waiters:
            with self._lock:
                self._changed.notify_all()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> "Publisher":
        """Start the sender thread (idempotent). Events left in the spool by a
        previous run are sent first."""
        with self._lock:
            if self._closing:
                raise RuntimeError(f"this {self.kind} publisher is closed; create a new one")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._thread_main, name=f"mcpsift-{self.kind}-publisher", daemon=True
            )
            self._thread.start()
        self._ready.wait(10)
        return self

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event submitted so far is delivered (queue and spool
        empty); ``False`` if ``timeout`` seconds passed first. Cuts a retry
        backoff short once."""
        _build_deferred()
        if self._thread is None:
            with self._lock:
                if self._drained_locked():
                    return True
            if self._closing:
                return False
            self.start()
        deadline = time.monotonic() + timeout
        with self._lock:
            self._urgent += 1
        self._signal("_kick")
        self._signal("_wake")
        try:
            with self._lock:
                self._waiters += 1
                try:
                    while not self._drained_locked():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or (self._thread is not None and not self._thread.is_alive()):
                            return self._drained_locked()
                        self._changed.wait(min(remaining, 0.5))
                    return True
                finally:
                    self._waiters -= 1
        finally:
            with self._lock:
                self._urgent -= 1

    def close(self, timeout: float = 10.0) -> bool:
        """Stop accepting events, keep sending for up to ``timeout`` seconds, then
        move what is left to the spool (counted as dropped without one) and stop
        the sender. ``True`` when everything was delivered. Idempotent."""
        _build_deferred()
        with self._lock:
            if self._closed:
                return self._drained_locked()
            self._closing = True
            self._changed.notify_all()
        try:
            atexit.unregister(self._atexit)
        except Exception:  # pragma: no cover
            pass
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._deadline = time.monotonic() + max(0.0, timeout)
            self._signal("_kick")
            self._signal("_wake")
            thread.join(max(0.0, timeout) + self.timeout + 15.0)
            if thread.is_alive():  # pragma: no cover - a send that ignores its timeout
                log.error("%s publisher: the sender did not stop; %d events may be lost", self.kind, len(self._queue))
        else:
            self._finish_sync()
        with self._lock:
            self._closed = True
            return self._drained_locked()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Publisher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def astart(self) -> "Publisher":
        """``start()`` for async code (starting a thread does not block the loop)."""
        return self.start()

    async def aflush(self, timeout: float = 10.0) -> bool:
        """``flush()`` for async code: waits in a worker thread, not on the loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float = 10.0) -> bool:
        """``close()`` for async code (e.g. in an ASGI lifespan shutdown)."""
        return await asyncio.to_thread(self.close, timeout)

    async def __aenter__(self) -> "Publisher":
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- status ------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    def status(self) -> dict[str, Any]:
        """Counters and state: queue depth, spool records/bytes, sent, failed,
        dropped, retried, last error, connected. Cheap; safe from any thread."""
        with self._lock:
            depth = len(self._queue)
            inflight = len(self._inflight) if self._inflight else 0
            dropped_by_reason = dict(self.dropped_by_reason)
        spool = self.spool.status() if self.spool is not None else None
        return {
            "publisher": self.kind,
            "target": self._target(),
            "running": bool(self._thread is not None and self._thread.is_alive()),
            "closed": self._closed,
            "connected": self.connected,
            "outage": self._outage,
            "queue_depth": depth,
            "queue_capacity": self.queue_size,
            "in_flight": inflight,
            "submitted": self.submitted,
            "sent": self.sent,
            "rejected": self.rejected,
            "failed": self.failed,
            "retried": self.retried,
            "dropped": sum(dropped_by_reason.values()),
            "dropped_by_reason": dropped_by_reason,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "spool_records": spool["records"] if spool else 0,
            "spool_bytes": spool["bytes"] if spool else 0,
            "spool": spool,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_sent_at": self.last_sent_at,
        }

    def _drained_locked(self) -> bool:
        return not self._queue and self._inflight is None and (self.spool is None or self.spool.records == 0)

    def _write_status_file(self) -> None:
        if self.spool is None or self.spool.closed:
            return
        self._last_status_write = time.monotonic()
        snapshot = self.status()
        snapshot["pid"] = os.getpid()
        snapshot["written_at"] = _utcnow()
        path = self.spool.directory / "status.json"
        tmp = path.with_name(f"status.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2))
            os.replace(tmp, path)
        except OSError as exc:  # pragma: no cover - a full disk
            log.debug("could not write %s: %s", path, exc)

    # -- the sender (its own thread and loop) ------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()
        self._pressure = asyncio.Event()
        self._loop = loop
        self._ready.set()
        try:
            loop.run_until_complete(self._run())
        except BaseException:  # pragma: no cover - a bug in the sender: say it, lose nothing
            log.exception("%s publisher: the sender failed", self.kind)
            try:
                self._finish_sync()
            except Exception:
                log.exception("%s publisher: could not move the queue to the spool", self.kind)
        finally:
            self._loop = None
            try:
                # a client whose stop timed out may leave tasks behind: end them quietly
                leftover = asyncio.all_tasks(loop)
                for task in leftover:
                    task.cancel()
                if leftover:
                    loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
            with self._lock:
                self._changed.notify_all()

    async def _run(self) -> None:
        watcher = asyncio.get_running_loop().create_task(self._watch_pressure())
        try:
            await self._send_loop()
        finally:
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                pass
            await self._finish()

    def _closing_due(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    async def _send_loop(self) -> None:
        assert self._wake is not None and self._kick is not None
        while True:
            if self._deadline is not None:
                with self._lock:
                    drained = self._drained_locked()
                if drained or self._closing_due():
                    return
            self._wake.clear()
            self._housekeeping()
            spool_pending = self.spool is not None and self.spool.records > 0
            if not spool_pending:
                n = len(self._queue)
                if n == 0:
                    self._notify_changed()
                    await self._wait(self._wake, self._sync_tick if self.spool is not None else 1.0)
                    continue
                if n < self.batch_size and not self._urgent and self._deadline is None and self.linger > 0:
                    await self._wait(self._wake, self.linger)  # set early when the batch is full
            batch = self._take_batch()
            if batch is None:
                continue
            ok = await self._attempt(batch)
            if ok:
                self._notify_changed()
                continue
            await self._backoff()

    async def _watch_pressure(self) -> None:
        """Spill when the queue passes the watermark, even while a send is in flight."""
        assert self._pressure is not None
        while True:
            await self._pressure.wait()
            self._pressure.clear()
            # under "block" a full queue makes submit wait instead: no need for the disk
            if self.spool is not None and self.full_policy == "drop_newest" and len(self._queue) >= self._watermark:
                self._spill()

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _housekeeping(self) -> None:
        if self.spool is not None:
            self.spool.sync_if_due()
            if time.monotonic() - self._last_status_write >= self.status_interval:
                self._write_status_file()

    def _take_batch(self) -> Optional[_Batch]:
        if self.spool is not None and self.spool.records > 0:
            sb = self.spool.peek(self.batch_size, self.max_batch_bytes)
            if sb.payloads:
                return _Batch("spool", [self._item_from_record(p) for p in sb.payloads], sb)
        with self._lock:
            q = self._queue
            items: list[tuple[Optional[bytes], bytes]] = []
            size = 0
            while q and len(items) < self.batch_size:
                if items and size + len(q[0][1]) > self.max_batch_bytes:
                    break
                item = q.popleft()
                items.append(item)
                size += len(item[1])
            if not items:
                return None
            self._inflight = items
            self._inflight_spooled = 0
            if self._waiters:
                self._changed.notify_all()
        return _Batch("queue", items)

    def _item_from_record(self, payload: bytes) -> tuple[Optional[bytes], bytes]:
        if not self._keyed:
            return None, payload
        try:
            event = orjson.loads(payload)
            return (event_key(event) if isinstance(event, dict) else b""), payload
        except orjson.JSONDecodeError:
            return b"", payload

    async def _attempt(self, batch: _Batch) -> bool:
        error: Optional[str] = None
        retry_after: Optional[float] = None
        result: Optional[_Delivered] = None
        if self._closing_due():
            self._failed(batch, None, None)
            return False
        else:
            try:
                result = await self._send_watched(batch.items, self.timeout)
            except _CutByClose:
                await self._reset_connection()
                self._failed(batch, None, None)
                return False
            except _RetryLater as exc:
                error, retry_after = str(exc), exc.retry_after
            except asyncio.TimeoutError:
                error = f"no answer from {self._target()} within {self.timeout:g} s"
                await self._reset_connection()
            except Exception as exc:  # a bug or an error we did not foresee: retry, and say what
                error = f"{type(exc).__name__}: {exc}"
                log.warning("%s publisher: unexpected error while sending", self.kind, exc_info=True)
                await self._reset_connection()
        if self._failures:
            self.retried += 1
        if result is not None:
            self._delivered(batch, result)
            return True
        self._failed(batch, error or "failed", retry_after)
        return False

    async def _send_watched(self, items: list[tuple[Optional[bytes], bytes]], limit: float) -> _Delivered:
        """``_send`` with a time limit; while it hangs longer than ``spill_after``
        (a target that accepts connections but does not answer), what waits in
        memory is moved to the spool meanwhile, as in an outage."""
        task = asyncio.ensure_future(self._send(items))
        started = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                left = limit - (now - started)
                if left <= 0:
                    raise asyncio.TimeoutError
                if self._deadline is not None:  # close() cuts a hanging send short
                    if self._deadline <= now:
                        raise _CutByClose
                    left = min(left, self._deadline - now)
                done, _ = await asyncio.wait({task}, timeout=min(left, _SPILL_TICK))
                if done:
                    return task.result()
                if self.spool is not None and time.monotonic() - started >= self.spill_after:
                    self._spill()
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:
                    pass

    def _delivered(self, batch: _Batch, result: _Delivered) -> None:
        if batch.source == "spool":
            assert self.spool is not None
            self.spool.commit(batch.spool_batch)
            self.replayed += len(batch.items)
        else:
            if self._inflight_spooled and self.spool is not None:
                # a spill copied these to the spool while they were in flight: they are delivered
                self.spool.skip(self._inflight_spooled)
            with self._lock:
                self._inflight = None
                self._inflight_spooled = 0
        self.sent += result.sent
        self.rejected += result.rejected
        if self._failures:
            log.info("%s publisher: %s reachable again after %d failed attempts", self.kind, self._target(),
                     self._failures)
        self._failures = 0
        self._failing_since = None
        self._outage = False
        self.connected = True
        self.last_sent_at = _utcnow()

    def _failed(self, batch: _Batch, error: Optional[str], retry_after: Optional[float]) -> None:
        """A batch did not go through: its events are kept (queue head or spool).
        ``error`` None: close()'s timeout cut it short, which says nothing of the target."""
        if batch.source == "queue":
            with self._lock:
                inflight = self._inflight or []
                back = inflight[self._inflight_spooled :]
                self._queue.extendleft(reversed(back))  # oldest first again
                self._inflight = None
                self._inflight_spooled = 0
        if error is None:
            return
        now = time.monotonic()
        self._failures += 1
        self.failed += 1
        self.connected = False
        self._retry_after = retry_after
        if self._failing_since is None:
            self._failing_since = now
        if self.last_error != error or self._failures == 1:
            log.warning("%s publisher: %s (attempt %d; events are kept%s)", self.kind, error, self._failures,
                        ", spilling to the spool" if self.spool is not None else " in memory")
        self.last_error = error
        self.last_error_at = _utcnow()
        if not self._outage and (self._failures >= self.retries or now - self._failing_since >= self.spill_after):
            self._outage = True
        if self._outage:
            self._spill()

    async def _backoff(self) -> None:
        assert self._kick is not None
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** min(self._failures - 1, 30)))
        delay = random.uniform(0, ceiling)
        retry_after = self._retry_after
        if retry_after:
            delay = max(delay, min(retry_after, self.backoff_max))
        end = time.monotonic() + delay
        while True:
            now = time.monotonic()
            if now >= end or self._closing_due():
                return
            if self._kick.is_set():
                self._kick.clear()
                return
            if self._outage and self._queue:
                self._spill()
            elif not self._outage and self.spill_after and self._failing_since is not None and \
                    now - self._failing_since >= self.spill_after:
                self._outage = True
                self._spill()
            self._housekeeping()
            await self._wait(self._kick, min(end - now, _SPILL_TICK))

    def _spill(self) -> int:
        """Move the in-flight items not yet spooled and the queue, in order, to the
        spool (never blocking on a full spool: what does not fit stays queued)."""
        if self.spool is None:
            return 0
        with self._lock:
            queued = list(self._queue)
        inflight = self._inflight[self._inflight_spooled :] if self._inflight else []
        items = inflight + queued
        if not items:
            return 0
        try:
            n = self.spool.append_many([v for _, v in items], block=False)
        except (OSError, ValueError) as exc:
            self.last_error = f"cannot write the spool {self.spool.directory}: {exc}; events stay in memory"
            self.last_error_at = _utcnow()
            log.error("%s publisher: %s", self.kind, self.last_error)
            return 0
        from_inflight = min(n, len(inflight))
        if self._inflight is not None:
            self._inflight_spooled += from_inflight
        with self._lock:
            for _ in range(n - from_inflight):
                self._queue.popleft()
            if self._waiters:
                self._changed.notify_all()
        self.spilled += n
        full = n < len(items)
        if full and not self._spool_full:
            log.error("%s publisher: the spool %s is full (%d bytes); %s", self.kind, self.spool.directory,
                      self.spool.max_bytes,
                      "newest events are dropped" if self.full_policy == "drop_newest" else "submit() blocks")
        self._spool_full = full
        return n

    async def _finish(self) -> None:
        """The sender stops: what is left goes to the spool; then the connection closes."""
        self._spill_all_at_close()
        try:
            await asyncio.wait_for(self._disconnect(), 5.0)
        except Exception:  # pragma: no cover - best effort at shutdown
            log.debug("%s publisher: disconnect failed", self.kind, exc_info=True)
        if self.spool is not None:
            self._write_status_file()
            self.spool.close()

    def _finish_sync(self) -> None:
        """``close()`` of a publisher whose sender never ran."""
        self._spill_all_at_close()
        if self.spool is not None and not self.spool.closed:
            self._write_status_file()
            self.spool.close()

    def _spill_all_at_close(self) -> None:
        if self.spool is not None and not self.spool.closed:
            self._spill()
        with self._lock:
            left = len(self._queue) + (len(self._inflight) - self._inflight_spooled if self._inflight else 0)
            if left:
                self._queue.clear()
                self._inflight = None
                self._drop_locked("closed", left)
        if left:
            log.warning("%s publisher: %d events could not be delivered or spooled before close and are lost%s",
                        self.kind, left, "" if self.spool is not None else "; give the publisher a spool_dir")

    # -- what a subclass provides ------------------------------------------------

    def _target(self) -> str:
        return self.kind

    async def _send(self, items: list[tuple[Optional[bytes], bytes]]) -> _Delivered:
        """Send one batch; return what was delivered, raise :class:`_RetryLater` when
        it must be tried again. Runs on the sender's loop."""
        raise NotImplementedError

    async def _reset_connection(self) -> None:
        """After a timeout or an unknown error: drop the connection, build a new one
        on the next attempt."""
        try:
            await asyncio.wait_for(self._disconnect(), min(5.0, self.timeout))
        except Exception:
            pass

    async def _disconnect(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target()!r}, queue={len(self._queue)}, sent={self.sent})"


# -- HTTP ----------------------------------------------------------------------


class HttpPublisher(Publisher):
    """Sends events to ``mcpsift serve``'s ``POST /v1/events`` as NDJSON.

    ``url`` is the ingest URL (a base URL such as ``http://mcpsift:8000`` gets
    ``/v1/events`` appended). ``ingest_key`` is sent as ``Authorization:
    Bearer <key>`` (never logged). A 202 means the batch is stored; its
    ``rejected`` verdicts are dead-lettered by serve and counted here, not
    retried; a 422 (none valid) and a 400 likewise. A 413 splits the batch.
    Connection errors, timeouts, 5xx, 429 and other answers (401/403: check the
    key; 404: check the URL) are retried -- the events are kept meanwhile.
    Needs ``httpx`` (``pip install 'mcpsift[collector]'``).
    """

    kind = "http"

    def __init__(
        self,
        url: str,
        *,
        ingest_key: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
        verify: Any = True,
        **options: Any,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url={url!r}: give the ingest URL of mcpsift serve, e.g. http://127.0.0.1:8000/v1/events")
        if parts.path in ("", "/"):
            parts = parts._replace(path="/v1/events")
        self.url = urlunsplit(parts)
        # what logs and status show: no credentials, no query
        self._display_url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="", fragment=""))
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise ImportError(f"HttpPublisher needs httpx: {_EXTRA_HINT}") from None
        self._headers = {"content-type": "application/x-ndjson", "user-agent": "mcpsift-collector"}
        self._headers.update(headers or {})
        if ingest_key:
            self._headers["authorization"] = f"Bearer {ingest_key}"
        self._verify = verify
        self._client: Any = None
        super().__init__(**options)

    def _target(self) -> str:
        return self._display_url

    async def _client_get(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout, verify=self._verify, headers=self._headers)
        return self._client

    async def _send(self, items: list[tuple[Optional[bytes], bytes]]) -> _Delivered:
        import httpx

        client = await self._client_get()
        body = b"\n".join(v for _, v in items)
        try:
            response = await client.post(self.url, content=body)
        except httpx.HTTPError as exc:
            await self._reset_connection()
            raise _RetryLater(f"cannot reach {self._display_url}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status in (202, 422):
            try:
                answer = orjson.loads(response.content)
                accepted, rejected = int(answer["accepted"]), int(answer["rejected"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise _RetryLater(f"{self._display_url} answered {status} without verdicts; is it mcpsift serve?")
            if rejected:
                reasons = [r.get("reason") for r in answer.get("results", []) if r.get("status") == "rejected"]
                log.warning("http publisher: serve rejected %d of %d events (kept there as dead letters); "
                            "first reason: %s", rejected, len(items), reasons[0] if reasons else "?")
            return _Delivered(accepted, rejected)
        if status == 400:
            log.error("http publisher: serve refused a batch of %d events as malformed (kept there as a dead "
                      "letter): %s", len(items), response.text[:300])
            return _Delivered(0, len(items))
        if status == 413:
            if len(items) == 1:
                log.error("http publisher: one event is larger than serve's max_body_bytes; dropped (rejected)")
                return _Delivered(0, 1)
            half = len(items) // 2
            first = await self._send(items[:half])
            second = await self._send(items[half:])
            return _Delivered(first.sent + second.sent, first.rejected + second.rejected)
        retry_after = _retry_after(response.headers.get("retry-after"))
        hint = {
            401: "; set ingest_key to a key mcpsift serve accepts",
            403: "; the ingest key is not allowed to ingest",
            404: "; check that the url ends with /v1/events",
        }.get(status, "")
        raise _RetryLater(f"{self._display_url} answered HTTP {status}{hint}", retry_after)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# -- Kafka ---------------------------------------------------------------------


class KafkaPublisher(Publisher):
    """Produces events to a Kafka topic with aiokafka: ``acks="all"``, an
    idempotent producer, batching (``kafka_linger_ms``, ``kafka_batch_bytes``),
    the message key per docs/events.md "Keys and ordering" (:func:`event_key`),
    the value the event's JSON bytes.

    A broker that cannot be reached (at start or later) is an outage like any
    other: events spill to the spool and are replayed in order. After a failed
    batch the producer is rebuilt (a new producer id), so a broker that lost its
    state is handled; a batch that partly went through is sent again
    (duplicates are removed downstream by ``event_id``). A record larger than
    the broker accepts is counted as rejected. ``producer_options`` go to
    ``AIOKafkaProducer`` as they are (``security_protocol``, ``ssl_context``,
    ``sasl_*``, ``compression_type``...). Needs ``aiokafka``
    (``pip install 'mcpsift[collector]'``).
    """

    kind = "kafka"
    _keyed = True

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        topic: str = "mcp.events",
        *,
        client_id: str = "mcpsift-collector",
        enable_idempotence: bool = True,
        kafka_linger_ms: float = 5.0,
        kafka_batch_bytes: int = 512 * 1024,
        max_request_size: int = 4 * _MiB,
        producer_options: Optional[dict[str, Any]] = None,
        **options: Any,
    ) -> None:
        try:
            import aiokafka  # noqa: F401
        except ImportError:
            raise ImportError(f"KafkaPublisher needs aiokafka: {_EXTRA_HINT}") from None
        if not topic:
            raise ValueError("topic must be a non-empty Kafka topic name")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.client_id = client_id
        self.enable_idempotence = enable_idempotence
        self._producer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": enable_idempotence,
            "linger_ms": int(kafka_linger_ms),
            "max_batch_size": int(kafka_batch_bytes),
            "max_request_size": int(max_request_size),
        }
        self._producer_config.update(producer_options or {})
        self._producer: Any = None
        super().__init__(**options)
        self._producer_config.setdefault("request_timeout_ms", int(self.timeout * 1000))

    def _target(self) -> str:
        servers = self.bootstrap_servers if isinstance(self.bootstrap_servers, str) else ",".join(self.bootstrap_servers)
        return f"kafka://{servers}/{self.topic}"

    async def _producer_get(self) -> Any:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            if self.enable_idempotence:
                _init_producer_id_v3()
            producer = AIOKafkaProducer(**self._producer_config)
            try:
                await producer.start()
            except BaseException:
                try:
                    await asyncio.wait_for(producer.stop(), 5.0)
                except BaseException:
                    pass
                raise
            self._producer = producer
        return self._producer

    async def _send(self, items: list[tuple[Optional[bytes], bytes]]) -> _Delivered:
        from aiokafka.errors import KafkaError, MessageSizeTooLargeError

        try:
            producer = await self._producer_get()
        except KafkaError as exc:
            raise _RetryLater(f"cannot reach the Kafka broker at {self._target()}: {type(exc).__name__}: {exc}") from None
        rejected = 0
        futures = []
        try:
            for key, value in items:
                try:
                    futures.append(await producer.send(self.topic, value=value, key=key))
                except MessageSizeTooLargeError:
                    rejected += 1
        except KafkaError as exc:
            await self._reset_connection()
            raise _RetryLater(f"Kafka producer at {self._target()}: {type(exc).__name__}: {exc}") from None
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        too_large = [e for e in errors if isinstance(e, MessageSizeTooLargeError)]
        if len(too_large) != len(errors):
            await self._reset_connection()
            first = next(e for e in errors if not isinstance(e, MessageSizeTooLargeError))
            raise _RetryLater(f"Kafka broker at {self._target()} did not take {len(errors)} of {len(items)} events: "
                              f"{type(first).__name__}: {first}")
        rejected += len(too_large)
        if rejected:
            log.error("kafka publisher: %d events are larger than the broker accepts; dropped (rejected)", rejected)
        return _Delivered(len(items) - rejected, rejected)

    async def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), 5.0)
            except Exception:
                pass


_INIT_PID_PATCHED = False


def _init_producer_id_v3() -> None:
    """Teach aiokafka's idempotent producer InitProducerId v3.

    aiokafka (0.14) asks for a producer id with InitProducerId **v0** only.
    Brokers that implement the request from v3 on -- Tansu 0.6, the broker the
    tests run against, answers v0 with an error -- then refuse to start an
    idempotent producer. v3 (KIP-360) with ``producer_id=-1, producer_epoch=-1``
    is what the Java client sends for a new producer; the version is negotiated
    per broker (ApiVersions), so brokers that only know v0-v2 still get v0.
    Applied once, only while aiokafka itself knows no version above v2.
    """
    global _INIT_PID_PATCHED
    if _INIT_PID_PATCHED:
        return
    from aiokafka.producer import sender as _sender
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

    original = _sender.InitProducerIdRequest
    classes = getattr(original, "_CLASSES", ())
    if not classes or max(c.API_VERSION for c in classes) >= 3:
        _INIT_PID_PATCHED = True
        return
    v0 = classes[0]

    class InitProducerIdResponse_v3(Response):
        API_KEY = 22
        API_VERSION = 3
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            ("error_code", Int16),
            ("producer_id", Int64),
            ("producer_epoch", Int16),
            ("tags", TaggedFields),
        )

    class InitProducerIdRequest_v3(RequestStruct):
        API_KEY = 22
        API_VERSION = 3
        FLEXIBLE_VERSION = True
        RESPONSE_TYPE = InitProducerIdResponse_v3
        SCHEMA = Schema(
            ("transactional_id", CompactString("utf-8")),
            ("transaction_timeout_ms", Int32),
            ("producer_id", Int64),
            ("producer_epoch", Int16),
            ("tags", TaggedFields),
        )

    class InitProducerIdRequest(Request[v0 | InitProducerIdRequest_v3]):  # type: ignore[valid-type]
        API_KEY = 22

        def __init__(self, transactional_id: Optional[str], transaction_timeout_ms: int):
            self._transactional_id = transactional_id
            self._transaction_timeout_ms = transaction_timeout_ms

        def build(self, request_struct_class: Any) -> Any:
            if request_struct_class is InitProducerIdRequest_v3:
                return request_struct_class(self._transactional_id, self._transaction_timeout_ms, -1, -1, {})
            return request_struct_class(self._transactional_id, self._transaction_timeout_ms)

    _sender.InitProducerIdRequest = InitProducerIdRequest
    _INIT_PID_PATCHED = True


# -- status from the outside ---------------------------------------------------


def collector_status(spool_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``mcpsift collector status --spool-dir DIR`` shows: the spool's own
    state (records and bytes waiting, whether a process holds it) and the
    counters its publisher last wrote there (queue depth, sent, failed,
    dropped, retried, last error, connected; ``written_at`` says how old)."""
    spool = spool_status(spool_dir)
    path = Path(spool_dir) / "status.json"
    try:
        publisher: Optional[dict[str, Any]] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        publisher = None
    return {"spool": spool, "publisher": publisher, "running": spool["in_use"]}
