"""The elastic output against a loopback receiver that answers ``_bulk`` like Elasticsearch."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any, Callable, Optional

import pytest

from mcpsift.streams.sinks.elastic import ecs_document
from mcpsift.streams.sinks.outputs import OutputConfigError, build_outputs, clean_alert, parse_output_configs
from mcpsift.streams.sinks.webhook import USER_AGENT
from tests.helpers.outputs import hostile_alert, make_alert, send_through

API_KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="
BULK_PATH = "/_bulk?filter_path=errors%2Citems.%2A.status%2Citems.%2A.error"

CREATED = {"status": 201, "result": "created", "_version": 1, "_seq_no": 0, "_primary_term": 1}
#: per-item results as Elasticsearch 8 writes them (status + error type and reason)
ERRORS = {
    409: ("version_conflict_engine_exception", "[{id}]: version conflict, document already exists (current version [1])"),
    400: ("mapper_parsing_exception", "failed to parse field [event.severity] of type [long] in document with id '{id}'"),
    429: ("es_rejected_execution_exception", "rejected execution of coordinating operation"),
    503: ("unavailable_shards_exception", "[mcpsift-alerts][0] primary shard is not active"),
}


def parse_bulk(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(action, document) pairs of an NDJSON ``_bulk`` body; raises on bad framing."""
    assert body.endswith(b"\n"), "a _bulk body must end with a newline"
    lines = body[:-1].split(b"\n")
    assert len(lines) % 2 == 0, "every action needs its document line"
    return [(json.loads(lines[i]), json.loads(lines[i + 1])) for i in range(0, len(lines), 2)]


def elasticsearch(
    status_of: Callable[[dict[str, Any]], int] = lambda doc: 201,
    api_key: Optional[str] = API_KEY,
    headers: Optional[dict[str, str]] = None,
):
    """A responder that checks the credentials and answers a realistic bulk reply."""

    def respond(req: Any) -> tuple[int, dict[str, str], bytes]:
        if api_key is not None and req.headers.get("authorization") != f"ApiKey {api_key}":
            error = {"type": "security_exception", "reason": "unable to authenticate with provided credentials"}
            return 401, {"content-type": "application/json"}, json.dumps({"error": error, "status": 401}).encode()
        items = []
        for action, doc in parse_bulk(req.body):
            meta = action["create"]
            status = status_of(doc)
            item: dict[str, Any] = {"_index": meta["_index"], "_id": meta["_id"]}
            if status == 201:
                item.update(CREATED)
            else:
                kind, reason = ERRORS[status]
                item.update(status=status, error={"type": kind, "reason": reason.format(id=meta["_id"]), "index": meta["_index"]})
            items.append({"create": item})
        reply = {"took": 4, "errors": any(i["create"]["status"] >= 300 for i in items), "items": items}
        return 200, {"content-type": "application/json", **(headers or {})}, json.dumps(reply).encode()

    return respond


def config(receiver: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "elastic", "url": receiver.url, "api_key": API_KEY, **extra}


def test_bulk_framing_is_exact(http_receiver):
    receiver = http_receiver(elasticsearch())
    alerts = [make_alert(), make_alert(title="second")]
    outcomes = send_through(config(receiver), alerts)
    assert [o.kind for o in outcomes] == ["delivered", "delivered"]
    (req,) = receiver.requests
    assert (req.method, req.path) == ("POST", BULK_PATH)
    assert req.headers["content-type"] == "application/x-ndjson"
    assert req.headers["authorization"] == f"ApiKey {API_KEY}"
    assert req.headers["user-agent"] == USER_AGENT
    lines = req.body.split(b"\n")
    assert len(lines) == 5 and lines[-1] == b""  # two lines per alert, final newline
    for i, alert in enumerate(alerts):
        assert lines[2 * i] == b'{"create":{"_index":"mcpsift-alerts","_id":"%s"}}' % alert.alert_id.encode()
        assert json.loads(lines[2 * i + 1])["event"]["id"] == alert.alert_id


def test_ecs_document_fields(http_receiver):
    receiver = http_receiver(elasticsearch())
    alert = make_alert()
    before = dt.datetime.now(dt.timezone.utc)
    send_through(config(receiver), [alert])
    after = dt.datetime.now(dt.timezone.utc)
    ((_, doc),) = parse_bulk(receiver.requests[0].body)
    created = dt.datetime.fromisoformat(doc["event"].pop("created").replace("Z", "+00:00"))
    assert before - dt.timedelta(milliseconds=1) <= created <= after
    assert doc == {
        "@timestamp": "2026-11-20T08:00:01.250000Z",
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "alert",
            "category": ["authentication", "intrusion_detection"],
            "type": ["info"],
            "severity": 73,
            "risk_score": 90.0,
            "id": alert.alert_id,
            "module": "mcpsift",
            "dataset": "mcpsift.alert",
        },
        "rule": {
            "id": "token.audience_mismatch",
            "name": "token.audience_mismatch",
            "description": "Token presented at a server outside its audience",
            "ruleset": "mcpsift",
        },
        "message": "Token minted for https://other.example/mcp was presented at https://mcp.example.com/mcp.",
        "user": {"id": "alice@example.com", "name": "alice@example.com"},
        "url": {"full": "https://mcp.example.com/mcp"},
        "threat": {"framework": "MITRE ATT&CK", "technique": {"id": ["T1550"], "subtechnique": {"id": ["T1550.001"]}}},
        "labels": {"tenant": "acme"},
        "mcpsift": {
            "client_id": "https://client.example/cimd.json",
            "session_id": "sess-1",
            "token_fingerprint": "hmac-sha256:" + "ab" * 32,
            "event_ids": ["01JEVENT0000000000000000001"],
            "detector": "auth_tokens.AudienceMismatch",
            "attack": ["T1550.001"],
        },
    }


