"""The webhook output against a real loopback HTTP receiver; signatures are
checked with the ``standardwebhooks`` package (an independent implementation)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import threading
import time
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from mcpsift import __version__
from mcpsift.streams.sinks.outputs import (
    OutputConfigError,
    alert_document,
    build_outputs,
    clean_alert,
    parse_output_configs,
)
from tests.helpers.outputs import hostile_alert, make_alert, send_through

SECRET_A = "whsec_" + base64.b64encode(b"first-signing-key-32-bytes-long!").decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(40))).decode()
OTHER = "whsec_" + base64.b64encode(b"not-the-key-the-sender-has-used!").decode()


def _config(url: str, **options: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "secret": SECRET_A, **options}


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_signed_requests_exact_headers_and_body(http_receiver) -> None:
    receiver = http_receiver()
    alerts = [make_alert(), make_alert(session_id="sess-2", severity="critical", score=0.5)]
    before = int(time.time())
    config = _config(receiver.url + "/hooks/mcpsift", headers={"X-Team": "secops"})
    del config["secret"]
    config["secrets"] = [SECRET_A, SECRET_B]
    outcomes = send_through(config, alerts)
    assert [o.kind for o in outcomes] == ["delivered", "delivered"]
    assert len(receiver.requests) == 2
    by_id = {r.headers["webhook-id"]: r for r in receiver.requests}
    assert set(by_id) == {a.alert_id for a in alerts}
    for alert in alerts:
        req = by_id[alert.alert_id]
        assert (req.method, req.path) == ("POST", "/hooks/mcpsift")
        assert req.headers["content-type"] == "application/json"
        assert req.headers["user-agent"] == f"mcpsift/{__version__}"
        assert req.headers["x-team"] == "secops"
        timestamp = int(req.headers["webhook-timestamp"])
        assert before <= timestamp <= int(time.time())
        expected = {"type": "mcpsift.alert", "timestamp": "2026-11-20T08:00:01.250000Z", "data": alert_document(alert)}
        assert req.body == _compact(expected)
        # exact signature header: one v1 signature per secret, in the configured order
        when = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
        signatures = [Webhook(s).sign(alert.alert_id, when, req.body.decode()) for s in (SECRET_A, SECRET_B)]
        assert req.headers["webhook-signature"] == " ".join(signatures)
        for secret in (SECRET_A, SECRET_B):  # a receiver holding either key accepts it
            assert Webhook(secret).verify(req.body, req.headers) == expected
        with pytest.raises(WebhookVerificationError):
            Webhook(OTHER).verify(req.body, req.headers)


@pytest.mark.parametrize("source", ["file", "env"])
def test_secrets_from_file_or_env(http_receiver, tmp_path, monkeypatch, source: str) -> None:
    receiver = http_receiver()
    config = _config(receiver.url)
    del config["secret"]
    if source == "file":
        (tmp_path / "whsec").write_text(f"{SECRET_A}\n{SECRET_B}\n")
        config["secret_file"] = str(tmp_path / "whsec")
    else:
        monkeypatch.setenv("MCPSIFT_TEST_WHSEC", f"{SECRET_A} {SECRET_B}")
        config["secret_env"] = "MCPSIFT_TEST_WHSEC"
    assert send_through(config, [make_alert()])[0].kind == "delivered"
    (req,) = receiver.requests
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET_A, SECRET_B):
        Webhook(secret).verify(req.body, req.headers)


def test_batch_is_sent_concurrently_up_to_concurrency(http_receiver) -> None:
    lock = threading.Lock()
    in_flight = [0, 0]  # now, max

    def slow(req):
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        time.sleep(0.25)
        with lock:
            in_flight[0] -= 1
        return 200, {}, b""

    receiver = http_receiver(slow)
    alerts = [make_alert(session_id=f"s{i}") for i in range(8)]
    started = time.monotonic()
    outcomes = send_through(_config(receiver.url, concurrency=4), alerts)
    elapsed = time.monotonic() - started
    assert [o.kind for o in outcomes] == ["delivered"] * 8
    assert in_flight[1] == 4
    assert elapsed < 8 * 0.25 * 0.75  # 2 rounds of 4, not 8 one after another
    assert {r.headers["webhook-id"] for r in receiver.requests} == {a.alert_id for a in alerts}


#: status answered -> (headers, outcome kind, throttle, retry_after_s)
STATUSES = {
    200: ({}, "delivered", False, None),
    204: ({}, "delivered", False, None),
    410: ({}, "disable", False, None),
    500: ({}, "retry", False, None),
    400: ({}, "retry", False, None),
    429: ({"Retry-After": "7"}, "retry", True, 7.0),
    503: ({}, "retry", True, None),
}


def test_status_outcomes_in_input_order(http_receiver) -> None:
    """One batch, one alert per status; the outcomes come back in the batch's order."""
    alerts = {status: make_alert(session_id=f"s{status}") for status in STATUSES}
    status_of = {a.alert_id: status for status, a in alerts.items()}

    def respond(req):
        status = status_of[req.headers["webhook-id"]]
        return status, STATUSES[status][0], b"nope" if status >= 300 else b""

    receiver = http_receiver(respond)
    outcomes = send_through(_config(receiver.url, concurrency=3), list(alerts.values()))
    assert len(receiver.requests) == len(STATUSES)
    for status, outcome in zip(STATUSES, outcomes):
        _, kind, throttle, retry_after = STATUSES[status]
        assert (outcome.kind, outcome.throttle, outcome.retry_after_s) == (kind, throttle, retry_after), status
        assert outcome.error == ("" if kind == "delivered" else f"HTTP {status}: nope")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_receiver_is_retry() -> None:
    (outcome,) = send_through(_config(f"http://127.0.0.1:{_free_port()}/"), [make_alert()])
    assert outcome.kind == "retry" and "ConnectError" in outcome.error


