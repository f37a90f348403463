"""The embedded runner: one process, ClickHouse in-process, no Kafka.

Data flow and the durability rule:

1. :meth:`EmbeddedRunner.ingest` validates and enriches a batch, appends the
   valid events to the ``events`` table (each with a new ``ingest_seq``) and
   the invalid ones to ``dead_letter``, *then* hands the events to the
   detection thread. The HTTP 202 is sent after that append: an accepted
   event is durable.
2. The detection thread pushes events through the pipeline (reorder by event
   time within the allowed lateness, detect) and writes alerts.
3. Every ``checkpoint_interval_s`` it flushes the alert sink and then saves a
   checkpoint: the ``ingest_seq`` of the last event it took, and a snapshot of
   the pipeline (detector state, events still in the reorder buffer, recent
   event ids).
4. At start, :meth:`EmbeddedRunner.recover` restores the last checkpoint and
   replays every stored event with a higher ``ingest_seq``: after a crash
   (``kill -9``) nothing accepted is lost, and because alert ids are
   deterministic and the alerts table is idempotent, nothing alerts twice.
"""

from __future__ import annotations

import datetime as _dt
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import msgspec

from mcpsift.events import EventRecord, InvalidEvent, encode_event
from mcpsift.settings import Settings
from mcpsift.store import Store, event_row
from mcpsift.store.chain import Chainer
from mcpsift.telemetry import Telemetry

from .outbox import Dispatcher, Outbox
from .pipeline import Pipeline
from .sinks import AlertSink, DeadLetterSink, EventSink

__all__ = ["EmbeddedRunner", "Verdict", "CHECKPOINT_NAME"]

log = logging.getLogger("mcpsift.embedded")

CHECKPOINT_NAME = "embedded"
_UTC = _dt.timezone.utc
_STOP = object()


@dataclass
class Verdict:
    index: int
    status: str  # "accepted" | "rejected"
    event_id: Optional[str] = None
    reason: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.event_id is not None:
            d["event_id"] = self.event_id
        if self.reason is not None:
            d["reason"] = self.reason
        return d


