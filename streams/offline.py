"""The offline runner: the pipeline over a JSONL file (``mcpsift detect``).

No storage: events stream through reorder → validate → enrich → detect and
alerts are written as JSONL in the order they are produced, which depends
only on the input, so the same input gives byte-identical output.
Memory is bounded by the reorder buffer (events within the allowed
lateness) and the detectors' per-key state, not by the file size.

Two stages, which may run in two processes (:func:`detect_file`):

1. *order* (:func:`ordered_batches`): read lines, peek at each event's time
   (or, in the second process, validate each line), hold the raw lines in
   the reorder buffer, hand out batches of lines in event-time order. The buffer holds raw lines, not decoded events: ~2,400
   decoded events (30 s of traffic) fall out of the CPU caches before
   detection reaches them, which costs more than validating on release.
2. *detect* (:class:`_Detector`): validate, enrich, drop redeliveries, run
   the detectors, write alerts.

In one process they alternate; with a file on a machine with two or more
cores, stage 1 runs in a child process and the batches cross a pipe. The
child, which decodes every line to validate it anyway, also runs the
stateless detectors on each event (streams/detect.py, ``reader_alerts``)
and sends their alerts along with the line; the parent runs the stateful
ones. (Running stateful detectors in the child too, on events in order, was
measured slower: the child is already the busier process.) Both give the
same batches in the same order, and the alerts of one event in the same
order, hence the same bytes out.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator, Optional

import msgspec

from mcpsift.alerts import Alert
from mcpsift.detectors.base import NO_ALERTS
from mcpsift.events import InvalidEvent, decode_event, decode_validated, peek_time
from mcpsift.settings import Settings

from .pipeline import Pipeline
from .reorder import ReorderBuffer

__all__ = ["DetectReport", "detect_lines", "detect_file", "ordered_batches", "alert_line"]

#: lines between two releases of the reorder buffer (releasing per line costs
#: more than the detectors); part of the output's definition, so fixed
RELEASE_EVERY = 256

#: how far behind the reading position mapped pages of the input are dropped
_DROP_EVERY = 64 << 20

#: below this, starting a second process costs more than it saves
TWO_PROCESSES_FROM_BYTES = 8 << 20


# one item: (event time or None, line number, raw line, verdict) where the
# verdict is None (not validated yet), True (validated by stage 1), a list of
# alert lines (validated by stage 1, which also ran the stateless detectors:
# these are their alerts, maybe none) or the reason the line is not a valid
# event
Item = tuple[Optional[float], int, bytes, Any]


@dataclass
class DetectReport:
    lines: int = 0
    events: int = 0
    invalid: int = 0
    duplicates: int = 0
    alerts: int = 0
    late_events: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)
    processes: int = 1


def alert_line(alert: Alert) -> bytes:
    """One alert as a JSONL line (fields per spec/detections.md, in model order)."""
    return alert.model_dump_json().encode("utf-8") + b"\n"


@dataclass
class OrderStats:
    lines: int = 0
    late_events: int = 0


def ordered_batches(
    lines: Iterable[bytes],
    lateness_s: float,
    stats: OrderStats,
    *,
    validate: bool = False,
    detect: Optional[Callable[[Any, float], list[bytes]]] = None,
) -> Iterator[list[Item]]:
    """Stage 1: batches of raw lines in event-time order (within the lateness).

    With ``validate`` each line is validated here (the second process has the
    time to spare) and stage 2 only decodes; without, stage 1 only peeks at
    the time. With ``detect`` too, it is called on each valid event as soon
    as it is decoded (in file order: it must not depend on order), and its
    result (alert lines) is the verdict. A line that is invalid, or whose
    time cannot be read, is passed on at once for stage 2 to report; blank
    lines are skipped.
    """
    buffer = ReorderBuffer(lateness_s)
    number = 0
    for number, line in enumerate(lines, start=1):
        verdict: Any = None
        if validate:
            try:
                ev = decode_event(line)
                event_time: Optional[float] = ev.time.timestamp()
                verdict = True if detect is None else detect(ev, event_time)
            except InvalidEvent as exc:
                event_time, verdict = None, str(exc)
        else:
            event_time = peek_time(line)
        if event_time is None:
            if line.strip():  # blank lines are not events (strip copies: only here)
                yield [(None, number, line, verdict)]
        else:
            buffer.push(event_time, (number, line, verdict))
        if number % RELEASE_EVERY == 0:
            ready = buffer.pop_ready()
            if ready:
                yield [(t, n, raw, v) for t, _, (n, raw, v) in ready]
    for ready in (buffer.pop_ready(), buffer.drain()):
        if ready:
            yield [(t, n, raw, v) for t, _, (n, raw, v) in ready]
    stats.lines = number
    stats.late_events = buffer.late_events


class _Detector:
    """Stage 2: validate, enrich, drop redeliveries, detect, write alerts."""

    def __init__(
        self,
        settings: Settings,
        out: IO[bytes],
        on_invalid: Optional[Callable[[int, str], None]],
        on_progress: Optional[Callable[[int], None]],
        progress_every: int,
    ):
        self.pipeline = Pipeline(settings)
        self.out = out
        self.on_invalid = on_invalid
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.report = DetectReport()
        self.bytes_done = 0
        self._next_progress = progress_every

    def run(self, items: list[Item]) -> None:
        pipeline = self.pipeline
        enrich, admit, process = pipeline.enricher, pipeline.admit, pipeline.detect.process
        report, out = self.report, self.out
        valid = 0
        size = 0
        for event_time, number, line, verdict in items:
            size += len(line)
            reader = None
            try:
                if verdict is True:
                    ev = decode_validated(line)
                elif verdict is None:
                    ev = decode_event(line)
                elif isinstance(verdict, list):
                    ev = decode_validated(line)
                    reader = [Alert.model_validate_json(a) for a in verdict] if verdict else NO_ALERTS
                else:
                    raise InvalidEvent(verdict)
            except InvalidEvent as exc:
                report.invalid += 1
                if self.on_invalid is not None:
                    self.on_invalid(number, str(exc))
                continue
            valid += 1
            if not admit(enrich(ev)):
                continue
            at = event_time if event_time is not None else ev.time.timestamp()
            for alert in process(ev, at, reader):
                out.write(alert_line(alert))
                report.by_rule[alert.rule_id] = report.by_rule.get(alert.rule_id, 0) + 1
                report.alerts += 1
        report.events += valid
        self.bytes_done += size
        if self.on_progress is not None and self.bytes_done >= self._next_progress:
            self._next_progress = self.bytes_done + self.progress_every
            self.on_progress(self.bytes_done)

    def finish(self, stats: OrderStats) -> DetectReport:
        self.report.lines = stats.lines
        self.report.late_events = stats.late_events
        self.report.duplicates = self.pipeline.duplicates
        return self.report


def detect_lines(
    lines: Iterable[bytes],
    out: IO[bytes],
    settings: Optional[Settings] = None,
    *,
    on_invalid: Optional[Callable[[int, str], None]] = None,
    on_progress: Optional[Callable[[int], None]] = None,
    progress_every: int = 16 << 20,
) -> DetectReport:
    """Run the pipeline over JSONL ``lines`` (bytes, one event each) in this process.

    ``on_invalid(line_number, reason)`` is called for each line that is not a
    valid event (blank lines are skipped silently); ``on_progress(bytes)``
    about every ``progress_every`` bytes of input detected.
    """
    settings = settings or Settings()
    detector = _Detector(settings, out, on_invalid, on_progress, progress_every)
    stats = OrderStats()
    for items in ordered_batches(lines, settings.allowed_lateness_s, stats):
        detector.run(items)
    return detector.finish(stats)


def _reader_detect(settings: Settings) -> Callable[[Any, float], list[bytes]]:
    """For the reader process: enrich a decoded event and run the stateless
    detectors on it; their alerts as JSON lines. (A redelivered event's
    alerts are dropped with the event by the parent.)"""
    pipeline = Pipeline(settings)
    enrich, reader_alerts = pipeline.enricher, pipeline.detect.reader_alerts

    def run(ev: Any, event_time: float) -> list[bytes]:
        alerts = reader_alerts(enrich(ev), event_time)
        return [a.model_dump_json().encode("utf-8") for a in alerts] if alerts else []

    return run


def _order_in_child(path: str, settings: Settings, conn: Any) -> None:
    """The child process of :func:`detect_file`: stage 1 over the file, plus
    the stateless detectors.

    Sends, per batch, ``[time, line number, offset, length, verdict]`` items:
    where each line is in the file, not the line itself; the parent reads the
    lines from its own map of the file, so ~1.3 KB per event does not cross
    the pipe.
    """
    encode = msgspec.msgpack.Encoder().encode
    offsets: dict[int, int] = {}

    def lines_noting_offsets(handle: IO[bytes]) -> Iterator[bytes]:
        position = 0
        for number, line in enumerate(handle, start=1):
            if line.strip():  # blank lines never come back from ordered_batches
                offsets[number] = position
            position += len(line)
            yield line

    try:
        stats = OrderStats()
        detect = _reader_detect(settings)
        with open(path, "rb") as handle:
            batches = ordered_batches(
                lines_noting_offsets(handle), settings.allowed_lateness_s, stats, validate=True, detect=detect
            )
            for items in batches:
                conn.send_bytes(encode([(t, n, offsets.pop(n), len(raw), v) for t, n, raw, v in items]))
        conn.send_bytes(encode({"lines": stats.lines, "late_events": stats.late_events}))
    except BaseException as exc:  # tell the parent rather than leave it waiting
        conn.send_bytes(encode({"error": f"{type(exc).__name__}: {exc}"}))
    finally:
        conn.close()


def detect_file(
    path: str | os.PathLike[str],
    out: IO[bytes],
    settings: Optional[Settings] = None,
    *,
    processes: Optional[int] = None,
    on_invalid: Optional[Callable[[int, str], None]] = None,
    on_progress: Optional[Callable[[int], None]] = None,
    progress_every: int = 16 << 20,
) -> DetectReport:
    """:func:`detect_lines` over a file, reading and ordering in a second process
    when there are two or more cores (``processes=1`` forces one). Same output."""
    settings = settings or Settings()
    if processes is None:
        big = os.path.getsize(path) >= TWO_PROCESSES_FROM_BYTES
        processes = 2 if big and (os.cpu_count() or 1) >= 2 else 1
    if processes < 2:
        with open(path, "rb") as handle:
            return detect_lines(
                handle, out, settings, on_invalid=on_invalid, on_progress=on_progress, progress_every=progress_every
            )
    handle = open(path, "rb")  # an unreadable file fails here, in the caller's process
    if os.fstat(handle.fileno()).st_size == 0:
        handle.close()
        return detect_lines([], out, settings, on_invalid=on_invalid, on_progress=on_progress)
    lines = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    # fork where there is one: "spawn" re-imports the caller's __main__, which
    # breaks any script that calls this without a __main__ guard. The child
    # only reads the file and runs decode_event; it takes no lock that another
    # thread of the parent could hold.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_order_in_child, args=(os.fspath(path), settings, sender), daemon=True
    )
    child.start()
    sender.close()
    detector = _Detector(settings, out, on_invalid, on_progress, progress_every)
    decode = msgspec.msgpack.Decoder().decode
    stats = OrderStats()
    released = 0
    try:
        while True:
            try:
                message = decode(receiver.recv_bytes())
            except EOFError:
                raise RuntimeError(f"the reader process stopped unexpectedly (exit code {child.exitcode})") from None
            if isinstance(message, dict):
                if "error" in message:
                    raise OSError(f"reading {os.fspath(path)} failed: {message['error']}")
                stats = OrderStats(message["lines"], message["late_events"])
                break
            detector.run([(t, n, lines[o : o + size], v) for t, n, o, size, v in message])
            # mapped pages count as resident memory: drop those well behind the
            # reading position (a late line among them is simply read again)
            reached = message[-1][2] if message else 0
            if reached - released >= _DROP_EVERY:
                released = reached - reached % mmap.PAGESIZE - _DROP_EVERY
                if released > 0:
                    lines.madvise(mmap.MADV_DONTNEED, 0, released)
    finally:
        receiver.close()
        lines.close()
        handle.close()
        child.join(10)
        if child.is_alive():
            child.kill()
    report = detector.finish(stats)
    report.processes = 2
    return report