def test_garbage_response_is_retry() -> None:
    """A server that answers with something that is not HTTP."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        (outcome,) = send_through(_config(f"http://127.0.0.1:{server.getsockname()[1]}/"), [make_alert()])
    finally:
        thread.join(5)
        server.close()
    assert outcome.kind == "retry" and "ProtocolError" in outcome.error


def test_slow_receiver_times_out_as_retry(http_receiver) -> None:
    receiver = http_receiver(lambda req: (time.sleep(0.6), (200, {}, b""))[1])
    (outcome,) = send_through(_config(receiver.url, timeout_s=0.2), [make_alert()])
    assert outcome.kind == "retry" and "Timeout" in outcome.error


def test_tls_with_and_without_the_ca(http_receiver, tls_certs) -> None:
    receiver = http_receiver(tls=tls_certs)
    assert receiver.url.startswith("https://")
    (ok,) = send_through(_config(receiver.url, tls={"ca_file": str(tls_certs.ca_file)}), [make_alert()])
    assert ok.kind == "delivered"
    (req,) = receiver.requests
    Webhook(SECRET_A).verify(req.body, req.headers)
    (refused,) = send_through(_config(receiver.url), [make_alert()])
    assert refused.kind == "retry" and "certificate" in refused.error.lower()
    assert len(receiver.requests) == 1


def test_tls_server_name_is_the_name_checked(http_receiver, tls_certs) -> None:
    receiver = http_receiver(tls=tls_certs)  # its certificate names localhost and 127.0.0.1
    tls = {"ca_file": str(tls_certs.ca_file)}
    (ok,) = send_through(_config(receiver.url, tls={**tls, "server_name": "localhost"}), [make_alert()])
    assert ok.kind == "delivered"
    (wrong,) = send_through(_config(receiver.url, tls={**tls, "server_name": "siem.example"}), [make_alert()])
    assert wrong.kind == "retry" and "siem.example" in wrong.error
    assert len(receiver.requests) == 1


def test_mutual_tls_sends_the_client_certificate(http_receiver, client_cert) -> None:
    cert_file, key_file, server = client_cert
    receiver = http_receiver(tls=server)  # demands a client certificate from its client CA
    tls = {"ca_file": str(server.ca_file)}
    (ok,) = send_through(_config(receiver.url, tls={**tls, "cert_file": str(cert_file), "key_file": str(key_file)}), [make_alert()])
    assert ok.kind == "delivered"
    (refused,) = send_through(_config(receiver.url, tls=tls), [make_alert()])
    assert refused.kind == "retry"
    assert len(receiver.requests) == 1


def test_hostile_alert_stays_valid_signed_json(http_receiver) -> None:
    receiver = http_receiver()
    alert = hostile_alert()
    (outcome,) = send_through(_config(receiver.url), [alert])
    assert outcome.kind == "delivered"
    (req,) = receiver.requests
    text = req.body.decode("utf-8")  # strict: valid UTF-8
    assert all(ord(c) >= 0x20 for c in text)  # every control character is escaped
    payload = Webhook(SECRET_A).verify(req.body, req.headers)
    cleaned = clean_alert(alert)
    assert payload["data"] == alert_document(cleaned)
    assert len(payload["data"]["description"]) == 20_000  # kept whole
    assert "\n" in payload["data"]["title"] and "\u2028" in payload["data"]["title"]  # round-tripped
    assert "\ufffd" in payload["data"]["title"]  # the lone surrogate, replaced when the alert was cleaned


@pytest.mark.parametrize(
    "options, key, secret_text",
    [
        ({"secret": "not-a-standard-webhooks-secret"}, "must start with 'whsec_'", "not-a-standard"),
        ({"secret": "whsec_%%%%secretvalue%%%%"}, "not valid base64", "secretvalue"),
        ({"secret": "whsec_" + base64.b64encode(b"tiny-key").decode()}, "8 bytes", "dGlueS1rZXk"),
        ({"secret": None, "secrets": [SECRET_A, "whsec_bad!value"]}, "secrets[1]", "bad!value"),
        ({"secret": None, "secrets": []}, "secrets: the list is empty", None),
        ({"secrets": [SECRET_B]}, "give secret or secrets, not both", SECRET_A[6:]),
        ({"secret": None}, "needs a signing secret", None),
        ({"secret": None, "secret_env": "MCPSIFT_TEST_UNSET_VAR"}, "MCPSIFT_TEST_UNSET_VAR is not set", None),
        ({"secret_env": "HOME"}, "give one of secret, secret_file, secret_env", SECRET_A[6:]),
        ({"secret": None, "secret_file": "/nonexistent/whsec"}, "secret_file /nonexistent/whsec", None),
        ({"headers": {"Webhook-Id": "x"}}, "headers: 'webhook-id' is set by the webhook output", None),
        ({"headers": {"X-Ok": "a\r\nInjected: 1"}}, "may not contain CR, LF or NUL", None),
        ({"headers": {"Content-Type": "text/plain"}}, "is set by the output itself", None),
        ({"url": "ftp://user:hunter2@example.com/x"}, "url: must be an http:// or https:// URL", "hunter2"),
        ({"url": "http:///nohost"}, "with a host", None),
    ],
)
def test_bad_config_is_a_clear_error(monkeypatch, options, key, secret_text) -> None:
    monkeypatch.delenv("MCPSIFT_TEST_UNSET_VAR", raising=False)
    config = _config("https://siem.example/hook", name="soc")
    config.update(options)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(OutputConfigError) as err:
        parse_output_configs([config])
    message = str(err.value)
    assert "outputs[0] (soc)" in message and key in message
    if secret_text:
        assert secret_text not in message


def test_describe_shows_no_secret_or_credentials() -> None:
    url = "https://user:hunter2@siem.example:8443/hook?token=abc123"
    (output,) = build_outputs(parse_output_configs([_config(url, headers={"Authorization": "Bearer xyz"})]))
    text = output.describe()
    assert text == "webhook https://siem.example:8443/hook (1 signing key(s))"
    assert repr(output.config).count(SECRET_A) == 0 and "xyz" not in text


def test_timestamp_is_the_sending_time_of_each_request(http_receiver) -> None:
    """Late requests of a slow batch are not signed with a stale time (receivers allow ~5 min)."""
    receiver = http_receiver(lambda req: (time.sleep(1.05), (200, {}, b""))[1])
    alerts = [make_alert(session_id="first"), make_alert(session_id="second")]
    assert [o.kind for o in send_through(_config(receiver.url, concurrency=1), alerts)] == ["delivered"] * 2
    first, second = sorted(int(r.headers["webhook-timestamp"]) for r in receiver.requests)
    assert second >= first + 1
    for req in receiver.requests:
        Webhook(SECRET_A).verify(req.body, req.headers)