@pytest.mark.parametrize(
    "overrides, category, severity, threat",
    [
        (
            {"rule_id": "tool.poisoning", "severity": "critical", "attack": ["AML.T0051", "AML.T0051.000"]},
            ["intrusion_detection"],
            99,
            {"framework": "MITRE ATLAS", "technique": {"id": ["AML.T0051"], "subtechnique": {"id": ["AML.T0051.000"]}}},
        ),
        (
            {"rule_id": "session.hijack", "severity": "medium", "attack": ["T1563", "AML.T0051", "T1550.001", "T1550"]},
            ["session", "intrusion_detection"],
            47,
            {"framework": "MITRE ATT&CK", "technique": {"id": ["T1563", "T1550"], "subtechnique": {"id": ["T1550.001"]}}},
        ),
        ({"rule_id": "server.unapproved", "severity": "low", "attack": []}, ["network", "intrusion_detection"], 21, None),
        ({"rule_id": "flow.exfiltration", "attack": ["custom-tag"]}, ["intrusion_detection"], 73, None),
    ],
)
def test_ecs_category_severity_and_threat_by_rule(overrides, category, severity, threat):
    doc = ecs_document(make_alert(principal_subject=None, server_resource=None, **overrides), "2026-11-20T08:00:02.000Z")
    assert doc["event"]["category"] == category and doc["event"]["type"] == ["info"]
    assert doc["event"]["severity"] == severity
    assert doc.get("threat") == threat
    assert "user" not in doc and "url" not in doc and "source" not in doc
    assert doc["mcpsift"].get("attack", []) == overrides["attack"]


def test_per_item_results_map_to_outcomes_in_order(http_receiver):
    statuses = {"a": 201, "b": 409, "c": 400, "d": 429, "e": 503}
    receiver = http_receiver(elasticsearch(lambda doc: statuses[doc["rule"]["description"]], headers={"retry-after": "3"}))
    outcomes = send_through(config(receiver), [make_alert(title=t) for t in statuses])
    assert [o.kind for o in outcomes] == ["delivered", "delivered", "failed", "retry", "retry"]
    failed, throttled, unavailable = outcomes[2], outcomes[3], outcomes[4]
    assert failed.error.startswith("HTTP 400 mapper_parsing_exception: failed to parse field [event.severity]")
    assert (throttled.throttle, throttled.retry_after_s) == (True, 3.0)
    assert throttled.error == "HTTP 429 es_rejected_execution_exception: rejected execution of coordinating operation"
    assert (unavailable.throttle, unavailable.error) == (False, "HTTP 503 unavailable_shards_exception: [mcpsift-alerts][0] primary shard is not active")


@pytest.mark.parametrize(
    "status, headers, body, kind, throttle, error",
    [
        (401, {}, b'{"error":{"type":"security_exception"},"status":401}', "retry", False, "HTTP 401: "),
        (410, {}, b"", "disable", False, "HTTP 410"),
        (503, {"retry-after": "9"}, b"", "retry", True, "HTTP 503"),
        (413, {}, b"", "retry", False, "HTTP 413"),
        (200, {}, b"<html>proxy login</html>", "retry", False, "unexpected _bulk reply for 2 alerts: <html>proxy login</html>"),
        (200, {}, b'{"errors":false,"items":[{"create":{"status":201}}]}', "retry", False, "unexpected _bulk reply for 2 alerts: 1 items"),
        (200, {}, b'{"errors":false,"items":[{"create":{"status":201}}, "junk"]}', None, False, None),
    ],
)
def test_whole_request_replies(http_receiver, status, headers, body, kind, throttle, error):
    receiver = http_receiver(lambda req: (status, headers, body))
    outcomes = send_through(config(receiver), [make_alert(), make_alert(title="b")])
    if kind is None:  # one good item, one unreadable one
        assert [o.kind for o in outcomes] == ["delivered", "retry"]
        assert outcomes[1].error == 'unreadable bulk item: "junk"'
        return
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0].kind, outcomes[0].throttle) == (kind, throttle)
    assert outcomes[0].error.startswith(error)
    if throttle:
        assert outcomes[0].retry_after_s == 9.0


