"""A bounded, crash-safe, on-disk FIFO of records: where a publisher parks
events while the broker or ingest is unreachable.

Layout of a spool directory::

    LOCK                        held (flock) by the one process using the spool
    0000000000000001.seg        segment files, append-only, oldest first
    0000000000000002.seg
    cursor                      the committed read position (segment, offset)
    status.json                 the last status a publisher wrote (optional)

A segment starts with a 16-byte header (``MCPSPOOL``, format version) and
holds records ``[length u32 LE][crc32 u32 LE][payload]``; the CRC covers the
length bytes and the payload, so a torn or corrupted record is recognised.
Records are read back in the order they were appended. A reader ``peek``\\ s a
batch from the committed position and ``commit``\\ s it once the batch was
delivered; the committed position is persisted (written to a temporary file
and renamed over ``cursor``), so a restarted process resumes after what was
already delivered. A segment is deleted once every record in it is committed;
when everything is committed the spool starts over with a fresh, empty
segment.

**Opening never fails on damaged data.** A torn tail of the newest segment (a
crash in the middle of a write) is cut off at the last whole record; a
corrupted record in an older segment ends that segment (the rest of it is
skipped and counted in ``status()["corrupt_bytes"]``), and reading goes on
with the next one. A missing or damaged ``cursor`` means "start from the
oldest segment": records are delivered again, never lost (the pipeline is
idempotent on ``event_id``).

**What a crash loses** (``fsync`` policy). Every append is handed to the
kernel with ``write(2)`` before :meth:`Spool.append` returns, never kept in a
user-space buffer, so:

* a *process* crash (``kill -9``, OOM kill, a segfault) loses **nothing**
  that ``append`` returned ``True`` for, under every policy: the data is in
  the page cache and the kernel writes it out;
* an *operating-system* crash or power loss loses, with

  - ``"always"``: nothing that ``append`` returned ``True`` for (the data is
    ``fdatasync``\\ ed before it returns, and the directory after a segment is
    created); the slowest policy;
  - ``"interval"`` (default): at most the records appended during the last
    ``fsync_interval`` seconds (default 1 s). The spool syncs on the first
    append after the interval elapsed, on :meth:`Spool.sync_if_due` (a
    publisher calls it every ``fsync_interval / 4``), when a segment is sealed
    and on :meth:`Spool.close`;
  - ``"never"``: whatever the kernel had not yet written back (Linux writes
    dirty pages back within about 30 s by default).

  A cursor that was not yet on disk makes records be delivered again after
  the restart (duplicates, removed downstream by ``event_id``), never lost.

**When the spool is full** (``max_bytes``, counted as the segment files' size
on disk), ``full_policy`` decides:

* ``"drop_newest"`` (default): ``append`` returns ``False`` at once and the
  record is counted in ``status()["dropped"]``;
* ``"block"``: ``append`` waits until a ``commit`` frees space (or
  ``block_timeout`` seconds pass, then drops and counts). Use it only off the
  request path (a batch job, a log shipper): an MCP request must never wait
  on a disk that is full because the network is down. Publishers never block
  inside their sender; see :mod:`mcpsift.collectors.publishers`.

One spool directory belongs to one process at a time (an exclusive ``flock``
on ``LOCK``); :func:`spool_status` reads a spool without taking it, for
``mcpsift collector status``.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

try:  # POSIX; on other systems the spool is not protected against a second process
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Spool",
    "SpoolBatch",
    "SpoolLocked",
    "spool_status",
    "FsyncPolicy",
    "FullPolicy",
    "SEGMENT_HEADER",
    "RECORD_HEADER",
]

log = logging.getLogger("mcpsift.collector.spool")

FsyncPolicy = Literal["always", "interval", "never"]
FullPolicy = Literal["drop_newest", "block"]

_MAGIC = b"MCPSPOOL"
_FORMAT = 1
SEGMENT_HEADER = 16  #: bytes before the first record of a segment
_HEADER = _MAGIC + struct.pack("<H", _FORMAT) + b"\0" * 6
_REC = struct.Struct("<II")
RECORD_HEADER = _REC.size  #: bytes before each record's payload
_CURSOR = struct.Struct("<8sQQI")
_CURSOR_MAGIC = b"MCPSCUR1"
#: a length field above this is garbage, not a record
MAX_RECORD_BYTES = 64 * 1024 * 1024
_SUFFIX = ".seg"

_MiB = 1024 * 1024


class SpoolLocked(RuntimeError):
    """Another process (or another :class:`Spool` in this one) holds the directory."""


@dataclass(frozen=True)
class SpoolBatch:
    """Records read by :meth:`Spool.peek`, oldest first; pass it to :meth:`Spool.commit`
    once they were delivered."""

    payloads: list[bytes]
    start: tuple[int, int]
    end: tuple[int, int]
    nbytes: int  # on-disk bytes of these records, headers included

    def __len__(self) -> int:
        return len(self.payloads)


def _crc(length_bytes: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length_bytes))


def _frame(payload: bytes) -> bytes:
    length = len(payload)
    lb = struct.pack("<I", length)
    return lb + struct.pack("<I", _crc(lb, payload)) + payload


class _Segment:
    __slots__ = ("seq", "path", "end", "records", "corrupt_at")

    def __init__(self, seq: int, path: Path, end: int, records: int, corrupt_at: Optional[int] = None):
        self.seq = seq
        self.path = path
        self.end = end  # offset after the last valid record
        self.records = records  # valid records in the whole segment
        self.corrupt_at = corrupt_at  # offset of the first bad record, if any


def _seg_name(seq: int) -> str:
    return f"{seq:016d}{_SUFFIX}"


def _list_segments(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.iterdir():
        if p.suffix == _SUFFIX and p.stem.isdigit():
            out.append((int(p.stem), p))
    out.sort()
    return out


def _scan(
    path: Path, from_offset: int = SEGMENT_HEADER, limit: Optional[int] = None
) -> tuple[int, int, int, Optional[int], bool]:
    """Walk a segment's records (up to ``limit`` bytes of it).

    Returns ``(valid_end, records, records_at_or_after_from_offset, corrupt_at, header_ok)``;
    ``corrupt_at`` is the offset of the first record that is torn or fails its CRC.
    """
    with open(path, "rb") as f:
        data = f.read() if limit is None else f.read(limit)
    if len(data) < SEGMENT_HEADER or data[:8] != _MAGIC:
        return SEGMENT_HEADER, 0, 0, (0 if data else None), False
    pos = SEGMENT_HEADER
    n = 0
    n_after = 0
    size = len(data)
    view = memoryview(data)
    while pos < size:
        if pos + RECORD_HEADER > size:
            return pos, n, n_after, pos, True
        length, crc = _REC.unpack_from(data, pos)
        end = pos + RECORD_HEADER + length
        if length > MAX_RECORD_BYTES or end > size:
            return pos, n, n_after, pos, True
        if _crc(data[pos : pos + 4], view[pos + RECORD_HEADER : end]) != crc:
            return pos, n, n_after, pos, True
        n += 1
        if pos >= from_offset:
            n_after += 1
        pos = end
    return pos, n, n_after, None, True


def _record_boundary(path: Path, offset: int, end: int) -> int:
    """The first record start at or after ``offset`` (``end`` when none)."""
    with open(path, "rb") as f:
        data = f.read(end)
    pos = SEGMENT_HEADER
    while pos < offset and pos + RECORD_HEADER <= len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        pos += RECORD_HEADER + length
    return min(pos, end)


def _read_cursor(path: Path) -> Optional[tuple[int, int]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) != _CURSOR.size:
        return None
    magic, seq, off, crc = _CURSOR.unpack(raw)
    if magic != _CURSOR_MAGIC or zlib.crc32(raw[:-4]) != crc:
        return None
    return seq, off


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_datasync = getattr(os, "fdatasync", os.fsync)


class Spool:
    """A bounded on-disk FIFO of byte records (see the module docstring for the
    format, the crash guarantees and the full policies).

    Thread-safe: appends may come from one thread while another peeks and
    commits. Call :meth:`close` when done (publishers do it in their own
    ``close``); a process that dies without it loses nothing more than the
    ``fsync`` policy says.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * _MiB,
        segment_bytes: Optional[int] = None,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
        full_policy: FullPolicy = "drop_newest",
        block_timeout: Optional[float] = None,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync={fsync!r}: choose 'always', 'interval' or 'never'")
        if full_policy not in ("drop_newest", "block"):
            raise ValueError(f"full_policy={full_policy!r}: choose 'drop_newest' or 'block'")
        if max_bytes < 4096:
            raise ValueError(f"max_bytes={max_bytes}: a spool needs at least 4096 bytes")
        if fsync_interval <= 0:
            raise ValueError(f"fsync_interval={fsync_interval}: give a positive number of seconds")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes or min(64 * _MiB, max(64 * 1024, self.max_bytes // 8)))
        if self.segment_bytes < 1024:
            raise ValueError(f"segment_bytes={segment_bytes}: give at least 1024")
        self.fsync = fsync
        self.fsync_interval = float(fsync_interval)
        self.full_policy = full_policy
        self.block_timeout = block_timeout

        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._closed = False
        self._segments: list[_Segment] = []
        self._read_fds: dict[int, int] = {}
        self._wfd: Optional[int] = None
        self._last_sync = time.monotonic()
        self._unsynced = False
        self._disk_bytes = 0
        self._pos = (0, 0)
        self._live_records = 0
        self._live_bytes = 0
        # counters
        self.appended = 0
        self.committed = 0
        self.dropped = 0
        self.fsyncs = 0
        self.corrupt_bytes = 0
        self.corrupt_records = 0  # damaged places found (each ends a segment's readable part)
        self.torn_tail_bytes = 0

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot create the spool directory {self.directory}: {exc.strerror}; "
                          "give spool_dir a writable path") from None
        self._lock_fd = self._take_lock()
        try:
            self._recover()
        except BaseException:
            self._release_lock()
            raise

    # -- opening -----------------------------------------------------------

    def _take_lock(self) -> Optional[int]:
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolLocked(
                    f"the spool directory {self.directory} is in use by another publisher "
                    "(process or instance); give each publisher its own spool_dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                if fcntl is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _recover(self) -> None:
        for tmp in self.directory.glob("cursor.*.tmp"):
            tmp.unlink(missing_ok=True)
        found = _list_segments(self.directory)
        for i, (seq, path) in enumerate(found):
            last = i == len(found) - 1
            size = path.stat().st_size
            end, n, _, corrupt_at, header_ok = _scan(path)
            if not header_ok:
                if last:  # created, but the header never made it to disk: start it over
                    with open(path, "wb") as f:
                        f.write(_HEADER)
                    self.torn_tail_bytes += size
                    self._segments.append(_Segment(seq, path, SEGMENT_HEADER, 0))
                else:
                    self.corrupt_bytes += size
                    self.corrupt_records += 1 if size else 0
                    log.warning("spool %s: segment %s has no valid header; skipped (%d bytes)",
                                self.directory, path.name, size)
                    path.unlink()
                continue
            if corrupt_at is not None:
                if last:  # a torn tail: the crash happened during a write; cut it off
                    self.torn_tail_bytes += size - end
                    with open(path, "r+b") as f:
                        f.truncate(end)
                        os.fsync(f.fileno())
                    log.warning("spool %s: cut a torn tail of %d bytes off %s", self.directory, size - end, path.name)
                    corrupt_at = None
                else:
                    self.corrupt_bytes += size - end
                    self.corrupt_records += 1
                    log.warning("spool %s: a damaged record at offset %d of %s; the rest of that segment "
                                "(%d bytes) is skipped", self.directory, corrupt_at, path.name, size - end)
            self._segments.append(_Segment(seq, path, end, n, corrupt_at))
        if not self._segments:
            self._new_segment(1)
        self._pos = self._position_from_cursor()
        for seg in [s for s in self._segments if s.seq < self._pos[0]]:
            self._drop_segment(seg)  # wholly delivered before the last run ended
        self._disk_bytes = sum(s.path.stat().st_size for s in self._segments)
        self._recount_live()
        if self._wfd is None:
            self._wfd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)

    def _position_from_cursor(self) -> tuple[int, int]:
        cursor = _read_cursor(self.directory / "cursor")
        first = self._segments[0]
        if cursor is None:
            if (self.directory / "cursor").exists():
                log.warning("spool %s: the cursor file is damaged; records are delivered again from the oldest "
                            "segment", self.directory)
            return first.seq, SEGMENT_HEADER
        seq, off = cursor
        by_seq = {s.seq: s for s in self._segments}
        if seq not in by_seq:
            later = [s for s in self._segments if s.seq > seq]
            if later:  # the cursor's segment was deleted: it was delivered
                return later[0].seq, SEGMENT_HEADER
            last = self._segments[-1]
            return last.seq, last.end  # the cursor is past everything we hold
        seg = by_seq[seq]
        return seq, _record_boundary(seg.path, max(off, SEGMENT_HEADER), seg.end)

    def _recount_live(self) -> None:
        seq, off = self._pos
        records = 0
        nbytes = 0
        for s in self._segments:
            if s.seq > seq:
                records += s.records
                nbytes += s.end - SEGMENT_HEADER
            elif s.seq == seq:
                records += _scan(s.path, off, s.end)[2]
                nbytes += max(0, s.end - off)
        self._live_records = records
        self._live_bytes = nbytes

    def _new_segment(self, seq: int) -> _Segment:
        path = self.directory / _seg_name(seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, _HEADER)
        if self.fsync != "never":
            _datasync(fd)
            _fsync_dir(self.directory)
            self.fsyncs += 1
        seg = _Segment(seq, path, SEGMENT_HEADER, 0)
        self._segments.append(seg)
        if self._wfd is not None:
            os.close(self._wfd)
        self._wfd = fd
        self._disk_bytes += SEGMENT_HEADER
        return seg

    def _drop_segment(self, seg: _Segment) -> None:
        fd = self._read_fds.pop(seg.seq, None)
        if fd is not None:
            os.close(fd)
        try:
            size = seg.path.stat().st_size
            seg.path.unlink()
        except FileNotFoundError:
            size = 0
        self._segments.remove(seg)
        self._disk_bytes -= size

    # -- writing -------------------------------------------------------------

    def append(self, payload: bytes, *, block: Optional[bool] = None, timeout: Optional[float] = None) -> bool:
        """Append one record. ``True`` once it is handed to the kernel (and synced
        under ``fsync="always"``); ``False`` when the spool is full (counted in
        ``dropped``) or closed. ``block`` overrides ``full_policy`` for this call."""
        return self.append_many((payload,), block=block, timeout=timeout) == 1

    def append_many(
        self, payloads: Iterable[bytes], *, block: Optional[bool] = None, timeout: Optional[float] = None
    ) -> int:
        """Append records in order with one ``write`` per segment touched; returns how
        many were appended: a prefix of ``payloads`` (the rest did not fit and
        were dropped and counted, or the spool is closed)."""
        frames = []
        for p in payloads:
            if len(p) > MAX_RECORD_BYTES:
                raise ValueError(f"a spool record is limited to {MAX_RECORD_BYTES} bytes, got {len(p)}")
            frames.append(_frame(p))
        if not frames:
            return 0
        blocking = (self.full_policy == "block") if block is None else block
        wait = self.block_timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        done = 0
        with self._lock:
            while done < len(frames):
                if self._closed:
                    break
                # a new segment may be needed on the way: keep room for its header
                room = self.max_bytes - self._disk_bytes - SEGMENT_HEADER
                take = []
                size = 0
                for fr in frames[done:]:
                    if size + len(fr) > room:
                        break
                    take.append(fr)
                    size += len(fr)
                if not take:
                    if len(frames[done]) + 2 * SEGMENT_HEADER > self.max_bytes:
                        raise ValueError(
                            f"a record of {len(frames[done])} bytes cannot fit a spool of max_bytes={self.max_bytes}"
                        )
                    if not blocking:
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._space.wait(remaining)
                    continue
                self._write_frames(take)
                done += len(take)
            dropped = len(frames) - done
            if dropped:
                self.dropped += dropped
        return done

    def _write_frames(self, frames: list[bytes]) -> None:
        i = 0
        while i < len(frames):
            active = self._segments[-1]
            if active.end - SEGMENT_HEADER > 0 and active.end >= self.segment_bytes:
                self._seal_and_roll()
                active = self._segments[-1]
            room = self.segment_bytes - active.end
            chunk = [frames[i]]
            size = len(frames[i])
            i += 1
            while i < len(frames) and size + len(frames[i]) <= room:
                chunk.append(frames[i])
                size += len(frames[i])
                i += 1
            data = b"".join(chunk)
            assert self._wfd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._wfd, view)
                view = view[written:]
            active.end += size
            active.records += len(chunk)
            self._disk_bytes += size
            self._live_records += len(chunk)
            self._live_bytes += size
            self.appended += len(chunk)
            self._unsynced = True
        if self.fsync == "always":
            self._sync_locked()
        elif self.fsync == "interval" and time.monotonic() - self._last_sync >= self.fsync_interval:
            self._sync_locked()

    def _seal_and_roll(self) -> None:
        if self.fsync != "never" and self._unsynced:
            self._sync_locked()
        self._new_segment(self._segments[-1].seq + 1)

    def _sync_locked(self) -> None:
        if self._wfd is not None and self._unsynced:
            _datasync(self._wfd)
            self.fsyncs += 1
        self._unsynced = False
        self._last_sync = time.monotonic()

    def sync(self) -> None:
        """Force the appended records to stable storage now (any policy)."""
        with self._lock:
            if not self._closed:
                self._sync_locked()

    def sync_if_due(self) -> None:
        """Under ``fsync="interval"``: sync if records are unsynced and the interval
        has passed. A publisher's sender calls it a few times per interval."""
        if self.fsync != "interval" or not self._unsynced:
            return
        with self._lock:
            if not self._closed and time.monotonic() - self._last_sync >= self.fsync_interval:
                self._sync_locked()

    # -- reading -------------------------------------------------------------

    def _rfd(self, seg: _Segment) -> int:
        fd = self._read_fds.get(seg.seq)
        if fd is None:
            fd = os.open(seg.path, os.O_RDONLY)
            self._read_fds[seg.seq] = fd
        return fd

    def peek(self, max_records: int = 1000, max_bytes: int = 4 * _MiB) -> SpoolBatch:
        """Up to ``max_records`` records (and ``max_bytes``, but always at least one)
        from the committed position, oldest first, without consuming them: the
        same records come back until :meth:`commit`."""
        with self._lock:
            start = self._pos
            seq, off = start
            payloads: list[bytes] = []
            nbytes = 0
            full = False
            while not full and len(payloads) < max_records:
                i = self._index(seq)
                seg = self._segments[i]
                if off >= seg.end:
                    if i + 1 >= len(self._segments):
                        break
                    seq, off = self._segments[i + 1].seq, SEGMENT_HEADER
                    continue
                data = os.pread(self._rfd(seg), min(seg.end - off, max(64 * 1024, max_bytes - nbytes)), off)
                pos = 0
                while len(payloads) < max_records and pos + RECORD_HEADER <= len(data):
                    length, crc = _REC.unpack_from(data, pos)
                    rec_end = pos + RECORD_HEADER + length
                    if length > MAX_RECORD_BYTES or off + rec_end > seg.end:
                        self._damaged_at(seg, off + pos)
                        break
                    if rec_end > len(data):
                        if pos == 0:  # one record larger than the chunk: read it whole
                            data = os.pread(self._rfd(seg), RECORD_HEADER + length, off)
                            continue
                        break
                    if _crc(data[pos : pos + 4], memoryview(data)[pos + RECORD_HEADER : rec_end]) != crc:
                        self._damaged_at(seg, off + pos)
                        break
                    if payloads and nbytes + rec_end - pos > max_bytes:
                        full = True
                        break
                    payloads.append(data[pos + RECORD_HEADER : rec_end])
                    nbytes += rec_end - pos
                    pos = rec_end
                off += pos
                if nbytes >= max_bytes:
                    full = True
            return SpoolBatch(payloads, start, (seq, off), nbytes)

    def _index(self, seq: int) -> int:
        for i, s in enumerate(self._segments):
            if s.seq == seq:
                return i
        raise AssertionError(f"spool segment {seq} is gone")  # pragma: no cover

    def _damaged_at(self, seg: _Segment, offset: int) -> None:
        """A record that passed the scan on open fails now (the file changed under us):
        the rest of that segment is skipped."""
        lost = seg.end - offset
        self.corrupt_bytes += lost
        self.corrupt_records += 1
        log.warning("spool %s: a damaged record at offset %d of %s; the rest of it (%d bytes) is skipped",
                    self.directory, offset, seg.path.name, lost)
        seg.end = offset
        seg.corrupt_at = offset
        seg.records = _scan(seg.path, limit=offset)[1]
        if seg is self._segments[-1]:
            self._new_segment(seg.seq + 1)  # never append after garbage
        self._recount_live()

    def commit(self, batch: SpoolBatch) -> None:
        """Mark ``batch`` (the last :meth:`peek`) delivered: persist the position after
        it, delete segments that are now wholly delivered, wake blocked appenders."""
        with self._lock:
            if self._closed:
                return
            if batch.start != self._pos:
                raise ValueError("commit() of a batch that does not start at the committed position; peek() again")
            if not batch.payloads and batch.end == self._pos:
                return
            self._pos = batch.end
            self._live_records -= len(batch.payloads)
            self._live_bytes -= batch.nbytes
            self.committed += len(batch.payloads)
            for seg in [s for s in self._segments[:-1] if s.seq < self._pos[0]]:
                self._drop_segment(seg)
            if self._live_records <= 0:
                self._reset_locked()
            else:
                self._write_cursor()
            self._space.notify_all()

    def skip(self, n: int) -> int:
        """Commit the next ``n`` records without reading them out (they were
        delivered by another way); returns how many were skipped."""
        done = 0
        while done < n:
            batch = self.peek(n - done, MAX_RECORD_BYTES)
            if not batch.payloads:
                break
            self.commit(batch)
            done += len(batch.payloads)
        return done

    def _reset_locked(self) -> None:
        """Everything is delivered: start over with one fresh, empty segment."""
        old = list(self._segments)
        if len(old) == 1 and old[0].end == SEGMENT_HEADER:
            self._write_cursor()
            return
        nxt = old[-1].seq + 1
        self._new_segment(nxt)
        self._pos = (nxt, SEGMENT_HEADER)
        self._write_cursor()  # first: a crash before the deletes below redelivers nothing
        for seg in old:
            self._drop_segment(seg)
        self._live_records = 0
        self._live_bytes = 0

    def _write_cursor(self) -> None:
        seq, off = self._pos
        body = _CURSOR_MAGIC + struct.pack("<QQ", seq, off)
        raw = body + struct.pack("<I", zlib.crc32(body))
        tmp = self.directory / f"cursor.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, raw)
            if self.fsync == "always":
                _datasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / "cursor")
        if self.fsync == "always":
            _fsync_dir(self.directory)

    # -- state ---------------------------------------------------------------

    @property
    def records(self) -> int:
        """Records appended and not yet committed."""
        return self._live_records

    @property
    def nbytes(self) -> int:
        """On-disk bytes of the records not yet committed (headers included)."""
        return self._live_bytes

    @property
    def disk_bytes(self) -> int:
        """Size of the segment files: what ``max_bytes`` bounds."""
        return self._disk_bytes

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "dir": str(self.directory),
                "records": self._live_records,
                "bytes": self._live_bytes,
                "disk_bytes": self._disk_bytes,
                "max_bytes": self.max_bytes,
                "segments": len(self._segments),
                "fsync": self.fsync,
                "full_policy": self.full_policy,
                "appended": self.appended,
                "committed": self.committed,
                "dropped": self.dropped,
                "fsyncs": self.fsyncs,
                "corrupt_records": self.corrupt_records,
                "corrupt_bytes": self.corrupt_bytes,
                "torn_tail_bytes": self.torn_tail_bytes,
            }

    def close(self) -> None:
        """Sync (unless ``fsync="never"``), persist the position, release the directory.
        Blocked appenders return ``False``."""
        with self._lock:
            if self._closed:
                return
            if self.fsync != "never":
                self._sync_locked()
            self._write_cursor()
            self._closed = True
            self._space.notify_all()
            if self._wfd is not None:
                os.close(self._wfd)
                self._wfd = None
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            self._release_lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Spool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, records={self._live_records}, disk_bytes={self._disk_bytes})"