def _event_id_of(raw: bytes) -> Optional[str]:
    """Best-effort event_id of an invalid event, for its verdict."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    value = data.get("event_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


class EmbeddedRunner:
    def __init__(
        self, settings: Settings, store: Store, *, queue_batches: int = 64, telemetry: Optional[Telemetry] = None
    ):
        self.settings = settings
        self.store = store
        #: spans and metrics, per batch (docs/operations.md, "Self-telemetry"); component "serve"
        self.telemetry = telemetry or Telemetry.get("serve", settings.telemetry)
        self._alert_rules: Counter[str] = Counter()  # rule ids of alerts added but not yet flushed
        self.pipeline = Pipeline(settings)
        self._ingest_lock = threading.Lock()
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=queue_batches)
        self._events = EventSink(store, max_batch=1_000_000)
        self._dead = DeadLetterSink(store, max_batch=1_000_000)
        # SIEM outputs: alerts are stored, then queued per output, then sent
        self.dispatcher = Dispatcher(store, settings.outputs)
        self._alerts = AlertSink(store, outbox=Outbox(store, settings.outputs, self.dispatcher))
        # tamper evidence: every stored batch is hash-chained per tenant (mcpsift.store.chain)
        self.chain: Optional[Chainer] = Chainer(store) if settings.tamper_evidence else None
        self.ingest_seq = 0
        self.taken_seq = 0  # last ingest_seq pushed into the pipeline
        self.checkpoint_seq = 0
        self.alerts_written = 0
        self.accepted = 0
        self.rejected = 0
        self._thread: Optional[threading.Thread] = None
        self._last_checkpoint = time.monotonic()
        self.error: Optional[str] = None

    # -- start-up --------------------------------------------------------

    def recover(self, on_progress: Optional[Callable[[int], None]] = None) -> int:
        """Restore the last checkpoint and replay later events; returns how many were replayed."""
        self.ingest_seq = self.store.max_ingest_seq()
        if self.chain is not None:
            self.chain.recover()  # rows stored but not chained (a crash between the two writes)
        saved = self.store.load_checkpoint(CHECKPOINT_NAME)
        if saved is not None:
            self.checkpoint_seq, snapshot = saved
            self.pipeline.restore(snapshot)
        self.taken_seq = self.checkpoint_seq
        replayed = 0
        decoder = msgspec.json.Decoder(EventRecord)
        for seq, payload in self.store.iter_payloads_after(self.checkpoint_seq):
            # stored payloads were validated and enriched on the way in
            self.pipeline.push(decoder.decode(payload), time.time())
            self.taken_seq = seq
            replayed += 1
            if replayed % 5_000 == 0:
                self._collect(time.time())
                if on_progress is not None:
                    on_progress(replayed)
        self._collect(time.time())
        self.checkpoint()
        return replayed

    def start(self) -> None:
        """Start the detection thread (and the outputs' dispatcher); a second call is a no-op:
        a second thread would outlive ``stop``, which ends one."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.dispatcher.start()
        self._thread = threading.Thread(target=self._loop, name="mcpsift-detect", daemon=True)
        self._thread.start()

    # -- ingest (called from request handlers, any thread) ----------------

    def ingest(
        self, items: Sequence[bytes], source: str = "http", tenants: Optional[frozenset[str]] = None
    ) -> list[Verdict]:
        """Validate, durably store and queue a batch; one verdict per item.

        ``tenants``: the tenants the sender may write (its key's scope; None: any).
        An event of another tenant (after enrichment) is rejected like an invalid one."""
        tel = self.telemetry
        with tel.span("ingest", events=len(items), source=source) as span:
            started = time.perf_counter()
            verdicts, accepted, rejected = self._ingest(items, source, tenants)
            span.set_attribute("accepted", accepted)
            span.set_attribute("rejected", rejected)
            tel.stage_latency_seconds.record(time.perf_counter() - started, {"stage": "ingest"})
        return verdicts

    def _ingest(
        self, items: Sequence[bytes], source: str, tenants: Optional[frozenset[str]]
    ) -> tuple[list[Verdict], int, int]:
        tel = self.telemetry
        verdicts: list[Verdict] = []
        valid: list[tuple[Any, bytes]] = []
        invalid: list[tuple[str, str, bytes, int]] = []
        validate = self.pipeline.validate
        for index, raw in enumerate(items):
            try:
                ev = validate(raw)
                if tenants is not None and ev.tenant not in tenants:
                    raise InvalidEvent(
                        f"tenant {ev.tenant!r} is outside the tenants this credential may write ({', '.join(sorted(tenants))})"
                    )
            except InvalidEvent as exc:
                reason = str(exc)
                invalid.append((source, reason, raw, index))
                verdicts.append(Verdict(index, "rejected", _event_id_of(raw), reason))
                continue
            valid.append((ev, encode_event(ev)))
            verdicts.append(Verdict(index, "accepted", ev.event_id))
        with self._ingest_lock:
            now = _dt.datetime.now(_UTC)
            seq = self.ingest_seq
            batch = []
            rows = []
            for ev, payload in valid:
                seq += 1
                row = event_row(ev, payload, seq, now)
                self._events.add(row)
                rows.append(row)
                batch.append((seq, ev))
            for item in invalid:
                self._dead.add(item)
            # durable before anyone is told "accepted"; on failure nothing is queued
            flush_started = time.perf_counter()
            try:
                stored = self._events.flush()
            except Exception:
                self._events.discard()  # the request answers 503: nothing was accepted
                raise
            if stored:
                tel.sink_latency_seconds.record(time.perf_counter() - flush_started, {"sink": "events"})
                tel.sink_batch_rows.record(stored, {"sink": "events"})
                tel.events_out.add(stored, {"sink": "clickhouse"})
            # chained after the events are stored: a crash in between leaves unchained
            # rows that recover() chains, never entries pointing at missing rows
            if self.chain is not None and rows:
                self.chain.append(rows)
            self._dead.flush()
            self.ingest_seq = seq
            if batch:
                self._queue.put(batch)  # blocks when detection lags: backpressure
        self.accepted += len(valid)
        self.rejected += len(invalid)
        if valid:
            tel.events_in.add(len(valid), {"source": source})
        if invalid:
            tel.deadletters.add(len(invalid), {"source": source})
        return verdicts, len(valid), len(invalid)

    def dead_letter(self, source: str, reason: str, raw: bytes) -> None:
        """Keep an input that could not even be split into events (e.g. a broken body)."""
        with self._ingest_lock:
            self._dead.add((source, reason, raw, 0))
            self._dead.flush()
        self.rejected += 1
        self.telemetry.deadletters.add(1, {"source": source})

    # -- detection thread -------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                item = None
            try:
                if item is _STOP:
                    self._collect(time.time())
                    self.checkpoint()
                    return
                if item is not None:
                    self._detect(item)
                else:
                    self._collect(time.time())
                if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s:
                    self.checkpoint()
                self.error = None
            except Exception as exc:  # the store may be briefly unavailable: retry, never die
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("detection loop error; retrying in 1 s")
                time.sleep(1.0)

    def _detect(self, batch: list[tuple[int, Any]]) -> None:
        """One detection round over a queued ingest batch: one span, one latency sample."""
        tel = self.telemetry
        with tel.span("detect", events=len(batch)):
            started = time.perf_counter()
            wall = time.time()
            push = self.pipeline.push
            for seq, ev in batch:
                push(ev, wall)
                self.taken_seq = seq
            self._collect(time.time())
            tel.stage_latency_seconds.record(time.perf_counter() - started, {"stage": "detect"})

    def _collect(self, wall_now: float) -> None:
        for alert in self.pipeline.release(wall_now):
            self._alerts.add(alert)
            self._alert_rules[alert.rule_id] += 1
        self._flush_alerts()
        self.telemetry.set_gauge("detect_backlog_events", self.ingest_seq - self.taken_seq)

    def _flush_alerts(self) -> None:
        """Write buffered alerts; counted by rule only once stored (a failed flush keeps them buffered)."""
        tel = self.telemetry
        started = time.perf_counter()
        flushed = self._alerts.flush()
        self.alerts_written += flushed
        if flushed:
            tel.sink_latency_seconds.record(time.perf_counter() - started, {"sink": "alerts"})
            tel.sink_batch_rows.record(flushed, {"sink": "alerts"})
        if self._alert_rules and not len(self._alerts):
            for rule_id, count in self._alert_rules.items():
                tel.alerts.add(count, {"rule_id": rule_id})
            self._alert_rules.clear()

    def checkpoint(self) -> None:
        """Flush alerts, then record how far detection got (sinks first: at-least-once)."""
        self._flush_alerts()
        self.store.save_checkpoint(CHECKPOINT_NAME, self.taken_seq, self.pipeline.snapshot())
        self.checkpoint_seq = self.taken_seq
        self._last_checkpoint = time.monotonic()

    def stop(self, timeout: float = 30.0) -> None:
        """Drain queued events through detection, flush, checkpoint."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        self.dispatcher.stop(timeout)

    # -- status -----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "ingest_seq": self.ingest_seq,
            "detected_seq": self.taken_seq,
            "checkpoint_seq": self.checkpoint_seq,
            "queued_batches": self._queue.qsize(),
            "reorder_buffer_events": len(self.pipeline.buffer),
            "detector_state_keys": self.pipeline.detect.state_size(),
            "accepted": self.accepted,
            "rejected": self.rejected,
            "alerts_written": self.alerts_written,
            "late_events": self.pipeline.buffer.late_events,
            "future_events": self.pipeline.buffer.future_events,
            "duplicates": self.pipeline.duplicates,
            "detector_errors": dict(self.pipeline.detect.detector_errors),
            "error": self.error,
        }