def test_wrong_api_key_retries_without_showing_it(http_receiver):
    receiver = http_receiver(elasticsearch(api_key="the-right-one"))
    (outcome,) = send_through(config(receiver), [make_alert()])
    assert outcome.kind == "retry" and outcome.error.startswith("HTTP 401")
    assert API_KEY not in outcome.error


def test_basic_auth_and_pipeline(http_receiver, monkeypatch):
    receiver = http_receiver(elasticsearch(api_key=None))
    monkeypatch.setenv("MCPSIFT_TEST_ES_PASSWORD", "pä ss:word")
    entry = config(receiver, api_key=None, username="mcpsift", password_env="MCPSIFT_TEST_ES_PASSWORD", pipeline="mcpsift-geo", index="logs-mcpsift.alert-default")
    del entry["api_key"]
    assert [o.kind for o in send_through(entry, [make_alert()])] == ["delivered"]
    (req,) = receiver.requests
    assert req.path == BULK_PATH + "&pipeline=mcpsift-geo"
    assert req.headers["authorization"] == "Basic " + base64.b64encode("mcpsift:pä ss:word".encode()).decode()
    assert req.body.startswith(b'{"create":{"_index":"logs-mcpsift.alert-default","_id":')


def test_no_credentials_sends_no_authorization(http_receiver):
    receiver = http_receiver(elasticsearch(api_key=None))
    send_through({"type": "elastic", "url": receiver.url}, [make_alert()])
    assert "authorization" not in receiver.requests[0].headers


def test_hostile_alert_keeps_one_document_per_line(http_receiver):
    receiver = http_receiver(elasticsearch())
    hostile = clean_alert(hostile_alert())
    outcomes = send_through(config(receiver), [hostile, make_alert()])
    assert [o.kind for o in outcomes] == ["delivered", "delivered"]
    body = receiver.requests[0].body
    body.decode("utf-8")  # valid UTF-8
    assert body.count(b"\n") == 4  # raw newlines only between NDJSON lines
    ((action, doc), (_, plain)) = parse_bulk(body)
    assert action == {"create": {"_index": "mcpsift-alerts", "_id": hostile.alert_id}}
    assert doc["message"] == hostile.description and len(doc["message"]) == 20_000  # kept whole
    assert doc["rule"]["description"] == hostile.title
    assert doc["user"]["name"] == hostile.principal_subject
    assert doc["labels"]["tenant"] == "t|=\\\n"
    assert doc["mcpsift"]["client_id"] == hostile.client_id
    assert plain["event"]["id"] == make_alert().alert_id


def test_tls_with_the_ca(http_receiver, tls_certs):
    receiver = http_receiver(elasticsearch(), tls=tls_certs)
    trusted = send_through(config(receiver, tls={"ca_file": str(tls_certs.ca_file)}), [make_alert()])
    assert [o.kind for o in trusted] == ["delivered"]
    untrusted = send_through(config(receiver), [make_alert()])
    assert untrusted[0].kind == "retry" and "CERTIFICATE_VERIFY_FAILED" in untrusted[0].error
    assert len(receiver.requests) == 1


def test_unreachable_receiver_retries(http_receiver):
    receiver = http_receiver(elasticsearch())
    receiver.stop()
    outcomes = send_through(config(receiver, timeout_s=2), [make_alert(), make_alert(title="b")])
    assert [o.kind for o in outcomes] == ["retry", "retry"] and outcomes[0].error


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"api_key": API_KEY, "username": "u", "password": "p"}, "give either api_key or username + password, not both"),
        ({"username": "u"}, "username and password go together"),
        ({"password": "p"}, "username and password go together"),
        ({"index": "MCPsift"}, "'MCPsift' is not a valid index name"),
        ({"index": "_alerts"}, "is not a valid index name"),
        ({"api_key": API_KEY, "api_key_file": "/nonexistent/key"}, "give one of api_key, api_key_file, api_key_env"),
        ({"api_key_file": "/nonexistent/key"}, "api_key_file /nonexistent/key: No such file or directory"),
        ({"url": "ftp://es:9200"}, "url: must be an http:// or https:// URL with a host (got scheme 'ftp')"),
        ({"url": None}, "url: Input should be a valid string"),
        ({"apikey": "x"}, "unknown key 'apikey'"),
        ({"api_key": API_KEY + "\rx"}, "api_key: must be non-empty printable ASCII"),
        ({"api_key": " "}, "api_key: must be non-empty printable ASCII"),
    ],
)
def test_config_errors_are_clear_and_hide_secrets(entry, message):
    with pytest.raises(OutputConfigError) as info:
        parse_output_configs([{"type": "elastic", "url": "https://es:9200", **entry}])
    assert message in str(info.value)
    assert API_KEY not in str(info.value)


def test_describe_names_the_receiver_not_the_key():
    entry = {"type": "elastic", "url": "https://elastic:pw@es:9200/", "api_key": API_KEY}
    (output,) = build_outputs(parse_output_configs([entry]))
    assert output.describe() == "elastic https://es:9200 index mcpsift-alerts"
