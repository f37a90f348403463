"""The distributed runner: a faust-streaming app over Kafka (``mcpsift worker``).

The same stage functions as the embedded runner (validate and enrich from
:class:`~.pipeline.Pipeline`, the detectors of :mod:`mcpsift.detectors`, the
ClickHouse sinks); only the wiring differs. Three agents, all batched
(``stream.take_events``: faust's per-event path is slow, so every step works
on a batch and per-event Python work is the stage functions themselves):

``ingest`` on ``kafka.events_topic`` (one event per message)
    validate + enrich each message; an invalid one goes to
    ``kafka.deadletter_topic`` (the original bytes, the reason in headers) and
    to the ``dead_letter`` table; valid events are stored in ClickHouse (one
    insert per batch, with an insert dedup token from the batch's partitions
    and offsets); the stateless detectors run here; every event is routed to
    the state keys of the stateful detectors that read it
    (:meth:`~.keyed.KeyedDetect.route`) and re-keyed onto
    ``kafka.keyed_topic`` -- the repartition (``group_by``) step, done once
    per distinct key and batched: one message per destination partition and
    batch, to the partition that owns the key (:func:`~.keyed.partition_for`);
    an event goes once to each partition that owns one of its keys, listing
    those keys.

``detect`` on ``kafka.keyed_topic``
    each key's events against that key's state, kept in the faust Table
    ``detector-state`` (``use_partitioner=True``: co-partitioned with the
    repartition topic, so batched writes are allowed; changelog topic
    ``<app_id>-detector-state-changelog``, so a restarted or rebalanced worker
    recovers the state). Alerts go to ``kafka.alerts_topic``.

``alerts`` on ``kafka.alerts_topic``
    alerts into ClickHouse and the SIEM outbox (``mcpsift outputs run`` sends them).

Offsets are committed only after a batch is fully handled (stored, forwarded
and acknowledged by the broker): a batch that fails is retried, and while
ClickHouse is down the agent waits, so consumption stops (faust pauses the
partitions whose buffers are full) instead of memory growing.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import gc
import heapq
import logging
import ssl
import time
from collections import defaultdict, deque
from typing import Any, Callable, Iterable, Iterator, Optional

import msgspec

from mcpsift.alerts import Alert
from mcpsift.events import EventRecord, InvalidEvent, encode_event
from mcpsift.settings import KafkaSettings, Settings
from mcpsift.store import Store, event_row

from .keyed import Item, KeyedDetect, partition_for
from .outbox import Outbox
from .pipeline import Pipeline

__all__ = ["WorkerApp", "kafka_client_options", "faust_credentials", "TABLE_NAME", "changelog_topic"]

log = logging.getLogger("mcpsift.worker")

TABLE_NAME = "detector-state"
_UTC = _dt.timezone.utc
#: an ``ingest_seq`` for a Kafka event: partition and offset, so it is unique and
#: stable across redeliveries (the embedded runner counts from 1 instead)
_SEQ_PARTITION_SHIFT = 40
#: cyclic GC thresholds of a worker process (see run_worker)
GC_THRESHOLDS = (50_000, 20, 100)

#: a repartition message is cut at about this size (Kafka's default limit is 1 MB)
_MAX_REPARTITION_BYTES = 256 * 1024


def changelog_topic(kafka: KafkaSettings) -> str:
    """The compacted topic faust keeps the detector state in."""
    return f"{kafka.app_id}-{TABLE_NAME}-changelog"


def _password(kafka: KafkaSettings) -> Optional[str]:
    import os

    if kafka.sasl_password_env:
        value = os.environ.get(kafka.sasl_password_env)
        if value is None:
            raise ValueError(f"kafka.sasl_password_env: environment variable {kafka.sasl_password_env} is not set")
        return value
    if kafka.sasl_password_file:
        try:
            return kafka.sasl_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"kafka.sasl_password_file: cannot read {kafka.sasl_password_file}: {exc.strerror}") from None
    return kafka.sasl_password


def _ssl_context(kafka: KafkaSettings) -> Optional[ssl.SSLContext]:
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.ssl_certfile:
        context.load_cert_chain(str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None)
    return context


def kafka_client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka client keyword arguments (brokers, TLS, SASL) for ``kafka``."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers, "security_protocol": kafka.security_protocol}
    context = _ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = _password(kafka)
    return options


def faust_credentials(kafka: KafkaSettings) -> Any:
    """faust's ``broker_credentials`` for ``kafka`` (None: plaintext)."""
    import faust

    context = _ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=_password(kafka),
            mechanism=kafka.sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class _Keyed(msgspec.Struct, array_like=True):
    """One event for the detect agent, under every state key of it that lives on the
    destination partition (a repartition message holds a list): one copy per
    partition, not per key."""

    keys: list[tuple[str, list[str]]]  # (state key, the detectors keyed by it)
    partition: int  # where the event arrived (its source partition and offset
    offset: int  # identify it for redelivery checks)
    time: float  # event time as the runner orders it
    event: msgspec.Raw


