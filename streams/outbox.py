"""Durable delivery of alerts to SIEM outputs: the outbox and its dispatcher.

The rule that makes delivery durable: an alert is stored, *then* a pending
delivery row per interested output is stored (:class:`Outbox`, called by the
alert sink right after its insert), and only then does any output see it.
The :class:`Dispatcher` moves each delivery on, and records the new state
after every attempt:

* ``pending`` → ``delivered`` when the output acknowledged the alert;
* ``pending`` → ``pending`` (attempts + 1, next attempt later) on a failure,
  following the output's ``retry_schedule_s`` (with ±10 % jitter, and no
  earlier than a ``Retry-After``); 429/502/503/504 also pause the whole output;
* ``pending`` → ``dead`` when the schedule is exhausted or the receiver refused
  the alert for good; ``mcpsift outputs redrive`` makes dead ones pending again;
* an HTTP 410 disables the output (persisted, shown by ``mcpsift outputs
  status``); its deliveries stay pending until ``mcpsift outputs enable``.

Because the state lives in the store, retries survive restarts; because an
output that already knows an alert (in any state) is never given it again,
a replayed or redelivered alert is not sent twice. The one window for a
duplicate is a crash after a receiver acknowledged a batch and before its
``delivered`` rows were written (at-least-once, documented in
docs/operations.md).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from mcpsift.alerts import Alert
from mcpsift.store import Store

from .sinks.outputs import TEST_RULE_ID, Outcome, Output, OutputConfig, build_outputs, clean_alert, error_text

__all__ = ["Outbox", "Dispatcher", "send_test_alert", "synthetic_alert"]

log = logging.getLogger("mcpsift.outputs")

_UTC = _dt.timezone.utc
#: a delivery round fetches this many batches per concurrency slot
_BATCHES_PER_SLOT = 5
#: the outcome of a batch the round did not try (output paused or disabled meanwhile)
_NOT_ATTEMPTED = Outcome("retry", "not attempted")


class Outbox:
    """Records, for each stored alert, a pending delivery per output that wants it.

    Called by the alert sink after the alerts themselves were written (so a
    delivery never names an alert the store does not hold).
    """

    def __init__(self, store: Store, configs: Sequence[OutputConfig], dispatcher: Optional["Dispatcher"] = None):
        self.store = store
        self.configs = [c for c in configs if c.enabled]
        self.dispatcher = dispatcher
        self.enqueued = 0

    def enqueue(self, alerts: Sequence[Alert]) -> int:
        pairs = [(c.output_name, a.alert_id) for a in alerts for c in self.configs if c.accepts(a)]
        new = self.store.enqueue_deliveries(pairs)
        self.enqueued += new
        if new and self.dispatcher is not None:
            self.dispatcher.wake()
        return new


@dataclass
class _Lane:
    """One output and what the dispatcher knows about it."""

    output: Output
    config: OutputConfig
    disabled: Optional[dict[str, Any]] = None  # {"reason", "since"} when disabled by the receiver
    paused_until: float = 0.0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    last_error: str = ""
    last_error_at: Optional[float] = None
    last_delivered_at: Optional[float] = None
    wake: Optional[asyncio.Event] = None
    gate: Optional[asyncio.Semaphore] = None
    opened: bool = False
    task: Optional["asyncio.Task[None]"] = None
    in_flight: int = field(default=0)


def _after(config: OutputConfig, attempts: int, outcome: Outcome) -> Optional[float]:
    """Seconds until the next attempt after ``attempts`` failed ones; None when exhausted."""
    schedule = config.retry_schedule_s
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * random.uniform(0.9, 1.1)
    if outcome.retry_after_s is not None:
        delay = max(delay, outcome.retry_after_s)
    return delay


class Dispatcher:
    """Delivers pending alerts to every enabled output, from its own thread.

    :meth:`start` runs an asyncio loop in a daemon thread with one task per
    output (each with its own concurrency cap); :meth:`wake` (thread-safe)
    makes them look for work at once; :meth:`stop` lets in-flight batches
    finish, records their outcomes and closes the outputs.
    """

    def __init__(self, store: Store, configs: Sequence[OutputConfig], *, poll_s: float = 1.0):
        self.store = store
        self.poll_s = poll_s
        self.lanes = {o.name: _Lane(o, o.config) for o in build_outputs(configs)}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping: Optional[asyncio.Event] = None
        self._ready = threading.Event()
        self.error: Optional[str] = None

    # -- control (any thread) ----------------------------------------------

    def start(self) -> None:
        if not self.lanes or self._thread is not None:
            return
        states = self.store.load_output_states()
        for name, lane in self.lanes.items():
            state = states.get(name) or {}
            lane.disabled = state.get("disabled")
        self._thread = threading.Thread(target=self._run, name="mcpsift-outputs", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def wake(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_all)

    def stop(self, timeout: float = 30.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            loop.call_soon_threadsafe(self._stopping.set)  # type: ignore[union-attr]
        except RuntimeError:
            pass
        thread.join(timeout)
        self._thread = None

    def enable(self, name: str) -> bool:
        """Re-enable an output disabled by its receiver (HTTP 410). False if unknown."""
        lane = self.lanes.get(name)
        if lane is None:
            return False
        lane.disabled = None
        self.store.save_output_state(name, {"disabled": None})
        self.wake()
        return True

    # -- the loop ---------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        for lane in self.lanes.values():
            lane.wake = asyncio.Event()
            lane.gate = asyncio.Semaphore(lane.config.concurrency)
            lane.task = asyncio.create_task(self._drive(lane), name=f"output:{lane.output.name}")
        self._ready.set()
        await self._stopping.wait()
        for lane in self.lanes.values():
            lane.wake.set()  # type: ignore[union-attr]
        await asyncio.gather(*(lane.task for lane in self.lanes.values() if lane.task), return_exceptions=True)
        for lane in self.lanes.values():
            if lane.opened:
                try:
                    await lane.output.close()
                except Exception:
                    log.exception("closing output %s", lane.output.name)

    def _wake_all(self) -> None:
        for lane in self.lanes.values():
            if lane.wake is not None:
                lane.wake.set()

    async def _sleep(self, lane: _Lane, seconds: float) -> None:
        assert lane.wake is not None
        try:
            await asyncio.wait_for(lane.wake.wait(), timeout=max(seconds, 0.0))
        except asyncio.TimeoutError:
            pass
        lane.wake.clear()

    async def _drive(self, lane: _Lane) -> None:
        """Deliver ``lane``'s due alerts until stopped; never raises."""
        stopping = self._stopping
        assert stopping is not None
        while not stopping.is_set():
            try:
                worked = await self._round(lane)
            except Exception as exc:  # the store may be briefly unavailable: retry, never die
                self.error = f"{lane.output.name}: {type(exc).__name__}: {exc}"
                log.exception("output %s: delivery round failed; retrying", lane.output.name)
                worked = False
                await self._sleep(lane, 1.0)
            if not worked and not stopping.is_set():
                await self._sleep(lane, await self._idle_time(lane))

    async def _idle_time(self, lane: _Lane) -> float:
        wait = self.poll_s
        if lane.disabled is not None:
            return max(wait, 5.0)
        paused = lane.paused_until - time.time()
        if paused > 0:
            return paused
        return wait

    async def _round(self, lane: _Lane) -> bool:
        """One batch-of-batches: fetch due deliveries, send, record. True if it did work."""
        if lane.disabled is not None or time.time() < lane.paused_until:
            return False
        cfg = lane.config
        now = _dt.datetime.now(_UTC)
        # several rounds' worth at once: the store round trips, not the sends, bound a round
        due = await asyncio.to_thread(
            self.store.due_deliveries, lane.output.name, now, cfg.batch_size * cfg.concurrency * _BATCHES_PER_SLOT
        )
        if not due:
            return False
        alerts = await asyncio.to_thread(self.store.alerts_by_id, [d[0] for d in due])
        if not lane.opened:
            await lane.output.open()
            lane.opened = True
        rows: list[tuple[Any, ...]] = []
        sendable = []
        for alert_id, attempts, enqueued_at in due:
            alert = alerts.get(alert_id)
            if alert is None:  # cannot happen through Outbox; keep it visible, not stuck
                rows.append((lane.output.name, alert_id, "dead", attempts, now, "alert not found in the store", enqueued_at))
            else:
                sendable.append((clean_alert(alert), attempts, enqueued_at))
        batches = [sendable[i : i + cfg.batch_size] for i in range(0, len(sendable), cfg.batch_size)]
        results = await asyncio.gather(*(self._send(lane, [b[0] for b in batch]) for batch in batches))
        for batch, outcomes in zip(batches, results):
            for (alert, attempts, enqueued_at), outcome in zip(batch, outcomes):
                rows.append(self._next_state(lane, alert.alert_id, attempts, enqueued_at, outcome))
        await asyncio.to_thread(self.store.record_deliveries, [r for r in rows if r is not None])
        return True

    async def _send(self, lane: _Lane, alerts: list[Alert]) -> list[Outcome]:
        assert lane.gate is not None
        async with lane.gate:  # the output's concurrency cap
            if lane.disabled is not None or time.time() < lane.paused_until:
                # a 410 or a throttle arrived for an earlier batch of this round: not attempted
                return [_NOT_ATTEMPTED] * len(alerts)
            outcomes = await self._send_now(lane, alerts)
            await self._react(lane, outcomes)  # before the gate lets the next batch go
            return outcomes

    async def _react(self, lane: _Lane, outcomes: list[Outcome]) -> None:
        """What an outcome means for the whole output: a throttle pauses it, a 410 disables it."""
        for outcome in outcomes:
            if outcome.throttle:
                schedule = lane.config.retry_schedule_s
                pause = outcome.retry_after_s if outcome.retry_after_s is not None else (schedule[0] if schedule else 5.0)
                lane.paused_until = max(lane.paused_until, time.time() + pause)
            elif outcome.kind == "disable" and lane.disabled is None:
                name = lane.output.name
                lane.disabled = {"reason": outcome.error, "since": _dt.datetime.now(_UTC).isoformat()}
                await asyncio.to_thread(self.store.save_output_state, name, {"disabled": lane.disabled})
                log.error("output %s disabled: the receiver answered %s; re-enable with `mcpsift outputs enable %s`",
                          name, outcome.error, name)

    async def _send_now(self, lane: _Lane, alerts: list[Alert]) -> list[Outcome]:
        lane.in_flight += 1
        try:
            outcomes = await asyncio.wait_for(lane.output.send(alerts), timeout=lane.output.max_send_s())
            if len(outcomes) != len(alerts):
                raise RuntimeError(f"output returned {len(outcomes)} outcomes for {len(alerts)} alerts")
            return list(outcomes)
        except Exception as exc:
            log.exception("output %s raised; the batch will be retried", lane.output.name)
            return [Outcome("retry", error_text(exc))] * len(alerts)
        finally:
            lane.in_flight -= 1

    def _next_state(
        self, lane: _Lane, alert_id: str, attempts: int, enqueued_at: _dt.datetime, outcome: Outcome
    ) -> Optional[tuple[Any, ...]]:
        name = lane.output.name
        now = time.time()
        when = _dt.datetime.now(_UTC)
        if outcome is _NOT_ATTEMPTED:
            return None  # stays pending as it was
        if outcome.kind == "delivered":
            lane.delivered += 1
            lane.last_delivered_at = now
            return (name, alert_id, "delivered", attempts + 1, when, "", enqueued_at)
        lane.last_error, lane.last_error_at = outcome.error, now
        if outcome.kind == "disable":
            return None  # stays pending, attempts unchanged (the output was disabled in _react)
        attempts += 1
        delay = None if outcome.kind == "failed" else _after(lane.config, attempts, outcome)
        if delay is None:
            lane.dead += 1
            log.warning("output %s: alert %s is dead after %d attempts: %s", name, alert_id, attempts, outcome.error)
            return (name, alert_id, "dead", attempts, when, outcome.error, enqueued_at)
        lane.retried += 1
        return (name, alert_id, "pending", attempts, when + _dt.timedelta(seconds=delay), outcome.error, enqueued_at)

    # -- status -----------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Per output: backlog and totals from the store, plus this process's counters."""
        return output_status(self.store, [lane.config for lane in self.lanes.values()], self)


