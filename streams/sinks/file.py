"""The ``file`` output: alerts as JSON lines in a size-rotated file, for log
shippers (Filebeat, Vector, Fluent Bit, the Splunk forwarder) to tail.

One :func:`~mcpsift.streams.sinks.outputs.alert_document` per line: compact
JSON, UTF-8, ending in ``\\n``. JSON escapes every control character, so a
newline inside a field never breaks a line; U+2028/U+2029 are escaped too,
for readers that treat them as line ends. Nothing is truncated: a line is as
long as its alert.

When the next line would make ``path`` larger than ``max_bytes`` it is renamed
``path.1`` (``path.1`` becomes ``path.2`` ..., ``path.<backups>`` is dropped)
and a new ``path`` is started; a line is never split across files. An alert
counts as delivered once its line is handed to the operating system (and, with
``fsync: true``, on disk). :class:`RotatingLineWriter` is reused by the
``ocsf`` output's file mode.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO, Literal, Optional, Sequence

import orjson
from pydantic import BaseModel, ConfigDict, Field

from mcpsift.alerts import Alert

from .outputs import Outcome, Output, OutputConfig, alert_document, register_output

__all__ = [
    "FileConfig",
    "FileOutput",
    "PartialWrite",
    "RotatingLineWriter",
    "RotationOptions",
    "json_line",
    "write_outcomes",
]

MiB = 1024 * 1024

# JSON allows these raw inside strings, but some line readers (Python's
# str.splitlines, some editors and viewers) end a line at them.
_LINE_SEPARATORS = (("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def json_line(document: Any) -> bytes:
    """``document`` as one compact JSON line (UTF-8, ``\\n``-terminated)."""
    data = orjson.dumps(document)
    for raw, escaped in _LINE_SEPARATORS:
        if raw in data:  # only possible inside a string, where the escape means the same
            data = data.replace(raw, escaped)
    return data + b"\n"


class PartialWrite(Exception):
    """Writing stopped at an OS error after the first ``written`` lines were written."""

    def __init__(self, written: int, cause: OSError, path: Path):
        self.written = written
        self.cause = cause
        self.path = path
        reason = cause.strerror or str(cause)
        super().__init__(f"cannot write {path}: {reason} (check the path and its permissions and free space)")


class RotatingLineWriter:
    """Appends whole lines to ``path``, rotating it at ``max_bytes`` and keeping
    ``backups`` old files (``path.1`` is the newest).

    Thread-safe: :meth:`write_lines` holds a lock, so outputs can call it from
    worker threads. The file is opened at the first write (creating missing
    parent folders) and reopened when something else moved or deleted it.
    A line longer than ``max_bytes`` gets a file of its own.
    """

    def __init__(self, path: Path, max_bytes: int = 100 * MiB, backups: int = 5, fsync: bool = False):
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be >= 1 and backups >= 0")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._file: Optional[BinaryIO] = None
        self._size = 0
        self._lock = threading.Lock()

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Append ``lines`` (each ending in ``\\n``) and flush them to the OS (and
        the disk with ``fsync``). Raises :class:`PartialWrite` on an OS error; no
        half line is left behind."""
        with self._lock:
            done = 0
            try:
                self._check_current()
                while done < len(lines):
                    self._open()
                    end, size = done, self._size
                    while end < len(lines) and (size == 0 or size + len(lines[end]) <= self.max_bytes):
                        size += len(lines[end])
                        end += 1
                    if end == done:  # the next line does not fit in the current file
                        self._rotate()
                        continue
                    self._append(b"".join(lines[done:end]))
                    done = end
            except OSError as exc:
                raise PartialWrite(done, exc, self.path) from None

    def close(self) -> None:
        """Close the current file (the next write opens it again)."""
        with self._lock:
            self._close_file()

    def _check_current(self) -> None:
        """Reopen when ``path`` is no longer the open file (rotated or deleted by someone else)."""
        if self._file is None:
            return
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self._file.fileno()))
        except OSError:
            same = False
        if not same:
            self._close_file()

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab", buffering=0)  # unbuffered: a write is with the OS when it returns
            self._size = os.fstat(self._file.fileno()).st_size
        return self._file

    def _append(self, data: bytes) -> None:
        file = self._open()
        start = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[file.write(view) :]
            if self.fsync:
                os.fsync(file.fileno())
        except OSError:
            try:  # never leave a partial line for the next write to extend
                file.truncate(start)
            except OSError:
                pass
            self._close_file()
            raise
        self._size = start + len(data)

    def _rotate(self) -> None:
        self._close_file()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
            self._size = 0


async def write_outcomes(writer: RotatingLineWriter, lines: Sequence[bytes]) -> list[Outcome]:
    """Write ``lines`` (one per alert) in a worker thread; one outcome per line."""
    try:
        await asyncio.to_thread(writer.write_lines, lines)
    except PartialWrite as exc:
        failed = Outcome("retry", str(exc))
        return [Outcome.ok()] * exc.written + [failed] * (len(lines) - exc.written)
    return [Outcome.ok()] * len(lines)


class RotationOptions(BaseModel):
    """File options shared by the outputs that write JSON lines (``file``, ``ocsf``)."""

    model_config = ConfigDict(extra="forbid")

    #: rotate when the next line would make the file larger than this
    max_bytes: int = Field(default=100 * MiB, ge=1)
    #: rotated files kept: path.1 (newest) .. path.N; 0 keeps none
    backups: int = Field(default=5, ge=0, le=1000)
    #: also fsync after every write (slower; survives a power cut)
    fsync: bool = False

    def writer(self, path: Path) -> RotatingLineWriter:
        return RotatingLineWriter(Path(path).expanduser(), self.max_bytes, self.backups, self.fsync)


class FileConfig(OutputConfig, RotationOptions):
    type: Literal["file"]
    #: the JSONL file; missing parent folders are created
    path: Path


@register_output
class FileOutput(Output):
    """JSON lines of the canonical alert, for a log shipper to tail."""

    type = "file"
    Config = FileConfig

    def __init__(self, config: FileConfig):
        super().__init__(config)
        self.config: FileConfig = config
        self._writer = config.writer(config.path)

    async def send(self, alerts: Sequence[Alert]) -> list[Outcome]:
        return await write_outcomes(self._writer, [json_line(alert_document(a)) for a in alerts])

    async def close(self) -> None:
        self._writer.close()

    def describe(self) -> str:
        return f"file {self._writer.path}"