_encode_keyed = msgspec.json.Encoder().encode
_decode_keyed = msgspec.json.Decoder(list[_Keyed]).decode
_decode_event = msgspec.json.Decoder(EventRecord).decode


def _source(message: Any) -> str:
    return f"kafka:{message.topic}/{message.partition}@{message.offset}"


def _dead_headers(source: str, reason: str) -> list[tuple[str, bytes]]:
    """Headers of a dead letter on the dead-letter topic (its value is the original bytes)."""
    return [("mcpsift.reason", reason.encode("utf-8", "replace")), ("mcpsift.source", source.encode("utf-8"))]


def _token(kind: str, events: list[Any], enabled: bool = True) -> Optional[str]:
    """An insert dedup token for a batch: its topic and per-partition offset ranges
    (None when not ``enabled``)."""
    if not enabled:
        return None
    ranges: dict[tuple[str, int], list[int]] = {}
    for e in events:
        m = e.message
        span = ranges.get((m.topic, m.partition))
        if span is None:
            ranges[(m.topic, m.partition)] = [m.offset, m.offset]
        else:
            span[1] = max(span[1], m.offset)
            span[0] = min(span[0], m.offset)
    parts = ",".join(f"{t}/{p}:{a}-{b}" for (t, p), (a, b) in sorted(ranges.items()))
    return f"{kind}|{parts}"


class _Reorder:
    """The events of one repartition partition waiting for their turn: per key,
    per source partition, in offset order."""

    __slots__ = ("pending", "positions", "max_time", "last_arrival", "size")

    def __init__(self) -> None:
        self.pending: dict[str, dict[int, deque[tuple[Any, ...]]]] = {}
        self.positions: set[tuple[str, int, int]] = set()
        self.max_time = float("-inf")
        self.last_arrival = 0.0
        self.size = 0

    def add(self, key: str, names: list[str], k: "_Keyed", event: Any, peek: Callable[[bytes], Any]) -> bool:
        """Queue a repartitioned event under one of its keys; False when it was applied
        or queued there already."""
        position = (key, k.partition, k.offset)
        if position in self.positions:
            return False
        value = peek(key.encode("utf-8"))
        if value is not None and k.offset <= value["o"].get(str(k.partition), -1):
            return False
        self.positions.add(position)
        by_source = self.pending.get(key)
        if by_source is None:
            by_source = self.pending[key] = {}
        queue = by_source.get(k.partition)
        if queue is None:
            queue = by_source[k.partition] = deque()
        queue.append((k.time, k.partition, k.offset, k.event, names, event))
        self.size += 1
        if k.time > self.max_time:
            self.max_time = k.time
        return True

    def due(self, threshold: float) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        """Per key, the waiting events stamped at or before ``threshold``, in event-time
        order (each source partition's in offset order), removed from the buffer."""
        for key in list(self.pending):
            by_source = self.pending[key]
            runs = []
            for source in list(by_source):
                queue = by_source[source]
                run = []
                while queue and queue[0][0] <= threshold:
                    run.append(queue.popleft())
                if run:
                    runs.append(run)
                if not queue:
                    del by_source[source]
            if not by_source:
                del self.pending[key]
            if runs:
                items = runs[0] if len(runs) == 1 else list(heapq.merge(*runs, key=_item_time))
                for item in items:
                    self.positions.discard((key, item[1], item[2]))
                self.size -= len(items)
                yield key, items


_ABSENT = object()
_encode_value = msgspec.json.Encoder().encode
_decode_value = msgspec.json.Decoder().decode


