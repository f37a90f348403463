"""Who queried what: every API request is recorded in the ``api_audit`` table.

An ASGI middleware around the app; when a request under ``/v1/`` (or
``/.well-known/``) completes, it notes the time, the principal the request
was authenticated as (``request.state.principal``, set by
:func:`mcpsift.api.security.current_principal`), method, path, query string,
status, duration and client address, and hands the row to a writer thread
that inserts in batches (every second, or 500 rows). The request never waits
for the store; if the store is down, rows wait in a bounded buffer (the
oldest are dropped past 100,000, counted).

Ingest calls (``POST /v1/events``, ``/v1/traces``) are recorded too: who sent
audit events is itself audit data. Query strings are kept as sent except for
parameters that look like credentials (``token``, ``key``, ``secret``, …),
whose values become ``[REDACTED]``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import threading
import time
from collections import deque
from typing import Any, Optional

from mcpsift.store.schema import API_AUDIT_COLUMNS

__all__ = ["AuditMiddleware", "AuditWriter", "AUDIT_COLUMNS"]

log = logging.getLogger("mcpsift.api.audit")

AUDIT_COLUMNS = API_AUDIT_COLUMNS

_SECRETISH = re.compile(r"(?i)(^|&)([^=&]*(?:token|key|secret|password|passwd|auth|sig)[^=&]*)=([^&]*)")
_UTC = _dt.timezone.utc


def _clean_query(raw: bytes) -> str:
    text = raw.decode("latin-1")[:2048]
    return _SECRETISH.sub(lambda m: f"{m.group(1)}{m.group(2)}=[REDACTED]", text)


class AuditWriter:
    """Batches audit rows into the store from its own thread."""

    def __init__(self, store: Any, *, max_buffer: int = 100_000, batch: int = 500, interval_s: float = 1.0):
        self.store = store
        self.batch = batch
        self.interval_s = interval_s
        self._rows: deque[tuple[Any, ...]] = deque(maxlen=max_buffer)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.written = 0
        self.dropped = 0
        self.error: Optional[str] = None

    def add(self, row: tuple[Any, ...]) -> None:
        if len(self._rows) == self._rows.maxlen:
            self.dropped += 1
        self._rows.append(row)
        if len(self._rows) >= self.batch:
            self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mcpsift-api-audit", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def flush(self) -> int:
        rows = []
        while self._rows and len(rows) < 10_000:
            rows.append(self._rows.popleft())
        if not rows:
            return 0
        try:
            self.store.insert_api_audit(rows)
        except Exception as exc:  # the store may be briefly down: keep the rows, retry later
            self._rows.extendleft(reversed(rows))
            self.error = f"{type(exc).__name__}: {exc}"
            return 0
        self.error = None
        self.written += len(rows)
        return len(rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            while self.flush():
                pass


class AuditMiddleware:
    """Records each API request after it completes (see the module docstring)."""

    def __init__(self, app: Any, writer: AuditWriter, prefixes: tuple[str, ...] = ("/v1/", "/.well-known/")):
        self.app = app
        self.writer = writer
        self.prefixes = prefixes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        when = _dt.datetime.now(_UTC)
        status = {"code": 500}

        async def send_and_note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            principal = (scope.get("state") or {}).get("principal")
            tenants = principal.scope.tenants if principal is not None else None
            client = scope.get("client") or ("", 0)
            self.writer.add(
                (
                    when,
                    principal.subject if principal is not None else "",
                    principal.via if principal is not None else "anonymous",
                    sorted(tenants) if tenants is not None else ["*"],
                    scope.get("method", ""),
                    scope.get("path", "")[:1024],
                    _clean_query(scope.get("query_string", b"")),
                    status["code"],
                    round((time.perf_counter() - started) * 1000, 3),
                    client[0] or "",
                )
            )