def spool_status(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """What a spool directory holds, read without taking it (a publisher may be
    running on it): records and bytes not yet delivered, segments, damage, and
    whether a process holds it. For ``mcpsift collector status``."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"no spool directory at {d}: give the spool_dir a publisher was configured with")
    found = _list_segments(d)
    cursor = _read_cursor(d / "cursor")
    cur_seq, cur_off = cursor if cursor is not None else ((found[0][0], SEGMENT_HEADER) if found else (0, 0))
    records = 0
    nbytes = 0
    disk = 0
    damaged = 0
    for seq, path in found:
        try:
            end, n, n_after, corrupt_at, ok = _scan(path, max(cur_off, SEGMENT_HEADER) if seq == cur_seq else SEGMENT_HEADER)
            disk += path.stat().st_size
        except FileNotFoundError:  # deleted by the running publisher meanwhile
            continue
        if corrupt_at is not None or not ok:
            damaged += 1
        if seq > cur_seq:
            records += n
            nbytes += end - SEGMENT_HEADER
        elif seq == cur_seq:
            records += n_after
            nbytes += max(0, end - max(cur_off, SEGMENT_HEADER))
    held_by: Optional[int] = None
    in_use = False
    lock = d / "LOCK"
    if lock.exists() and fcntl is not None:
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            in_use = True
            try:
                held_by = int(os.pread(fd, 32, 0).split()[0])
            except (ValueError, IndexError, OSError):
                held_by = None
        finally:
            os.close(fd)
    return {
        "dir": str(d),
        "records": records,
        "bytes": nbytes,
        "disk_bytes": disk,
        "segments": len(found),
        "damaged_segments": damaged,  # includes a torn tail the owner cuts off on open
        "in_use": in_use,
        "pid": held_by,
    }

