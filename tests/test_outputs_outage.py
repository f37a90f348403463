"""Every output through the durable path (store, outbox, dispatcher) against
its real receiver on loopback: the receiver is down, the process restarts in
the middle, the receiver comes back — every alert arrives exactly once. HTTP
receivers that answer 500 first get the alert again, once, later.

(syslog over UDP is fire and forget — nothing to detect an outage with — so it
has no outage test; docs/outputs.md says so.)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from mcpsift.streams.outbox import Dispatcher, Outbox, output_status
from mcpsift.streams.sinks import AlertSink
from mcpsift.streams.sinks.outputs import parse_output_configs
from tests.fixtures.receivers import wait_until
from tests.helpers.outputs import make_alert

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BOM = b"\xef\xbb\xbf"


def _ok_hec(req: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b'{"text":"Success","code":0}'


def _ok_bulk(req: Any) -> tuple[int, dict[str, str], bytes]:
    n = req.body.count(b"\n") // 2
    return 200, {}, json.dumps({"errors": False, "items": [{"create": {"status": 201}}] * n}).encode()


def _hec_ids(body: bytes) -> list[str]:
    decoder, text, at, ids = json.JSONDecoder(), body.decode(), 0, []
    while at < len(text):
        obj, at = decoder.raw_decode(text, at)
        ids.append(obj["event"]["alert_id"])
        while at < len(text) and text[at].isspace():
            at += 1
    return ids


def _bulk_ids(body: bytes) -> list[str]:
    lines = body.splitlines()
    return [json.loads(action)["create"]["_id"] for action in lines[0::2]]


class Http:
    """An HTTP receiver that can answer 500 to the first ``failures`` requests."""

    def __init__(self, factory: Callable[..., Any], ok: Callable[[Any], tuple], ids: Callable[[bytes], list[str]]):
        self.failures = 0
        self.ids_of = ids

        def respond(req: Any) -> tuple:
            if self.failures > 0:
                self.failures -= 1
                return 500, {}, b"internal error"
            return ok(req)

        self.receiver = factory(respond)

    def down(self) -> None:
        self.receiver.stop()

    def up(self) -> None:
        self.receiver.start()

    def received(self) -> Counter:
        return Counter(i for r in self.receiver.ok_requests() for i in self.ids_of(r.body))


class Syslog:
    def __init__(self, factory: Callable[..., Any], kind: str, tls: Any = None):
        self.receiver = factory(kind, tls)

    def down(self) -> None:
        self.receiver.stop()

    def up(self) -> None:
        self.receiver.start()

    def received(self) -> Counter:
        return Counter(json.loads(m.split(BOM, 1)[1])["alert_id"] for m in self.receiver.messages)


class File:
    """The file output's outage: its directory's place is taken by a regular file."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "alerts"
        self.path = self.dir / "alerts.jsonl"

    def down(self) -> None:
        self.dir.write_text("not a directory")

    def up(self) -> None:
        self.dir.unlink()

    def received(self) -> Counter:
        return Counter(json.loads(l)["alert_id"] for l in self.path.read_text().splitlines())


def _target(kind: str, http_receiver: Any, syslog_receiver: Any, tls_certs: Any, tmp_path: Path) -> tuple[Any, dict]:
    if kind == "webhook":
        t = Http(http_receiver, lambda r: (200, {}, b""), lambda b: [json.loads(b)["data"]["alert_id"]])
        return t, {"url": t.receiver.url, "secret": WHSEC}
    if kind == "splunk_hec":
        t = Http(http_receiver, _ok_hec, _hec_ids)
        return t, {"url": t.receiver.url, "token": "hec-token"}
    if kind == "elastic":
        t = Http(http_receiver, _ok_bulk, _bulk_ids)
        return t, {"url": t.receiver.url, "api_key": "aWQ6a2V5"}
    if kind == "ocsf":
        t = Http(http_receiver, lambda r: (200, {}, b""), lambda b: [json.loads(b)["finding_info"]["uid"]])
        return t, {"url": t.receiver.url}
    if kind == "syslog_tcp":
        t = Syslog(syslog_receiver, "tcp")
        return t, {"type": "syslog", "host": "127.0.0.1", "port": t.receiver.port, "transport": "tcp"}
    if kind == "syslog_tls":
        t = Syslog(syslog_receiver, "tls", tls_certs)
        return t, {"type": "syslog", "host": "127.0.0.1", "port": t.receiver.port, "transport": "tls",
                   "tls": {"ca_file": str(tls_certs.ca_file)}}
    t = File(tmp_path)
    return t, {"path": str(t.path)}


