"""The splunk_hec output against a loopback receiver that answers like Splunk HEC."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from typing import Any

import pytest

from mcpsift.streams.sinks.outputs import (
    OutputConfigError,
    alert_document,
    build_outputs,
    clean_alert,
    parse_output_configs,
)
from mcpsift.streams.sinks.splunk_hec import TRUNCATION_MARK
from mcpsift.streams.sinks.webhook import USER_AGENT
from tests.helpers.outputs import hostile_alert, make_alert, send_through

TOKEN = "11111111-2222-3333-4444-555555555555"
SUCCESS = (200, {"content-type": "application/json"}, b'{"text":"Success","code":0}')


def hec(reply: tuple[int, dict[str, str], bytes] = SUCCESS, token: str = TOKEN):
    """A responder that checks the token as HEC does, then gives ``reply``."""

    def respond(req: Any) -> tuple[int, dict[str, str], bytes]:
        auth = req.headers.get("authorization")
        if auth is None:
            return 401, {}, b'{"text":"Token is required","code":2}'
        if auth != f"Splunk {token}":
            return 403, {}, b'{"text":"Invalid token","code":4}'
        return reply

    return respond


def config(receiver: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "splunk_hec", "url": receiver.url, "token": TOKEN, **extra}


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_concatenated(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a HEC body, read the way HEC reads them (no separator needed)."""
    text, decoder, objects, i = body.decode("utf-8"), json.JSONDecoder(), [], 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text):
            obj, i = decoder.raw_decode(text, i)
            objects.append(obj)
    return objects


def test_envelope_is_exact_and_batched(http_receiver):
    receiver = http_receiver(hec())
    first = make_alert()
    second = make_alert(rule_id="tool.poisoning", principal_subject=None, session_id=None, server_resource=None)
    outcomes = send_through(
        config(receiver, url=receiver.url + "/services/collector/event", host="mcp-gw-1", index="security"),
        [first, second],
    )
    assert [o.kind for o in outcomes] == ["delivered", "delivered"]
    (req,) = receiver.requests
    assert (req.method, req.path) == ("POST", "/services/collector/event")
    assert req.headers["authorization"] == f"Splunk {TOKEN}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["user-agent"] == USER_AGENT
    assert "x-splunk-request-channel" not in req.headers
    expected_first = {
        "time": 1795161601.25,
        "host": "mcp-gw-1",
        "source": "mcpsift",
        "sourcetype": "mcpsift:alert",
        "index": "security",
        "event": alert_document(first),
        "fields": {
            "rule_id": "token.audience_mismatch",
            "severity": "high",
            "tenant": "acme",
            "principal_subject": "alice@example.com",
            "session_id": "sess-1",
            "server_resource": "https://mcp.example.com/mcp",
        },
    }
    expected_second = {
        **expected_first,
        "event": alert_document(second),
        "fields": {"rule_id": "tool.poisoning", "severity": "high", "tenant": "acme"},
    }
    assert req.body == dumps(expected_first) + b"\n" + dumps(expected_second)
    assert parse_concatenated(req.body) == [expected_first, expected_second]


def test_defaults_host_source_sourcetype_and_no_index(http_receiver):
    receiver = http_receiver(hec())
    send_through(config(receiver), [make_alert(time=make_alert().time.replace(microsecond=123456))])
    (event,) = parse_concatenated(receiver.requests[0].body)
    assert list(event) == ["time", "host", "source", "sourcetype", "event", "fields"]
    assert (event["host"], event["source"], event["sourcetype"]) == (socket.gethostname(), "mcpsift", "mcpsift:alert")
    assert event["time"] == 1795161601.123  # epoch seconds, millisecond precision


@pytest.mark.parametrize(
    "status, headers, body, kind, throttle, retry_after, error",
    [
        (410, {}, b"", "disable", False, None, "HTTP 410"),
        (500, {}, b'{"text":"Internal server error","code":8}', "retry", False, None, "Internal server error"),
        (503, {"retry-after": "7"}, b'{"text":"Server is busy","code":9}', "retry", True, 7.0, "Server is busy"),
        (429, {"retry-after": "2"}, b"", "retry", True, 2.0, "HTTP 429"),
        (400, {}, b'{"text":"Incorrect index","code":7}', "retry", False, None, "Incorrect index"),
        (400, {}, b'{"text":"Data channel is missing","code":10}', "retry", False, None, "Data channel is missing"),
        (400, {}, b'{"text":"Invalid data format","code":6}', "failed", False, None, "code 6: Invalid data format"),
        (400, {}, b'{"text":"Event field is required","code":12}', "failed", False, None, "code 12"),
        (200, {}, b"<html>OK</html>", "retry", False, None, "unexpected HEC reply (HTTP 200): <html>OK</html>"),
        (200, {}, b'{"text":"Something","code":3}', "retry", False, None, "unexpected HEC reply"),
    ],
)
def test_replies_map_to_outcomes(http_receiver, status, headers, body, kind, throttle, retry_after, error):
    receiver = http_receiver(hec((status, headers, body)))
    outcomes = send_through(config(receiver), [make_alert(), make_alert(title="second")])
    assert len(outcomes) == 2 and outcomes[0] == outcomes[1]
    assert (outcomes[0].kind, outcomes[0].throttle, outcomes[0].retry_after_s) == (kind, throttle, retry_after)
    assert error in outcomes[0].error


