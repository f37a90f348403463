"""OTLP/HTTP trace ingest: ``POST /v1/traces`` on a real ``mcpsift serve``, bodies
built with the opentelemetry-proto classes, events read back from the store."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import zlib
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from mcpsift.api.app import create_app
from mcpsift.events import decode_event, to_builtins
from mcpsift.settings import Settings
from mcpsift.streams.otlp import (
    BodyTooLarge,
    UndecodableBody,
    UnsupportedMediaType,
    decompress,
    map_request,
    span_event_id,
)
from tests.helpers.read_store import stored_events

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
RAW_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
T0 = 1_780_000_000_000_000_000  # 2026-05-28T20:26:40Z in ns


# -- building OTLP requests --------------------------------------------------


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    return AnyValue(string_value=v)


def _kv(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in attributes.items()]


def span(
    name: str,
    attributes: dict[str, Any],
    *,
    kind: int = Span.SPAN_KIND_SERVER,
    start: int = T0,
    duration_ns: int = 1_250_000,
    error: str | None = None,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
) -> Span:
    s = Span(
        trace_id=os.urandom(16) if trace_id is None else trace_id,
        span_id=os.urandom(8) if span_id is None else span_id,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=_kv(attributes),
    )
    if error is not None:
        s.status.code = Status.STATUS_CODE_ERROR
        s.status.message = error
    return s


def export(*spans: Span, service: str = "weather-mcp", scope: str = "mcp-python-sdk") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        _kv({"service.name": service, "service.version": "1.4.0", "service.instance.id": "pod-7"})
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.spans.extend(spans)
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """The OTLP JSON encoding: protobuf JSON with trace and span ids in hex."""
    data = json_format.MessageToDict(request)
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex()
    return json.dumps(data).encode()


def tool_call_span(tool: str = "get_weather", session: str = "sess-1", **extra: Any) -> Span:
    attributes = {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "mcp.session.id": session,
        "mcp.protocol.version": "2025-11-25",
        "jsonrpc.request.id": "42",
        "client.address": "203.0.113.9",
        "user_agent.original": "claude-code/2.1",
        "network.transport": "tcp",
        "network.protocol.name": "http",
        "gen_ai.tool.call.arguments": '{"city": "Paris"}',
        **extra,
    }
    return span(f"tools/call {tool}", attributes)


def response_of(r: httpx.Response) -> ExportTraceServiceResponse:
    if r.headers["content-type"].startswith("application/json"):
        return json_format.Parse(r.content, ExportTraceServiceResponse())
    return ExportTraceServiceResponse.FromString(r.content)


def status_of(r: httpx.Response) -> status_pb2.Status:
    if r.headers["content-type"].startswith("application/json"):
        return json_format.Parse(r.content, status_pb2.Status())
    return status_pb2.Status.FromString(r.content)


# -- against a real server ------------------------------------------------------


def test_mcp_spans_become_events_over_protobuf_json_and_gzip(serve_factory) -> None:
    server = serve_factory()
    ok_call = tool_call_span()
    failed_call = tool_call_span(session="sess-1", **{"error.type": "tool_error"})
    failed_call.status.code = Status.STATUS_CODE_ERROR
    first = export(
        ok_call,
        failed_call,
        span("resources/read", {"mcp.method.name": "resources/read", "mcp.resource.uri": "file:///notes.txt?token=s3cr3t"}),
        span("prompts/get greet", {"mcp.method.name": "prompts/get", "gen_ai.prompt.name": "greet"}),
        span("initialize", {"mcp.method.name": "initialize", "mcp.protocol.version": "2025-11-25", "mcp.session.id": "sess-1"}),
        span("tools/list", {"mcp.method.name": "tools/list", "jsonrpc.request.id": 3}),
        # not MCP: an HTTP server span, with a credential in a header attribute
        span("POST /mcp", {"http.request.method": "POST", "http.request.header.authorization": f"Bearer {RAW_TOKEN}"}),
        # the client side of the same call: ignored, the server side reports it
        span("MCP send tools/call get_weather", {"mcp.method.name": "tools/call"}, kind=Span.SPAN_KIND_CLIENT),
    )
    r = httpx.post(server.url + "/v1/traces", content=first.SerializeToString(), headers={**PROTOBUF, **server.ingest_headers})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert not response_of(r).HasField("partial_success")

    # the exporter retries the same batch: no duplicates
    r = httpx.post(server.url + "/v1/traces", content=first.SerializeToString(), headers={**PROTOBUF, **server.ingest_headers})
    assert r.status_code == 200

    json_call = tool_call_span("get_forecast", session="sess-2")
    r = httpx.post(server.url + "/v1/traces", content=otlp_json(export(json_call)), headers={**JSON, **server.ingest_headers})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {}

    gzip_call = tool_call_span("get_alerts", session="sess-3")
    r = httpx.post(
        server.url + "/v1/traces",
        content=gzip.compress(export(gzip_call).SerializeToString()),
        headers={**PROTOBUF, **server.ingest_headers, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200
    deflate_call = tool_call_span("get_radar", session="sess-3")
    r = httpx.post(
        server.url + "/v1/traces",
        content=zlib.compress(otlp_json(export(deflate_call))),
        headers={**JSON, **server.ingest_headers, "Content-Encoding": "deflate"},
    )
    assert r.status_code == 200 and r.json() == {}

    health = httpx.get(server.url + "/healthz").json()
    assert health["otlp"] == {
        "requests": 5,
        "bad_requests": 0,
        "spans_received": 8 * 2 + 3,
        "spans_mapped": 6 * 2 + 3,
        "spans_ignored": 2 * 2,
        "spans_ignored_not_mcp": 2,
        "spans_ignored_client": 2,
        "spans_rejected": 0,
    }
    assert server.stop() in (0, -15) and "stopped cleanly" in server.output()

    report = stored_events(server.data_dir)
    events = {e["event_id"]: e for e in report["stored_events"]}
    assert set(report["event_id_counts"].values()) == {1}  # the re-sent batch deduplicated
    assert len(report["event_id_counts"]) == 9
    assert RAW_TOKEN not in json.dumps(report) and "s3cr3t" not in json.dumps(report)

    def event_of(s: Span) -> dict[str, Any]:
        return events[span_event_id(s.trace_id, s.span_id)]

    assert event_of(ok_call) == {
        "schema": "mcpsift.event/1",
        "event_id": span_event_id(ok_call.trace_id, ok_call.span_id),
        "time": "2026-05-28T20:26:40Z",
        "type": "mcp.tool_call",
        "source": {"kind": "server", "name": "weather-mcp", "instance": "pod-7", "version": "1.4.0"},
        "server": {"name": "weather-mcp"},
        "session": {"id": "sess-1", "transport": "streamable-http", "protocol_version": "2025-11-25"},
        "network": {"client_ip": "203.0.113.9", "user_agent": "claude-code/2.1"},
        "outcome": {"status": "ok", "duration_ms": 1.25},
        "trace": {"trace_id": ok_call.trace_id.hex(), "span_id": ok_call.span_id.hex()},
        "tool": {
            "name": "get_weather",
            "arguments_hash": "sha256:" + hashlib.sha256(b'{"city":"Paris"}').hexdigest(),
            "result": {"is_error": False},
        },
        "attributes": {"jsonrpc_request_id": "42", "otel_scope": "mcp-python-sdk"},
    }
    failed = event_of(failed_call)
    assert failed["outcome"] == {"status": "error", "reason": "tool_error", "duration_ms": 1.25}
    assert failed["tool"]["result"] == {"is_error": True}
    by_type = {e["type"]: e for e in events.values() if e["type"] != "mcp.tool_call"}
    assert by_type["mcp.resource_read"]["resource"] == {"uri": "file:///notes.txt?token=[REDACTED:token]"}
    assert by_type["mcp.prompt_get"]["prompt"] == {"name": "greet"}
    assert by_type["mcp.session_start"]["session"] == {"id": "sess-1", "protocol_version": "2025-11-25"}
    assert by_type["mcp.request"]["attributes"] == {
        "method": "tools/list",
        "jsonrpc_request_id": "3",
        "otel_scope": "mcp-python-sdk",
    }
    assert event_of(json_call)["tool"]["name"] == "get_forecast" and event_of(json_call)["session"]["id"] == "sess-2"
    assert event_of(gzip_call)["tool"]["name"] == "get_alerts"
    assert event_of(deflate_call)["tool"]["name"] == "get_radar"
    assert report["dead_letters"] == []


def test_bad_bodies_are_refused_with_the_otlp_status_codes(serve_factory) -> None:
    server = serve_factory(max_body_bytes=65_536)
    url = server.url + "/v1/traces"

    r = httpx.post(url, content=b"\xff\xff\xff\xff garbage", headers={**PROTOBUF, **server.ingest_headers})
    assert r.status_code == 400 and r.headers["content-type"] == "application/x-protobuf"
    assert status_of(r).code == 3 and "protobuf" in status_of(r).message

    for body, why in (
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00"}]}]}]}', "must be hex"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', "OTLP JSON"),
    ):
        r = httpx.post(url, content=body, headers={**JSON, **server.ingest_headers})
        assert r.status_code == 400, body
        assert why in status_of(r).message, (body, status_of(r).message)

    r = httpx.post(url, content=b"hello", headers={"Content-Type": "text/plain", **server.ingest_headers})
    assert r.status_code == 415 and "application/x-protobuf" in status_of(r).message
    r = httpx.post(url, content=b"hello", headers={**PROTOBUF, **server.ingest_headers, "Content-Encoding": "br"})
    assert r.status_code == 415 and "gzip" in status_of(r).message

    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MiB of zeros in ~50 KiB
    assert len(bomb) < 65_536
    r = httpx.post(url, content=bomb, headers={**PROTOBUF, **server.ingest_headers, "Content-Encoding": "gzip"})
    assert r.status_code == 413 and "decompressed" in status_of(r).message
    r = httpx.post(url, content=b"\0" * 70_000, headers={**PROTOBUF, **server.ingest_headers})
    assert r.status_code == 413
    r = httpx.post(url, content=gzip.compress(export(tool_call_span()).SerializeToString())[:-12], headers={**PROTOBUF, **server.ingest_headers, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "truncated" in status_of(r).message

    # MCP spans that cannot become events: 200 with partial success, ids kept, content not
    good = tool_call_span()
    no_ids = tool_call_span(**{"http.request.header.authorization": f"Bearer {RAW_TOKEN}"})
    no_ids.trace_id = b"\0" * 16
    no_time = tool_call_span()
    no_time.start_time_unix_nano = 0
    r = httpx.post(url, content=export(good, no_ids, no_time).SerializeToString(), headers={**PROTOBUF, **server.ingest_headers})
    assert r.status_code == 200
    partial = response_of(r).partial_success
    assert partial.rejected_spans == 2
    assert "2 of 3 spans" in partial.error_message and "trace_id" in partial.error_message
    assert "start_time_unix_nano" in partial.error_message

    health = httpx.get(server.url + "/healthz").json()["otlp"]
    assert health["requests"] == 11 and health["bad_requests"] == 10
    assert (health["spans_received"], health["spans_mapped"], health["spans_rejected"]) == (3, 1, 2)
    assert server.stop() in (0, -15) and "stopped cleanly" in server.output()

    report = stored_events(server.data_dir)
    assert list(report["event_id_counts"]) == [span_event_id(good.trace_id, good.span_id)]
    (dead,) = report["dead_letters"]
    assert dead["source"] == "otlp" and dead["reason"].startswith("2 OTLP span(s) could not be mapped")
    kept = json.loads(dead["payload"])["otlp_rejected_spans"]
    assert [k["span_id"] for k in kept] == [no_ids.span_id.hex(), no_time.span_id.hex()]
    assert RAW_TOKEN not in json.dumps(report)  # nor any undecodable body: none is kept


# -- the mapping and the route without a server ---------------------------------


def test_calls_without_their_payload_fall_back_to_mcp_request() -> None:
    request = export(
        span("tools/call", {"mcp.method.name": "tools/call"}),  # no tool name anywhere
        span("resources/read", {"mcp.method.name": "resources/read"}),  # mcp SDK 2.3: no mcp.resource.uri
        span("initialize", {"mcp.method.name": "initialize", "error.type": "-32602"}, error="Invalid params"),
        span("prompts/get summarise", {"mcp.method.name": "prompts/get"}),  # name from the span name
        span("notifications/initialized", {"mcp.method.name": "notifications/initialized", "network.transport": "pipe"}),
        service="unknown_service:python",
    )
    batch = map_request(request)
    assert batch.received == 5 and not batch.rejections
    types = [(e["type"], e.get("attributes", {}).get("method")) for e in batch.events]
    assert types == [
        ("mcp.request", "tools/call"),
        ("mcp.request", "resources/read"),
        ("mcp.request", "initialize"),
        ("mcp.prompt_get", None),
        ("mcp.request", "notifications/initialized"),
    ]
    failed_init = batch.events[2]
    assert failed_init["outcome"] == {"status": "error", "reason": "-32602", "error": "Invalid params", "duration_ms": 1.25}
    assert batch.events[3]["prompt"] == {"name": "summarise"}
    assert batch.events[4]["session"] == {"transport": "stdio"}
    for event in batch.events:
        assert "server" not in event and event["source"]["name"] == "unknown_service:python"
        # every mapped event is valid, and stays as mapped through the event model
        decoded = to_builtins(decode_event(json.dumps(event)))
        assert decoded.pop("time") == "2026-05-28T20:26:40Z" and event["time"] == "2026-05-28T20:26:40.000000Z"
        assert decoded == {k: v for k, v in event.items() if k != "time"}  # default tenant omitted


def test_error_text_is_redacted_and_event_ids_are_stable() -> None:
    call = tool_call_span(**{"error.type": "ValueError", "user.id": "alice"})
    call.status.code = Status.STATUS_CODE_ERROR
    call.status.message = f"upstream said 401 for Authorization: Bearer {RAW_TOKEN} " + "x" * 10_000
    (event,) = map_request(export(call)).events
    assert RAW_TOKEN not in json.dumps(event)
    assert event["outcome"]["error"].startswith("upstream said 401 for Authorization: Bearer [REDACTED:bearer] x")
    assert len(event["outcome"]["error"]) == 4096
    assert event["principal"] == {"subject": "alice"}
    assert event["event_id"] == map_request(export(call)).events[0]["event_id"]
    other = Span()
    other.CopyFrom(call)
    other.span_id = os.urandom(8)
    assert map_request(export(other)).events[0]["event_id"] != event["event_id"]

    # a principal that is a raw credential makes the event invalid: rejected, never passed on
    leaky = tool_call_span(**{"user.id": RAW_TOKEN})
    batch = map_request(export(leaky))
    assert batch.events == [] and len(batch.rejections) == 1
    assert "privacy" in batch.rejections[0].reason and RAW_TOKEN not in batch.rejections[0].reason


def test_decompress_is_bounded() -> None:
    payload = b"a" * 100_000
    assert decompress(gzip.compress(payload), "gzip", 100_000) == payload
    assert decompress(gzip.compress(payload[:10]) + gzip.compress(payload[:5]), "gzip", 100) == payload[:15]
    assert decompress(zlib.compress(payload), "deflate", 100_000) == payload
    with pytest.raises(BodyTooLarge):
        decompress(gzip.compress(payload), "gzip", 99_999)
    with pytest.raises(BodyTooLarge):
        decompress(payload, None, 99_999)
    with pytest.raises(UndecodableBody):
        decompress(b"not gzip at all", "gzip", 1000)
    with pytest.raises(UnsupportedMediaType):
        decompress(payload, "zstd", 1000)


class _FailingRunner:
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]:
        return {"error": None}

    def ingest(self, items, source, tenants=None):  # the store refused the insert
        raise OSError("No space left on device")

    def dead_letter(self, source, reason, raw) -> None: ...


def test_a_store_failure_answers_503_retryable() -> None:
    app = create_app(Settings(), store=None, runner=_FailingRunner())  # type: ignore[arg-type]
    with TestClient(app) as client:
        r = client.post("/v1/traces", content=export(tool_call_span()).SerializeToString(), headers=PROTOBUF)
        health = client.get("/healthz").json()
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    message = status_pb2.Status.FromString(r.content).message
    assert "nothing was accepted" in message and "No space left" in message
    # nothing counted as mapped: the exporter will send the spans again
    assert health["otlp"]["spans_mapped"] == 0 and health["otlp"]["requests"] == 1