def output_status(
    store: Store, configs: Sequence[OutputConfig], dispatcher: Optional[Dispatcher] = None
) -> list[dict[str, Any]]:
    """Status rows for ``mcpsift outputs status`` and ``GET /v1/outputs``."""
    summary = store.delivery_summary()
    states = store.load_output_states()
    outputs = {o.name: o for o in build_outputs(configs, include_disabled=True)}
    now = _dt.datetime.now(_UTC)
    rows = []
    for config in configs:
        name = config.output_name
        entry = summary.get(name, {})
        lane = dispatcher.lanes.get(name) if dispatcher is not None else None
        disabled = lane.disabled if lane is not None else (states.get(name) or {}).get("disabled")
        oldest = entry.get("oldest_pending")
        row: dict[str, Any] = {
            "name": name,
            "type": config.type,
            "target": outputs[name].describe(),
            "enabled": config.enabled,
            "disabled_by_receiver": disabled,
            "backlog": entry.get("pending", 0),
            "oldest_pending_s": round((now - oldest).total_seconds(), 1) if oldest else None,
            "delivered": entry.get("delivered", 0),
            "dead": entry.get("dead", 0),
            "last_error": entry.get("last_error") or None,
            "last_error_at": entry["last_error_at"].isoformat() if entry.get("last_error_at") else None,
        }
        if lane is not None:
            row["paused_for_s"] = max(0.0, round(lane.paused_until - time.time(), 1))
            row["since_start"] = {"delivered": lane.delivered, "retried": lane.retried, "dead": lane.dead}
        rows.append(row)
    return rows