def test_invalid_event_number_fails_only_that_alert(http_receiver):
    reply = b'{"text":"Invalid data format","code":6,"invalid-event-number":1}'
    receiver = http_receiver(hec((400, {}, reply)))
    outcomes = send_through(config(receiver), [make_alert(title=t) for t in "abc"])
    assert [o.kind for o in outcomes] == ["retry", "failed", "retry"]
    assert "refused event 1" in outcomes[0].error


def test_wrong_token_retries_without_showing_it(http_receiver):
    receiver = http_receiver(hec(token="the-right-one"))
    (outcome,) = send_through(config(receiver), [make_alert()])
    assert outcome.kind == "retry"
    assert outcome.error == 'HTTP 403: {"text":"Invalid token","code":4}'
    assert TOKEN not in outcome.error


def test_unreachable_receiver_retries(http_receiver):
    receiver = http_receiver(hec())
    receiver.stop()
    outcomes = send_through(config(receiver, timeout_s=2), [make_alert(), make_alert(title="x")])
    assert [o.kind for o in outcomes] == ["retry", "retry"]
    assert outcomes[0].error


class AckingHec:
    """HEC with indexer acknowledgement: ackId 7 for events, then ``acks`` answers in turn."""

    def __init__(self, answers: list[bool]):
        self.answers = answers
        self.polls: list[Any] = []

    def __call__(self, req: Any) -> tuple[int, dict[str, str], bytes]:
        if req.path.startswith("/services/collector/ack"):
            self.polls.append(req)
            done = self.answers.pop(0) if self.answers else False
            return 200, {}, dumps({"acks": {"7": done}})
        return 200, {}, b'{"text":"Success","code":0,"ackId":7}'


def test_ack_waits_until_indexed(http_receiver):
    hec_ack = AckingHec([False, True])
    receiver = http_receiver(hec_ack)
    (output,) = build_outputs(parse_output_configs([config(receiver, ack=True, ack_poll_s=0.05)]))

    async def run() -> list[list[str]]:
        try:
            first = await output.send([make_alert(), make_alert(title="b")])
            hec_ack.answers = [True]
            second = await output.send([make_alert(title="c")])
            return [[o.kind for o in first], [o.kind for o in second]]
        finally:
            await output.close()

    assert asyncio.run(run()) == [["delivered", "delivered"], ["delivered"]]
    event_requests = [r for r in receiver.requests if r.path == "/services/collector/event"]
    channels = {r.headers["x-splunk-request-channel"] for r in receiver.requests}
    assert len(event_requests) == 2 and len(hec_ack.polls) == 3
    (channel,) = channels  # one channel per output, on every request
    assert uuid.UUID(channel).version == 4
    for poll in hec_ack.polls:
        assert poll.method == "POST"
        assert poll.path == f"/services/collector/ack?channel={channel}"
        assert poll.headers["authorization"] == f"Splunk {TOKEN}"
        assert json.loads(poll.body) == {"acks": [7]}


def test_ack_timeout_retries(http_receiver):
    hec_ack = AckingHec([])
    receiver = http_receiver(hec_ack)
    started = time.monotonic()
    outcomes = send_through(config(receiver, ack=True, ack_timeout_s=0.4, ack_poll_s=0.05), [make_alert()])
    elapsed = time.monotonic() - started
    assert [o.kind for o in outcomes] == ["retry"]
    assert "did not acknowledge ackId 7 within 0.4 s (not indexed yet)" in outcomes[0].error
    assert 0.4 <= elapsed < 3
    assert len(hec_ack.polls) >= 3