def _copy_value(value: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a key's state value (JSON round trip: the value is JSON by contract)."""
    return _decode_value(_encode_value(value))  # type: ignore[no-any-return]


def _item_time(item: tuple[Any, ...]) -> float:
    return item[0]


class _Release:
    """What one release decided: the keys' new values, their alerts, and the
    messages whose every event is now applied."""

    __slots__ = ("values", "alerts", "acks", "events")

    def __init__(self) -> None:
        self.values: dict[bytes, Optional[dict[str, Any]]] = {}
        self.alerts: list[Alert] = []
        self.acks: list[Any] = []
        self.events = 0


class WorkerApp:
    """The faust app of one worker process, around a store and the shared stages."""

    def __init__(self, settings: Settings, store: Store, *, telemetry: Any = None):
        from . import faust_fixes  # faust is imported only where a worker runs

        self.settings = settings
        self.store = store
        self.telemetry = telemetry
        k = settings.kafka
        self.kafka = k
        self.pipeline = Pipeline(settings)
        self.keyed = KeyedDetect(self.pipeline.detect.detectors, self.pipeline.detect.wanted_rules)
        # alerts are stored, then queued per SIEM output (`mcpsift outputs run` sends them)
        self.outbox = Outbox(store, settings.outputs)
        # insert dedup tokens only on Replicated tables (clickhouse.cluster), where the
        # block id is committed with the part; a plain MergeTree's deduplication log is
        # not atomic with the part, so a crash mid-insert could leave the token without
        # the rows and a redelivered batch would then be dropped. There, rows written
        # twice merge away by event_id / alert_id and every read is deduplicated.
        self._dedup_tokens = settings.clickhouse.cluster is not None
        self.app = faust_fixes.App(  # faust with at-least-once offsets (see streams/faust_fixes.py)
            k.app_id,
            broker=[f"kafka://{hp.strip()}" for hp in k.bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(k),
            autodiscover=False,  # the agents are the ones below, nothing else
            store="memory://",  # the Table's durability is its changelog topic
            web_enabled=False,  # /metrics and /healthz come from mcpsift.telemetry
            topic_partitions=k.partitions,
            topic_replication_factor=k.replication_factor,
            consumer_auto_offset_reset="earliest",  # a new group reads everything: nothing is skipped
            producer_acks=-1,
            # fetch big: events are ~1 KB and faust's defaults (1 MB per partition) starve batches
            consumer_max_fetch_size=16 * 1024 * 1024,
            broker_max_poll_records=max(1000, settings.worker.batch_size),
            stream_buffer_maxsize=max(4096, settings.worker.batch_size * 2),
            broker_commit_every=max(1000, settings.worker.batch_size),
            broker_commit_interval=1.0,
            # the detect step holds messages whose events wait for their event-time turn:
            # a rebalance or a stop must not wait for them (they are redelivered instead)
            stream_wait_empty=False,
            # a dead worker's partitions move after this long; Tansu also holds a join this long / 2
            broker_session_timeout=settings.worker.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.worker.session_timeout_s / 4),
            broker_rebalance_timeout=max(30.0, settings.worker.session_timeout_s * 3),
        )
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.events_topic = self.app.topic(k.events_topic, partitions=k.partitions, **raw)
        self.keyed_topic = self.app.topic(k.keyed_topic, partitions=k.partitions, **raw)
        self.alerts_topic = self.app.topic(k.alerts_topic, partitions=k.alerts_partitions, **raw)
        self.deadletter_topic = self.app.topic(k.deadletter_topic, partitions=k.deadletter_partitions, **raw)
        self.table = self.app.Table(
            TABLE_NAME,
            partitions=k.partitions,
            use_partitioner=True,
            key_type=bytes,  # "raw": the changelog is partitioned by the key's UTF-8 bytes, as partition_for
        )
        self.recovered_keys: Optional[int] = None
        self.table.on_recover(self._on_recover)
        batch, within = settings.worker.batch_size, settings.worker.batch_timeout_s
        self.app.agent(self.events_topic, name="mcpsift.ingest")(self._agent(self.ingest, batch, within))
        self.app.agent(self.keyed_topic, name="mcpsift.detect")(self._agent(self.detect, batch, within))
        self.app.agent(self.alerts_topic, name="mcpsift.alerts")(self._agent(self.alerts, batch, within))
        # counters (also exported as metrics)
        self.events_in = 0
        self.events_stored = 0
        self.dead_letters = 0
        self.alerts_out = 0
        self.alerts_stored = 0
        self.batches = 0
        self.error: Optional[str] = None
        self._max_event_time = float("-inf")
        # keys this worker wrote, per partition, with their latest event time: swept for expiry
        self._touched: dict[int, dict[str, float]] = defaultdict(dict)
        self._last_sweep = time.monotonic()
        self._lags: dict[tuple[str, int], int] = {}
        #: "topic/partition" -> the offset after the last message this worker handled
        self._positions: dict[str, int] = {}
        self._partition_of_key: dict[str, int] = {}  # murmur2 is pure Python: remember it
        #: mcp.events partition -> the last offset the ingest step was given (since its assignment)
        self._delivered: dict[int, int] = {}
        self.offset_gaps = 0
        # the detect step's reordering (see "detect" below)
        self._buffers: dict[int, _Reorder] = {}
        self._holds: dict[int, list[Any]] = {}
        #: values applied but not yet written to the Table (their alerts are being sent)
        self._unwritten: dict[bytes, Any] = {}
        self._idle_s = max(0.5, min(settings.allowed_lateness_s, 5.0))
        self.app.timer(interval=0.5, name="mcpsift.release-quiet-partitions")(self._tick)

    # -- plumbing ------------------------------------------------------------

    def _agent(self, prepare: Callable[[list[Any]], Any], batch: int, within: float) -> Callable[[Any], Any]:
        async def agent(stream: Any) -> None:
            async for events in stream.take_events(batch, within=within):
                # prepared once (detector state moves on exactly once), flushed until it succeeds
                flush = prepare(events)
                await self._until_done(flush, prepare.__name__, len(events))

        agent.__name__ = prepare.__name__
        return agent

    async def _until_done(self, flush: Callable[[], Any], what: str, size: int) -> None:
        """Store and send a prepared batch, retrying until it succeeds: its offsets are
        committed only after (while ClickHouse or the broker is down, consumption waits)."""
        delay = 0.5
        while True:
            try:
                await flush()
                self.error = None
                self.batches += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = f"{what}: {type(exc).__name__}: {str(exc)[:300]}"
                log.exception("batch of %d failed in %s; retrying in %.1f s (nothing is committed)", size, what, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _span(self, name: str, **attrs: Any) -> Any:
        if self.telemetry is None:
            import contextlib

            return contextlib.nullcontext()
        return self.telemetry.span(name, **attrs)

    async def _store(self, sink: str, write: Callable[[], Any], rows: int) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(write)
        if self.telemetry is not None:
            self.telemetry.sink_batch_rows.record(rows, {"sink": sink})
            self.telemetry.sink_latency_seconds.record(time.perf_counter() - started, {"sink": sink})

    async def _send_all(self, sends: list[Any]) -> None:
        """Wait until the broker acknowledged every message sent for this batch."""
        if sends:
            await asyncio.gather(*[await s for s in sends])

    def _lag(self, events: list[Any]) -> None:
        """Consumer lag of the partitions in this batch: gauges, and the health report."""
        last: dict[Any, int] = {}
        for e in events:
            last[e.message.tp] = e.message.offset
        for tp, offset in last.items():
            key = f"{tp.topic}/{tp.partition}"
            if offset + 1 > self._positions.get(key, 0):
                self._positions[key] = offset + 1
        consumer = self.app.consumer
        for tp, offset in last.items():
            try:
                high = consumer.highwater(tp)
            except Exception:
                continue
            if high is not None:
                lag = max(0, high - offset - 1)
                self._lags[(tp.topic, tp.partition)] = lag
                if self.telemetry is not None:
                    self.telemetry.set_consumer_lag(tp.topic, tp.partition, lag)

    # -- ingest: validate, enrich, store, stateless detectors, repartition ---

    def ingest(self, events: list[Any]) -> Callable[[], Any]:
        started = time.perf_counter()
        validate = self.pipeline.validate
        seen = self.pipeline.seen
        batch_ids: set[str] = set()
        route = self.keyed.route
        where = self._partition_of_key
        stateless = self.pipeline.detect.stateless
        lateness = self.settings.allowed_lateness_s
        partitions = self.kafka.partitions
        now = _dt.datetime.now(_UTC)
        horizon = time.time() + lateness
        rows: list[tuple[Any, ...]] = []
        dead: list[tuple[str, str, bytes, int]] = []
        alerts: list[Alert] = []
        outgoing: dict[int, list[_Keyed]] = defaultdict(list)
        chunks: list[tuple[int, list[_Keyed]]] = []  # full repartition messages
        size: dict[int, int] = defaultdict(int)
        delivered = self._delivered
        for e in events:
            message = e.message
            last = delivered.get(message.partition)
            if last is not None and message.offset > last + 1:
                self._offset_gap(message.partition, last + 1, message.offset - 1)
            delivered[message.partition] = message.offset
            raw = e.value if isinstance(e.value, (bytes, bytearray)) else b""
            try:
                ev = validate(raw)
            except InvalidEvent as exc:
                dead.append((_source(message), str(exc), bytes(raw), message.offset))
                continue
            try:
                event_id = ev.event_id
                if event_id in seen or event_id in batch_ids:
                    # a producer's redelivery of an event this worker has handled (the ids of
                    # a batch count as seen only once the batch is stored and forwarded: a
                    # batch interrupted by a rebalance or a stop comes again, whole)
                    self.pipeline.duplicates += 1
                    continue
                batch_ids.add(event_id)
                payload = encode_event(ev)
                row = event_row(ev, payload, (message.partition << _SEQ_PARTITION_SHIFT) | message.offset, now)
                event_time = ev.time.timestamp()
                if event_time > horizon:  # stamped in the future: ordered at now + lateness
                    event_time = horizon
                found = stateless(ev, event_time)
                routes = route(ev)
            except Exception as exc:  # a bug must not stop the worker: keep the event, say why
                log.exception("event at %s could not be processed; dead-lettered", _source(message))
                dead.append((_source(message), f"internal error: {type(exc).__name__}: {exc}", bytes(raw), message.offset))
                continue
            rows.append(row)
            if found:
                alerts.extend(found)
            if routes:
                by_partition: dict[int, list[tuple[str, list[str]]]] = {}
                for key, names in routes.items():
                    p = where.get(key)
                    if p is None:
                        if len(where) > 200_000:  # keys of long-gone sessions
                            where.clear()
                        p = where[key] = partition_for(key, partitions)
                    here = by_partition.get(p)
                    if here is None:
                        by_partition[p] = [(key, names)]
                    else:
                        here.append((key, names))
                raw_event = msgspec.Raw(payload)
                for p, keys in by_partition.items():
                    outgoing[p].append(_Keyed(keys, message.partition, message.offset, event_time, raw_event))
                    size[p] += len(payload) + 64 * len(keys)
                    if size[p] >= _MAX_REPARTITION_BYTES:  # stay well under the broker's message size limit
                        chunks.append((p, outgoing.pop(p)))
                        size[p] = 0
        chunks.extend(outgoing.items())
        keyed = [(p, _encode_keyed(items)) for p, items in chunks]
        prepared_s = time.perf_counter() - started

        async def flush() -> None:
            began = time.perf_counter()
            with self._span("ingest", events=len(events), stored=len(rows), dead_letters=len(dead), alerts=len(alerts)):
                if rows:
                    token = _token("events", events, self._dedup_tokens)
                    await self._store("events", lambda: self.store.insert_events(rows, dedup_token=token), len(rows))
                if dead:
                    token = _token("dead_letter", events, self._dedup_tokens)
                    await self._store(
                        "dead_letter", lambda: self.store.insert_dead_letters(dead, dedup_token=token), len(dead)
                    )
                sends = [self.keyed_topic.send(value=value, partition=p, force=True) for p, value in keyed]
                sends += [self._send_alert(a) for a in alerts]
                sends += [
                    self.deadletter_topic.send(value=raw, headers=_dead_headers(source, reason), force=True)
                    for source, reason, raw, _ in dead
                ]
                await self._send_all(sends)
            self.pipeline.remember(batch_ids)
            self.events_in += len(events)
            self.events_stored += len(rows)
            self.dead_letters += len(dead)
            self.alerts_out += len(alerts)
            tel = self.telemetry
            if tel is not None:
                tel.events_in.add(len(events), {"source": "kafka"})
                tel.events_out.add(len(rows), {"sink": "clickhouse"})
                if dead:
                    tel.deadletters.add(len(dead), {"source": "kafka"})
                self._count_alerts(alerts)
                tel.stage_latency_seconds.record(prepared_s + time.perf_counter() - began, {"stage": "ingest"})
            self._lag(events)

        return flush

    def _offset_gap(self, partition: int, first: int, last: int) -> None:
        """Offsets the ingest step was never given, between two it was (the consumer
        skipped them): said loudly, counted in the health report."""
        self.offset_gaps += 1
        log.warning(
            "offset gap on %s/%d: offsets %d..%d never reached the ingest step",
            self.kafka.events_topic, partition, first, last,
        )

    def _send_alert(self, alert: Alert) -> Any:
        return self.alerts_topic.send(key=alert.alert_id.encode(), value=alert.model_dump_json().encode(), force=True)

    def _count_alerts(self, alerts: list[Alert]) -> None:
        if self.telemetry is not None and alerts:
            by_rule: dict[str, int] = defaultdict(int)
            for a in alerts:
                by_rule[a.rule_id] += 1
            for rule, n in by_rule.items():
                self.telemetry.alerts.add(n, {"rule_id": rule})

    # -- detect: each key's events against its state in the Table ------------
    #
    # Events of one key reach its partition from several source partitions, in
    # whatever interleaving the ingest step produced. As the embedded runner
    # does, they wait in a buffer until the partition's watermark (the latest
    # event time seen on it) has passed them by the allowed lateness -- or the
    # partition has been quiet for as long -- and are then applied in event-time
    # order (one source partition's events always in their offset order, which
    # the redelivery check relies on). A message with events still waiting is
    # not acknowledged, so its offset is not committed: after a crash it is read
    # again and its waiting events come back; the buffer itself needs no storage.

    def detect(self, events: list[Any]) -> Callable[[], Any]:
        started = time.perf_counter()
        now = time.monotonic()
        count = 0
        touched: set[int] = set()
        for e in events:
            try:
                keyed = _decode_keyed(e.value)
            except Exception as exc:  # not written by a worker: keep it, do not stop
                log.warning("a message at %s is not a repartitioned batch (%s); dead-lettered", _source(e.message), exc)
                self._dead_now(e, f"not a repartitioned batch: {exc}")
                continue
            partition = e.message.partition
            buffer = self._buffers.get(partition)
            if buffer is None:
                buffer = self._buffers[partition] = _Reorder()
            buffer.last_arrival = now
            touched.add(partition)
            held = 0
            peek = self._peek()
            for k in keyed:
                for key, names in k.keys:
                    if buffer.add(key, names, k, e, peek):
                        held += 1
                    else:
                        self.keyed.skipped_redeliveries += 1
                count += len(k.keys)
            if held:
                e.message.incref()  # not committed until its last waiting event is applied
                self._holds[id(e)] = [e, held]
        release = self._release(touched, now)
        prepared_s = time.perf_counter() - started

        async def flush() -> None:
            began = time.perf_counter()
            with self._span("detect", events=count, released=release.events, keys=len(release.values), alerts=len(release.alerts)):
                await self._commit_release(release)
            if self.telemetry is not None:
                self.telemetry.stage_latency_seconds.record(prepared_s + time.perf_counter() - began, {"stage": "detect"})
            self._lag(events)

        return flush

    def _peek(self) -> Callable[[bytes], Any]:
        """The state of a key as the next events must see it: a value applied but not yet
        written to the Table (its alerts are still being sent) wins; else a fast read of
        the Table (the memory store's dict: reads need no changelog)."""
        try:
            stored = self.table.data.data.get
        except AttributeError:
            stored = self.table.get
        unwritten = self._unwritten

        def peek(key: bytes) -> Any:
            value = unwritten.get(key, _ABSENT)
            return stored(key) if value is _ABSENT else value

        return peek

    def _release(self, partitions: Iterable[int], now: float, everything: bool = False) -> "_Release":
        """Apply the waiting events that are due, per key, against the Table's state
        (in memory: the changelog write and the acks wait for the alerts to be sent)."""
        release = _Release()
        events: dict[tuple[int, int], Any] = {}
        peek = self._peek()
        lateness = self.settings.allowed_lateness_s
        apply = self.keyed.apply
        for partition in partitions:
            buffer = self._buffers.get(partition)
            if buffer is None or not buffer.size:
                continue
            quiet = everything or now - buffer.last_arrival >= self._idle_s
            threshold = float("inf") if quiet else buffer.max_time - lateness
            for key, items in buffer.due(threshold):
                stored_key = key.encode("utf-8")
                decoded = []
                for t, p, o, raw, names, _ in items:
                    # an event routed to several keys of this partition is decoded once
                    ev = events.get((p, o))
                    if ev is None:
                        ev = events[(p, o)] = _decode_event(raw)
                    decoded.append((t, p, o, ev, names))
                current = peek(stored_key)
                # a copy: the object the Table holds is never changed after it was set,
                # because faust serializes a changelog message when it sends it, and that
                # message must not carry state whose alerts are not yet sent
                value, found = apply(_copy_value(current) if current is not None else None, decoded)
                self._unwritten[stored_key] = value
                release.values[stored_key] = value
                release.alerts.extend(found)
                release.events += len(items)
                touched = self._touched[partition]
                if value is None:
                    touched.pop(key, None)
                else:
                    touched[key] = value["t"]
                    if value["t"] > self._max_event_time:
                        self._max_event_time = value["t"]
                for item in items:
                    hold = self._holds.get(id(item[5]))
                    if hold is not None:
                        hold[1] -= 1
                        if hold[1] == 0:
                            release.acks.append(self._holds.pop(id(item[5]))[0])
        return release

    async def _commit_release(self, release: "_Release") -> None:
        """Alerts first, then the state that produced them, then the offsets: a crash
        in between re-applies the events and raises the same alert ids again, never
        loses one."""
        await self._send_all([self._send_alert(a) for a in release.alerts])
        for stored_key, value in release.values.items():
            if value is None:
                if stored_key in self.table:
                    del self.table[stored_key]
            else:
                self.table[stored_key] = value
            if self._unwritten.get(stored_key, _ABSENT) is value:
                del self._unwritten[stored_key]
        release.values.clear()
        for event in release.acks:
            event.ack()
        release.acks.clear()
        if release.alerts:
            self.alerts_out += len(release.alerts)
            self._count_alerts(release.alerts)
            release.alerts.clear()

    async def _tick(self) -> None:
        """Release what waits on partitions that went quiet (no new batch to do it)."""
        now = time.monotonic()
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.kafka.keyed_topic}
        for partition in list(self._buffers):
            if partition not in assigned:  # revoked: its unacknowledged messages go to the new owner
                for _, items in self._buffers.pop(partition).due(float("inf")):
                    for item in items:
                        self._holds.pop(id(item[5]), None)
        quiet = [p for p, b in self._buffers.items() if b.size and now - b.last_arrival >= self._idle_s]
        if quiet:
            release = self._release(quiet, now)
            await self._until_done(lambda: self._commit_release(release), "detect (quiet partitions)", release.events)
        self._sweep()

    def _sweep(self, every_s: float = 60.0) -> None:
        """Delete keys whose every detector state outlived its TTL (event time)."""
        if time.monotonic() - self._last_sweep < every_s:
            return
        self._last_sweep = time.monotonic()
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.kafka.keyed_topic}
        now = self._max_event_time
        for partition, keys in list(self._touched.items()):
            if partition not in assigned:
                del self._touched[partition]  # moved to another worker with its state
                continue
            for key in list(keys):
                stored_key = key.encode("utf-8")
                value = self.table.get(stored_key)
                if value is None or self.keyed.expired(value, now):
                    keys.pop(key, None)
                    if value is not None:
                        del self.table[stored_key]

    def _dead_now(self, e: Any, reason: str) -> None:
        """Keep a message no agent can read (rare: someone else wrote to an internal topic)."""
        row = (_source(e.message), reason, bytes(e.value or b""), e.message.offset)
        try:
            self.store.insert_dead_letters([row])
            self.dead_letters += 1
        except Exception:
            log.exception("could not keep the unreadable message at %s", row[0])

    # -- alerts: into ClickHouse and the SIEM outbox -------------------------

    def alerts(self, events: list[Any]) -> Callable[[], Any]:
        unique: dict[str, Alert] = {}
        for e in events:
            try:
                alert = Alert.model_validate_json(e.value)
            except Exception as exc:
                log.warning("a message at %s is not an alert (%s); dead-lettered", _source(e.message), str(exc)[:200])
                self._dead_now(e, f"not an alert: {str(exc)[:500]}")
                continue
            unique.setdefault(alert.alert_id, alert)
        batch = list(unique.values())
        token = _token("alerts", events, self._dedup_tokens)

        async def flush() -> None:
            if not batch:
                return
            with self._span("alerts", alerts=len(batch)):

                def write() -> None:
                    self.store.insert_alerts(batch, dedup_token=token)
                    self.outbox.enqueue(batch)

                await self._store("alerts", write, len(batch))
            self.alerts_stored += len(batch)
            self._lag(events)

        return flush

    # -- status ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            # starting: until faust joined the group and recovered the detector state
            "status": "error" if self.error else ("ok" if self.recovered_keys is not None else "starting"),
            "error": self.error,
            "events_in": self.events_in,
            "events_stored": self.events_stored,
            "dead_letters": self.dead_letters,
            "alerts_out": self.alerts_out,
            "alerts_stored": self.alerts_stored,
            "batches": self.batches,
            "detector_state_keys": len(self.table) if self._table_ready() else None,
            "recovered_state_keys": self.recovered_keys,
            # the detect step's event-time buffer: events waiting, messages not yet committable
            "waiting_events": sum(b.size for b in self._buffers.values()),
            "held_messages": len(self._holds),
            "handled_up_to": dict(self._positions),
            "assigned": self.assignment(),
            # messages behind, per topic, as of each partition's last batch (a partition with
            # no batch since start counts 0)
            "lag": self._lag_by_topic(),
            "skipped_redeliveries": self.keyed.skipped_redeliveries,
            "offset_gaps": self.offset_gaps,
            "detector_errors": {**self.pipeline.detect.detector_errors, **self.keyed.detector_errors},
        }

    async def _on_recover(self) -> None:
        # after faust read the changelog of the partitions this worker was given (and
        # before it seeks them to their committed offsets: a jump there is no gap)
        self._delivered.clear()
        self.recovered_keys = len(self.table)
        log.info("detector state recovered: %d keys", self.recovered_keys)

    def _lag_by_topic(self) -> dict[str, Optional[int]]:
        """Messages behind per topic over every assigned partition: as of its last
        batch, else highwater minus committed offset; None while unknown."""
        out: dict[str, Optional[int]] = {}
        consumer = self.app.consumer
        try:
            assigned = list(consumer.assignment())
        except Exception:
            return {}
        ours = {self.kafka.events_topic, self.kafka.keyed_topic, self.kafka.alerts_topic}
        for tp in assigned:
            if tp.topic not in ours:
                continue
            lag = self._lags.get((tp.topic, tp.partition))
            if lag is None:
                try:
                    high = consumer.highwater(tp)
                    committed = consumer._committed_offset.get(tp)  # faust keeps it; no public accessor
                except Exception:
                    high = committed = None
                if high is not None:
                    lag = max(0, high - (committed or 0))
            if lag is None or out.get(tp.topic, 0) is None:
                out[tp.topic] = None
            else:
                out[tp.topic] = out.get(tp.topic, 0) + lag  # type: ignore[operator]
        return out

    def assignment(self) -> dict[str, list[int]]:
        """The partitions this worker holds, by topic."""
        out: dict[str, list[int]] = defaultdict(list)
        try:
            for tp in self.app.consumer.assignment():
                out[tp.topic].append(tp.partition)
        except Exception:
            return {}
        return {t: sorted(ps) for t, ps in out.items()}

    def _table_ready(self) -> bool:
        try:
            len(self.table)
            return True
        except Exception:
            return False