def synthetic_alert() -> Alert:
    """The synthetic alert ``mcpsift outputs test`` sends (rule ``mcpsift.test``)."""
    from mcpsift.alerts import make_alert_id

    now = _dt.datetime.now(_UTC)
    return Alert(
        alert_id=make_alert_id(TEST_RULE_ID, now.isoformat()),
        rule_id=TEST_RULE_ID,
        severity="low",
        time=now,
        tenant="default",
        event_ids=["mcpsift-test-event"],
        title="mcpsift test alert",
        description="A synthetic alert sent by `mcpsift outputs test` to check that this output is wired up.",
        score=0.0,
        detector=TEST_RULE_ID,
    )


def send_test_alert(configs: Sequence[OutputConfig]) -> list[dict[str, Any]]:
    """Send :func:`synthetic_alert` through every enabled output, ignoring filters;
    one result per output (name, target, ok, outcome, error, latency_ms)."""

    async def one(output: Output, alert: Alert) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await output.open()
            (outcome,) = await asyncio.wait_for(output.send([alert]), timeout=output.max_send_s())
        except Exception as exc:
            outcome = Outcome("retry", error_text(exc))
        finally:
            try:
                await output.close()
            except Exception:
                pass
        return {
            "name": output.name,
            "target": output.describe(),
            "ok": outcome.kind == "delivered",
            "outcome": outcome.kind,
            "error": outcome.error or None,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    async def run() -> list[dict[str, Any]]:
        alert = synthetic_alert()
        return list(await asyncio.gather(*(one(o, alert) for o in build_outputs(configs))))

    return asyncio.run(run())