def test_ack_on_a_token_without_ack_counts_as_delivered(http_receiver):
    receiver = http_receiver(hec())
    outcomes = send_through(config(receiver, ack=True, ack_poll_s=0.05), [make_alert()])
    assert [o.kind for o in outcomes] == ["delivered"]
    assert [r.path for r in receiver.requests] == ["/services/collector/event"]


def test_hostile_alert_stays_valid_json_within_the_event_limit(http_receiver):
    receiver = http_receiver(hec())
    hostile = clean_alert(hostile_alert())
    outcomes = send_through(config(receiver), [hostile, make_alert()])
    assert [o.kind for o in outcomes] == ["delivered", "delivered"]
    body = receiver.requests[0].body
    body.decode("utf-8")  # valid UTF-8
    assert body.count(b"\n") == 1  # the only raw newline separates the two events
    bad, good = parse_concatenated(body)
    event = bad["event"]
    assert len(dumps(event)) <= 10_000
    assert event["description"].endswith(TRUNCATION_MARK)
    kept = event["description"][: -len(TRUNCATION_MARK)]
    assert len(kept) > 5_000 and hostile.description.startswith(kept)
    assert {k: v for k, v in event.items() if k != "description"} == {
        k: v for k, v in alert_document(hostile).items() if k != "description"
    }
    assert bad["fields"]["principal_subject"] == hostile.principal_subject
    assert good["event"] == alert_document(make_alert())


def test_no_limit_keeps_the_whole_description(http_receiver):
    receiver = http_receiver(hec())
    hostile = clean_alert(hostile_alert())
    send_through(config(receiver, max_event_bytes=0), [hostile])
    (event,) = parse_concatenated(receiver.requests[0].body)
    assert event["event"]["description"] == hostile.description and len(hostile.description) == 20_000


def test_tls_with_the_ca(http_receiver, tls_certs):
    receiver = http_receiver(hec(), tls=tls_certs)
    assert receiver.url.startswith("https://")
    trusted = send_through(config(receiver, tls={"ca_file": str(tls_certs.ca_file)}), [make_alert()])
    assert [o.kind for o in trusted] == ["delivered"]
    untrusted = send_through(config(receiver), [make_alert()])  # system store does not know the test CA
    assert untrusted[0].kind == "retry" and "CERTIFICATE_VERIFY_FAILED" in untrusted[0].error
    assert len(receiver.requests) == 1


def test_token_from_file_and_env(http_receiver, tmp_path, monkeypatch):
    receiver = http_receiver(hec())
    path = tmp_path / "hec-token"
    path.write_text(TOKEN + "\n")
    monkeypatch.setenv("MCPSIFT_TEST_HEC_TOKEN", f" {TOKEN}\n")  # surrounding whitespace is dropped
    base = {"type": "splunk_hec", "url": receiver.url}
    assert send_through({**base, "token_file": str(path)}, [make_alert()])[0].kind == "delivered"
    assert send_through({**base, "token_env": "MCPSIFT_TEST_HEC_TOKEN"}, [make_alert()])[0].kind == "delivered"
    assert [r.headers["authorization"] for r in receiver.requests] == [f"Splunk {TOKEN}"] * 2


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"url": "https://splunk:8088"}, "token is required: give token, token_file or token_env"),
        ({"url": "splunk:8088", "token": TOKEN}, "url: must be an http:// or https:// URL with a host"),
        ({"url": "https://splunk:8088", "token": TOKEN, "token_env": "X"}, "give one of token, token_file, token_env"),
        ({"url": "https://splunk:8088", "token_env": "MCPSIFT_UNSET_VAR"}, "variable MCPSIFT_UNSET_VAR is not set"),
        ({"url": "https://splunk:8088", "token": TOKEN, "ack_timeout_s": 0}, "ack_timeout_s"),
        ({"url": "https://splunk:8088", "token": TOKEN + "\nx"}, "token: must be printable ASCII"),
        ({"url": "https://splunk:8088", "token": "  "}, "token is required"),
        ({"url": "https://splunk:8088", "token": TOKEN, "acks": True}, "unknown key 'acks'"),
    ],
)
def test_config_errors_are_clear_and_hide_the_token(entry, message):
    with pytest.raises(OutputConfigError) as info:
        parse_output_configs([{"type": "splunk_hec", **entry}])
    assert message in str(info.value)
    assert TOKEN not in str(info.value)


def test_describe_names_the_receiver_not_the_token():
    entry = {"type": "splunk_hec", "url": "https://hec:s3cret@splunk:8088/", "token": TOKEN, "ack": True}
    (output,) = build_outputs(parse_output_configs([entry]))
    assert output.describe() == "splunk_hec https://splunk:8088, indexer ack"