KINDS = ["webhook", "splunk_hec", "elastic", "ocsf", "syslog_tcp", "syslog_tls", "file"]


def _delivered(store: Any, name: str) -> int:
    return store.delivery_summary().get(name, {}).get("delivered", 0)


@pytest.mark.parametrize("kind", KINDS)
def test_outage_and_restart_deliver_every_alert_exactly_once(
    kind, store, http_receiver, syslog_receiver, tls_certs, tmp_path
) -> None:
    target, options = _target(kind, http_receiver, syslog_receiver, tls_certs, tmp_path)
    entry = {"type": kind, "name": "out", "retry_schedule_s": [0.2] * 100, "timeout_s": 2, "batch_size": 3, **options}
    configs = parse_output_configs([entry])
    alerts = [make_alert(session_id=f"s-{i}", title=f"alert {i}") for i in range(8)]
    target.down()

    first = Dispatcher(store, configs, poll_s=0.05)
    sink = AlertSink(store, outbox=Outbox(store, configs, first))
    first.start()
    for alert in alerts[:5]:
        sink.add(alert)
    sink.flush()
    assert wait_until(lambda: output_status(store, configs)[0]["last_error"] is not None)
    first.stop()  # the process restarts while the receiver is down

    second = Dispatcher(store, configs, poll_s=0.05)
    sink = AlertSink(store, outbox=Outbox(store, configs, second))
    for alert in alerts:  # recovery replays the first five; three are new
        sink.add(alert)
    sink.flush()
    if isinstance(target, Http):
        target.failures = 2  # back, but the first two requests fail
    target.up()
    second.start()
    try:
        assert wait_until(lambda: _delivered(store, "out") == len(alerts), timeout=30), output_status(store, configs)
        time.sleep(0.3)
    finally:
        second.stop()
    # another restart replays the same alerts again: nothing is sent twice
    third = Dispatcher(store, configs, poll_s=0.05)
    sink = AlertSink(store, outbox=Outbox(store, configs, third))
    third.start()
    try:
        for alert in alerts:
            sink.add(alert)
        sink.flush()
        time.sleep(0.5)
    finally:
        third.stop()
    assert target.received() == Counter({a.alert_id: 1 for a in alerts})
    status = output_status(store, configs)[0]
    assert (status["backlog"], status["dead"], status["delivered"]) == (0, 0, len(alerts))


@pytest.mark.parametrize("kind", ["webhook", "splunk_hec", "elastic", "ocsf"])
def test_410_disables_every_http_output(kind, store, http_receiver, syslog_receiver, tls_certs, tmp_path) -> None:
    target, options = _target(kind, http_receiver, syslog_receiver, tls_certs, tmp_path)
    target.receiver.responder = lambda req: (410, {}, b"gone")
    configs = parse_output_configs([{"type": kind, "name": "out", **options}])
    dispatcher = Dispatcher(store, configs, poll_s=0.05)
    sink = AlertSink(store, outbox=Outbox(store, configs, dispatcher))
    dispatcher.start()
    try:
        sink.add(make_alert())
        sink.flush()
        assert wait_until(lambda: dispatcher.status()[0]["disabled_by_receiver"] is not None)
    finally:
        dispatcher.stop()
    status = output_status(store, configs)[0]
    assert "410" in status["disabled_by_receiver"]["reason"] and status["backlog"] == 1
