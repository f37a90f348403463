"""Stream demo traffic into a running ``mcpsift serve`` (``mcpsift demo run``).

Events go to ``POST {url}/v1/events`` as NDJSON batches, with the standard
library's HTTP client (so the ``all`` extra is enough). By default as fast as
the server takes them, with the generated event times (the pipeline orders
by event time, not arrival time). With ``live``, batches are paced: the day is
sent over ``hours / speed`` of wall time, and every timestamp of every event
(its ``time``, its token's ``issued_at`` and ``expires_at``) moves by one
offset chosen so that the last event is stamped when the stream ends. Each
event is then in the recent past when it arrives (never in the future, which
a live server would only order by arrival), durations between events stay
as generated (so every time window of every rule means what it meant), and
alerts appear as the day unfolds.
Event ids are kept, so the same traffic sent twice is taken once (the
pipeline drops redeliveries); use another seed for fresh traffic.
"""

from __future__ import annotations

import datetime as _dt
import json
import time as _time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import orjson

__all__ = ["RunReport", "ServerUnreachable", "IngestRefused", "run", "check_server", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8765"


class ServerUnreachable(RuntimeError):
    """No mcpsift server answers at the URL."""


class IngestRefused(ValueError):
    """The server refused the events for want of a (valid) ingest key."""


@dataclass
class RunReport:
    url: str
    events: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    batches: int = 0
    #: HTTP status -> batches answered with it
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _request(url: str, data: Optional[bytes] = None, timeout: float = 60.0,
             content_type: str = "application/x-ndjson", api_key: Optional[str] = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (the URL is the user's server)
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers or {})


def check_server(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """``GET {url}/healthz``; raises :class:`ServerUnreachable` with what to do."""
    try:
        status, body, _ = _request(url.rstrip("/") + "/healthz", timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnreachable(
            f"no mcpsift server answers at {url} ({reason}); start it with `mcpsift serve` "
            f"(or pass --url where it listens)"
        ) from None
    if status != 200:
        raise ServerUnreachable(f"{url}/healthz answered HTTP {status}: is this an mcpsift server? start one with `mcpsift serve`")
    try:
        return json.loads(body)
    except ValueError:
        raise ServerUnreachable(f"{url}/healthz did not answer JSON: is this an mcpsift server?") from None


def _parse(value: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _fmt(value: _dt.datetime) -> str:
    return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _shift(line: bytes, delta: _dt.timedelta) -> tuple[bytes, float]:
    """The event with every timestamp moved by ``delta``, and its new time (POSIX seconds)."""
    d = orjson.loads(line)
    new_time = _parse(d["time"]) + delta
    d["time"] = _fmt(new_time)
    token = d.get("token")
    if isinstance(token, dict):
        for key in ("issued_at", "expires_at"):
            if isinstance(token.get(key), str):
                token[key] = _fmt(_parse(token[key]) + delta)
    return orjson.dumps(d), new_time.timestamp()


def run(
    url: str = DEFAULT_URL,
    *,
    directory: Optional[str | Path] = None,
    seed: int = 1,
    hours: float = 8.0,
    tenants: int = 4,
    live: bool = False,
    speed: float = 1.0,
    batch: int = 500,
    on_progress: Optional[Callable[[RunReport], None]] = None,
    now: Optional[_dt.datetime] = None,
    work_dir: Optional[str | Path] = None,
    api_key: Optional[str] = None,
) -> RunReport:
    """Send demo traffic (``directory``, or freshly generated) to ``url`` with
    ``api_key`` (an ingest key); return the counts.

    Raises :class:`ServerUnreachable` when nothing answers at ``url``, and
    :class:`IngestRefused` when serve refuses the key.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    if speed <= 0:
        raise ValueError("speed must be positive")
    base = url.rstrip("/")
    check_server(base)
    if directory is None:
        import tempfile

        from .generate import generate

        with tempfile.TemporaryDirectory(prefix="mcpsift-demo-", dir=work_dir) as tmp:
            generate(tmp, seed=seed, hours=hours, tenants=tenants, progress=False)
            lines = [line for line in (Path(tmp) / "events.jsonl").read_bytes().splitlines() if line.strip()]
    else:
        path = Path(directory) / "events.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: generate it with `mcpsift demo generate --out {directory}`")
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    report = RunReport(url=base, events=len(lines))
    started = _time.monotonic()
    delta = _dt.timedelta(0)
    wall0 = 0.0
    t0 = 0.0
    if live and lines:
        first = _parse(orjson.loads(lines[0])["time"])
        last = _parse(orjson.loads(lines[-1])["time"])
        start = now or _dt.datetime.now(_dt.timezone.utc)
        end = start + (last - first) / speed
        delta = end - last
        t0 = (first + delta).timestamp()
        wall0 = _time.time()
    size = batch
    busy = 0
    i = 0
    while i < len(lines):
        chunk = lines[i : i + size]
        if live:
            shifted = [_shift(line, delta) for line in chunk]
            # send a batch once its last event's time has come (at `speed` times real time)
            due = wall0 + (shifted[-1][1] - t0) / speed
            wait = due - _time.time()
            if wait > 0:
                _time.sleep(min(wait, 3600.0))
            body = b"\n".join(s for s, _ in shifted) + b"\n"
        else:
            body = b"\n".join(chunk) + b"\n"
        status, answer, headers = _post(base, body, api_key)
        if status in (401, 403):
            raise IngestRefused(
                f"{base} refused the events (HTTP {status}): "
                + ("pass the ingest key `mcpsift serve` printed on its first start with --api-key or MCPSIFT_API_KEY"
                   if not api_key else "that key is unknown, revoked or not an ingest key")
            )
        report.statuses[status] = report.statuses.get(status, 0) + 1
        if status == 413 and size > 1:
            size = max(1, size // 2)  # the server's max_body_bytes is smaller: halve and retry
            continue
        if status == 503 and busy < 10:  # the store refused the batch; nothing was taken: retry it
            busy += 1
            retry = float(headers.get("Retry-After", "2") or 2)
            _time.sleep(min(retry, 30.0))
            continue
        busy = 0
        report.batches += 1
        report.sent += len(chunk)
        if status in (202, 422):
            verdict = orjson.loads(answer)
            report.accepted += int(verdict.get("accepted", 0))
            report.rejected += int(verdict.get("rejected", 0))
            for result in verdict.get("results", []):
                if result.get("status") != "accepted" and len(report.reasons) < 20:
                    report.reasons.append(str(result.get("reason", "")))
        else:
            report.rejected += len(chunk)
            if len(report.reasons) < 20:
                report.reasons.append(f"HTTP {status}: {answer[:200].decode(errors='replace')}")
        i += len(chunk)
        if on_progress is not None:
            on_progress(report)
    report.seconds = round(_time.monotonic() - started, 2)
    return report


def _post(base: str, body: bytes, api_key: Optional[str] = None) -> tuple[int, bytes, dict[str, str]]:
    for attempt in range(5):
        try:
            return _request(base + "/v1/events", body, timeout=120.0, api_key=api_key)
        except (urllib.error.URLError, OSError) as exc:
            if attempt == 4:
                raise ServerUnreachable(f"lost the connection to {base} ({getattr(exc, 'reason', exc)}); is `mcpsift serve` still running?") from None
            _time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")
