"""Durable delivery: the outbox in the store (chDB), the dispatcher, a real
webhook receiver on loopback. Outages, restarts, 410, 500, 429, re-drive."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from typing import Any

from mcpsift.streams.outbox import Dispatcher, Outbox, output_status
from mcpsift.streams.sinks import AlertSink
from mcpsift.streams.sinks.outputs import OutputConfig, parse_output_configs
from tests.fixtures.receivers import HttpReceiver, wait_until
from tests.helpers.outputs import make_alert

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
FAST_RETRY = [0.2, 0.2, 0.2]


def _webhook(receiver: HttpReceiver, **extra: Any) -> list[OutputConfig]:
    config = {"type": "webhook", "name": "hook", "url": receiver.url + "/alerts", "secret": SECRET,
              "retry_schedule_s": FAST_RETRY, "timeout_s": 2}
    config.update(extra)
    return parse_output_configs([config])


def _alerts(n: int, **overrides: Any) -> list:
    return [make_alert(session_id=f"s-{i}", title=f"alert {i}", **overrides) for i in range(n)]


def _store_alerts(store: Any, outbox: Outbox, alerts: list) -> None:
    """The production path: the alert sink stores alerts, then enqueues their deliveries."""
    sink = AlertSink(store, outbox=outbox)
    for alert in alerts:
        sink.add(alert)
    sink.flush()


def _ids_received(receiver: HttpReceiver) -> Counter:
    return Counter(r.headers["webhook-id"] for r in receiver.ok_requests())


def _states(store: Any, output: str = "hook") -> Counter:
    rows = store.query_rows(
        f"SELECT state FROM {store.database}.deliveries FINAL WHERE output = {{o:String}}", {"o": output}
    )
    return Counter(r[0] for r in rows)


def test_enqueue_is_filtered_per_output_and_never_twice(store) -> None:
    configs = [
        OutputConfig(type="t", name="high-only", min_severity="high"),
        OutputConfig(type="t", name="acme-tokens", rules=["auth.token_reuse_across_audiences"], tenants=["acme"]),
        OutputConfig(type="t", name="no-tokens", exclude_rules=["auth.token_reuse_across_audiences"]),
        OutputConfig(type="t", name="off", enabled=False),
    ]
    outbox = Outbox(store, configs)
    reuse = "auth.token_reuse_across_audiences"
    alerts = [
        make_alert(rule_id=reuse, severity="critical", session_id="a"),
        make_alert(rule_id=reuse, severity="medium", session_id="b"),
        make_alert(rule_id=reuse, severity="high", tenant="other", session_id="c"),
        make_alert(rule_id="tool.poisoning", severity="low", session_id="d"),
    ]
    _store_alerts(store, outbox, alerts)
    summary = store.delivery_summary()
    assert {k: v["pending"] for k, v in summary.items()} == {"high-only": 2, "acme-tokens": 2, "no-tokens": 1}
    # a replay or redelivery of the same alerts enqueues nothing, whatever the state
    store.record_deliveries([("high-only", alerts[0].alert_id, "delivered", 1, alerts[0].time, "", alerts[0].time)])
    assert outbox.enqueue(alerts) == 0
    assert store.delivery_summary()["high-only"] == {"pending": 1, "delivered": 1, "dead": 0,
                                                     "oldest_pending": summary["high-only"]["oldest_pending"]}


def test_receiver_outage_then_every_alert_exactly_once(store, http_receiver) -> None:
    receiver = http_receiver()
    receiver.stop()  # down before the first alert
    configs = _webhook(receiver, retry_schedule_s=[0.2] * 50)
    dispatcher = Dispatcher(store, configs, poll_s=0.1)
    outbox = Outbox(store, configs, dispatcher)
    dispatcher.start()
    try:
        alerts = _alerts(25)
        _store_alerts(store, outbox, alerts)
        # attempts fail and are recorded, nothing is lost
        assert wait_until(lambda: (output_status(store, configs)[0]["last_error"] or "").startswith("Connect"))
        assert _states(store) == Counter({"pending": 25})
        receiver.start()
        assert wait_until(lambda: _states(store) == Counter({"delivered": 25}), timeout=30)
    finally:
        dispatcher.stop()
    assert _ids_received(receiver) == Counter({a.alert_id: 1 for a in alerts})


def test_restart_in_the_middle_of_an_outage_still_delivers_once(store, http_receiver) -> None:
    receiver = http_receiver()
    receiver.stop()
    configs = _webhook(receiver, retry_schedule_s=[0.2] * 50)
    first = Dispatcher(store, configs, poll_s=0.1)
    outbox = Outbox(store, configs, first)
    first.start()
    alerts = _alerts(10)
    _store_alerts(store, outbox, alerts)
    assert wait_until(lambda: output_status(store, configs)[0]["last_error"] is not None)
    first.stop()  # "the process restarts": only the store survives

    second = Dispatcher(store, configs, poll_s=0.1)
    assert Outbox(store, configs, second).enqueue(alerts) == 0  # recovery replays the same alerts
    receiver.start()
    second.start()
    try:
        assert wait_until(lambda: _states(store) == Counter({"delivered": 10}), timeout=30)
    finally:
        second.stop()
    third = Dispatcher(store, configs, poll_s=0.1)
    third.start()
    time.sleep(0.5)
    third.stop()
    assert _ids_received(receiver) == Counter({a.alert_id: 1 for a in alerts})


def test_410_disables_the_output_until_enabled(store, http_receiver) -> None:
    gone = {"on": True}
    receiver = http_receiver(lambda req: (410, {}, b"gone") if gone["on"] else (200, {}, b"{}"))
    configs = _webhook(receiver)
    dispatcher = Dispatcher(store, configs, poll_s=0.1)
    outbox = Outbox(store, configs, dispatcher)
    dispatcher.start()
    alerts = _alerts(3)
    try:
        _store_alerts(store, outbox, alerts)
        assert wait_until(lambda: dispatcher.status()[0]["disabled_by_receiver"] is not None)
        status = dispatcher.status()[0]
        assert "HTTP 410" in status["disabled_by_receiver"]["reason"] and status["backlog"] == 3
    finally:
        dispatcher.stop()
    tried = len(receiver.requests)
    assert 1 <= tried <= 3  # the first 410 stops the output (up to one batch in flight)

    # disabled survives a restart: nothing is sent
    again = Dispatcher(store, configs, poll_s=0.1)
    again.start()
    try:
        time.sleep(0.5)
        assert len(receiver.requests) == tried
        assert output_status(store, configs)[0]["disabled_by_receiver"] is not None
        gone["on"] = False
        assert again.enable("hook")
        assert wait_until(lambda: _states(store) == Counter({"delivered": 3}))
    finally:
        again.stop()
    assert _ids_received(receiver) == Counter({a.alert_id: 1 for a in alerts})
    assert output_status(store, configs)[0]["disabled_by_receiver"] is None


def test_500_retries_on_schedule_then_dead_and_redrive_delivers(store, http_receiver) -> None:
    failing = {"on": True}
    receiver = http_receiver(lambda req: (500, {}, b"boom") if failing["on"] else (200, {}, b"{}"))
    configs = _webhook(receiver, retry_schedule_s=[0.1, 0.1])
    dispatcher = Dispatcher(store, configs, poll_s=0.05)
    outbox = Outbox(store, configs, dispatcher)
    dispatcher.start()
    (alert,) = _alerts(1)
    try:
        _store_alerts(store, outbox, [alert])
        assert wait_until(lambda: _states(store) == Counter({"dead": 1}))
        assert len(receiver.requests) == 3  # first try + one per scheduled retry
        assert store.dead_deliveries("hook") == [(alert.alert_id, 3, "HTTP 500: boom")]
        status = dispatcher.status()[0]
        assert (status["dead"], status["backlog"], status["last_error"]) == (1, 0, "HTTP 500: boom")
        failing["on"] = False
        assert store.redrive_deliveries("hook") == 1
        dispatcher.wake()
        assert wait_until(lambda: _states(store) == Counter({"delivered": 1}))
    finally:
        dispatcher.stop()
    assert _ids_received(receiver) == Counter({alert.alert_id: 1})


def test_429_pauses_the_output_for_retry_after(store, http_receiver) -> None:
    answers = iter([(429, {"Retry-After": "1"}, b"slow down")])
    receiver = http_receiver(lambda req: next(answers, (200, {}, b"{}")))
    configs = _webhook(receiver, batch_size=1, concurrency=1)
    dispatcher = Dispatcher(store, configs, poll_s=0.05)
    outbox = Outbox(store, configs, dispatcher)
    dispatcher.start()
    try:
        _store_alerts(store, outbox, _alerts(2))
        assert wait_until(lambda: _states(store) == Counter({"delivered": 2}))
    finally:
        dispatcher.stop()
    times = [r.received_at for r in receiver.requests]
    assert receiver.status_log[0] == 429 and len(times) == 3
    # after the 429 the whole output waited: neither alert was tried within Retry-After
    assert times[1] - times[0] >= 0.9


def test_hostile_alert_is_stored_and_delivered_intact(store, http_receiver) -> None:
    from mcpsift.streams.sinks.outputs import alert_document, clean_alert
    from tests.helpers.outputs import hostile_alert

    receiver = http_receiver()
    configs = _webhook(receiver)
    dispatcher = Dispatcher(store, configs, poll_s=0.05)
    outbox = Outbox(store, configs, dispatcher)
    dispatcher.start()
    # events cannot carry lone surrogates (the decoder refuses them), so neither can stored alerts
    alert = clean_alert(hostile_alert())
    try:
        _store_alerts(store, outbox, [alert])
        assert wait_until(lambda: _states(store) == Counter({"delivered": 1}))
    finally:
        dispatcher.stop()
    (req,) = receiver.requests
    assert json.loads(req.body)["data"] == alert_document(alert)