def run_worker(
    settings: Settings,
    store: Store,
    *,
    loglevel: str = "WARNING",
    stop_grace_s: float = 20.0,
    on_started: Optional[Callable[[Any], None]] = None,
) -> None:
    """Run one worker until SIGTERM/SIGINT (what ``mcpsift worker`` does).

    A stop lets faust finish the batch in hand and commit; if its shutdown has
    not finished after ``stop_grace_s`` (faust 0.15 can hang waiting for its
    consumer thread) the process exits anyway: what was not committed is
    redelivered to whoever takes the partitions, and every write is idempotent,
    so this is no worse than a crash, which the tests cover."""
    import os
    import threading

    from faust.worker import Worker

    from mcpsift.telemetry import Telemetry

    # the detector state and the faust buffers are a large heap of long-lived objects,
    # which the cyclic GC at its default thresholds rescans every few batches; the
    # worker makes few reference cycles (bench_worker: 4,801 -> 5,752 events/s)
    gc.set_threshold(*GC_THRESHOLDS)
    logging.basicConfig(level=loglevel, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    telemetry = Telemetry.get("worker", settings.telemetry)
    worker_app = WorkerApp(settings, store, telemetry=telemetry)
    telemetry.health = worker_app.health
    if settings.worker.metrics_port:
        telemetry.serve_metrics(settings.worker.metrics_host, settings.worker.metrics_port)
    if on_started is not None:
        on_started(worker_app)

    def force_exit() -> None:
        log.warning("faust did not stop within %.0f s; exiting (uncommitted batches are redelivered)", stop_grace_s)
        telemetry.shutdown()
        logging.shutdown()
        os._exit(0)

    class _Worker(Worker):  # type: ignore[misc]
        def _schedule_shutdown(self, signal: Any) -> None:
            if not self._signal_stop_time:
                timer = threading.Timer(stop_grace_s, force_exit)
                timer.daemon = True
                timer.start()
            super()._schedule_shutdown(signal)

    worker = _Worker(worker_app.app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        telemetry.shutdown()
