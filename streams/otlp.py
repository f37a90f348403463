"""OTLP traces to MCP audit events: docs/events.md "Mapping from OpenTelemetry".

Pure functions, no web framework. ``mcpsift serve`` calls them for every
``POST /v1/traces`` (``api/routes/otlp.py``): :func:`decompress` and
:func:`decode_request` turn the HTTP body into an ``ExportTraceServiceRequest``,
:func:`map_request` turns its spans into event dicts for the same pipeline as
``POST /v1/events``, and :func:`encode_response` / :func:`encode_status` build
the OTLP/HTTP answer in the request's encoding.

What becomes an event: a span with an ``mcp.method.name`` attribute (the
OpenTelemetry semantic conventions for MCP) that the MCP *server* side
recorded. Client-side spans (``SPAN_KIND_CLIENT``, e.g. the ``mcp`` SDK's
``MCP send tools/call x``) are ignored, so a process that is both client and
server does not report every call twice; spans without ``mcp.method.name``
are ignored too. Both are counted.

=====================  ============================================
``mcp.method.name``    event type
=====================  ============================================
``tools/call``         ``mcp.tool_call`` (needs a tool name)
``resources/read``     ``mcp.resource_read`` (needs ``mcp.resource.uri``)
``prompts/get``        ``mcp.prompt_get`` (needs a prompt name)
``initialize``         ``mcp.session_start`` (when it succeeded)
anything else          ``mcp.request`` with ``attributes.method``
=====================  ============================================

A call whose payload is unknown (the ``mcp`` SDK 2.3 records no
``mcp.resource.uri``) falls back to ``mcp.request`` rather than being lost.

Every event's ``event_id`` is derived from the span's trace and span ids, so
an exporter that re-sends a batch (OTLP retries on 429/502/503/504) does not
duplicate anything: the pipeline is idempotent on ``event_id``.

Privacy: only the attributes listed in :data:`ATTRIBUTE_MAP` are read; span
events, links and every other attribute (which may carry HTTP headers) are
never copied. Free text that is copied (error messages, resource URIs) is
truncated to 4 KiB and credential-looking substrings are replaced by
``[REDACTED:<kind>]``. Tool arguments recorded by an instrumentation
(``gen_ai.tool.call.arguments``, opt-in in the conventions) are hashed into
``tool.arguments_hash`` and never copied.
"""

from __future__ import annotations

import base64
import datetime as _dt
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import orjson

from mcpsift.canonical import arguments_hash
from mcpsift.events import SCHEMA, InvalidEvent, decode_event
from mcpsift.collectors.redact import scrub

__all__ = [
    "PROTOBUF",
    "JSON",
    "OtlpError",
    "UndecodableBody",
    "BodyTooLarge",
    "UnsupportedMediaType",
    "OtlpUnavailable",
    "ATTRIBUTE_MAP",
    "SpanRejected",
    "Rejection",
    "MappedBatch",
    "OtlpCounters",
    "media_type_of",
    "decompress",
    "decode_request",
    "map_request",
    "map_span",
    "span_event_id",
    "encode_response",
    "encode_status",
    "iter_rejection_reasons",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}

#: the semantic-convention attributes the mapping reads (and nothing else)
ATTRIBUTE_MAP = {
    "mcp.method.name": "type (see the module docstring); attributes.method for mcp.request",
    "gen_ai.tool.name": "tool.name",
    "gen_ai.prompt.name": "prompt.name",
    "mcp.resource.uri": "resource.uri",
    "mcp.session.id": "session.id",
    "mcp.protocol.version": "session.protocol_version",
    "network.transport / network.protocol.name": "session.transport (pipe: stdio, http: streamable-http)",
    "jsonrpc.request.id": "attributes.jsonrpc_request_id",
    "error.type": "outcome.reason (and outcome.status error); tool_error: tool.result.is_error",
    "rpc.response.status_code": "attributes.rpc_response_status_code",
    "client.address (else network.peer.address)": "network.client_ip",
    "user_agent.original": "network.user_agent",
    "user.id (else enduser.id)": "principal.subject",
    "gen_ai.tool.call.arguments": "tool.arguments_hash (the arguments are never copied)",
    "resource service.name / service.instance.id / service.version": "source.name / instance / version; server.name",
}

_MAX_STRING = 4096  # spec default: 4 KiB per string
_ID_NAMESPACE = uuid.UUID("6f1d0b8e-2a0c-5d51-9a3e-8c0f2b7d9e41")  # event ids of OTLP spans
_KIND_CLIENT = 3
_STATUS_ERROR = 2
_UTC = _dt.timezone.utc


# --------------------------------------------------------------------------
# Errors (the route turns each into its HTTP status)


class OtlpError(ValueError):
    """A request that cannot be processed; ``status`` is the HTTP answer, ``str()`` says what to do."""

    status = 400


class UndecodableBody(OtlpError):
    status = 400


class BodyTooLarge(OtlpError):
    status = 413


class UnsupportedMediaType(OtlpError):
    status = 415


class OtlpUnavailable(OtlpError):
    """The server was installed without the OTLP decoder."""

    status = 501


def _proto() -> Any:
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError:
        raise OtlpUnavailable(
            "OTLP ingest needs the opentelemetry-proto package: pip install 'mcpsift[all]'"
        ) from None
    return trace_service_pb2


# --------------------------------------------------------------------------
# Body: media type, content encoding, decoding


def media_type_of(content_type: Optional[str]) -> str:
    """``PROTOBUF`` or ``JSON`` for a ``Content-Type`` header; raises :class:`UnsupportedMediaType`."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return _MEDIA_TYPES[media]
    except KeyError:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'!r} is not OTLP/HTTP: send application/x-protobuf or application/json"
        ) from None


def decompress(body: bytes, content_encoding: Optional[str], limit: int) -> bytes:
    """``body`` decoded per ``Content-Encoding`` (identity, gzip, deflate), at most ``limit`` bytes.

    Raises :class:`BodyTooLarge` as soon as the output would pass ``limit``
    (a zip bomb costs at most ``limit`` bytes of memory),
    :class:`UndecodableBody` for a corrupt stream and
    :class:`UnsupportedMediaType` for another encoding.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLarge(_too_large(limit))
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = 32 + zlib.MAX_WBITS  # zlib-wrapped, as exporters send it (header detected)
    else:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed, gzip or deflate"
        )
    out = bytearray()
    data = body
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge(_too_large(limit, decompressed=True))
                data = inflater.unconsumed_tail
            if not inflater.eof:
                out += inflater.flush()
                if not inflater.eof:
                    raise UndecodableBody(f"the {encoding} stream is truncated")
            if len(out) > limit:
                raise BodyTooLarge(_too_large(limit, decompressed=True))
            data = inflater.unused_data  # concatenated gzip members (RFC 1952)
            if not data or encoding == "deflate":
                break
    except zlib.error as exc:
        raise UndecodableBody(f"the body is not valid {encoding}: {exc}") from None
    return bytes(out)


def _too_large(limit: int, decompressed: bool = False) -> str:
    what = "decompressed body" if decompressed else "body"
    return f"{what} larger than {limit} bytes (max_body_bytes); export smaller batches"


def decode_request(body: bytes, media_type: str) -> Any:
    """An ``ExportTraceServiceRequest`` from an uncompressed OTLP/HTTP body.

    JSON follows the OTLP JSON encoding: trace and span ids in hex (not
    base64 as plain protobuf JSON would have them), unknown fields ignored.
    """
    pb = _proto()
    request = pb.ExportTraceServiceRequest()
    if media_type == PROTOBUF:
        from google.protobuf.message import DecodeError

        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise UndecodableBody(f"the body is not a protobuf ExportTraceServiceRequest: {exc}") from None
        return request
    from google.protobuf import json_format

    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise UndecodableBody(f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UndecodableBody("the body must be a JSON object (an ExportTraceServiceRequest)")
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise UndecodableBody(f"the body is not an OTLP JSON ExportTraceServiceRequest: {exc}") from None
    return request


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    def convert(obj: Any, key: str, where: str) -> None:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise UndecodableBody(f"{where}.{key} must be hex (OTLP JSON encoding), got {value[:40]!r}") from None
            obj[key] = base64.b64encode(raw).decode("ascii")

    for r, resource_spans in enumerate(_list(data.get("resourceSpans", data.get("resource_spans")))):
        scopes = resource_spans.get("scopeSpans", resource_spans.get("scope_spans")) if isinstance(resource_spans, dict) else None
        for s, scope_spans in enumerate(_list(scopes)):
            spans = scope_spans.get("spans") if isinstance(scope_spans, dict) else None
            for i, span in enumerate(_list(spans)):
                if not isinstance(span, dict):
                    continue
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                    convert(span, key, where)
                for j, link in enumerate(_list(span.get("links"))):
                    if isinstance(link, dict):
                        for key in ("traceId", "trace_id", "spanId", "span_id"):
                            convert(link, key, f"{where}.links[{j}]")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --------------------------------------------------------------------------
# Mapping


class SpanRejected(ValueError):
    """An MCP span that cannot become a valid event; ``str()`` is the reason."""


@dataclass
class Rejection:
    trace_id: str
    span_id: str
    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"trace_id": self.trace_id, "span_id": self.span_id, "name": self.name, "reason": self.reason}


@dataclass
class MappedBatch:
    """What :func:`map_request` made of one export request."""

    events: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0
    ignored_not_mcp: int = 0
    ignored_client: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def ignored(self) -> int:
        return self.ignored_not_mcp + self.ignored_client


@dataclass
class OtlpCounters:
    """Totals since start, shown under ``otlp`` by ``GET /healthz``."""

    requests: int = 0
    bad_requests: int = 0
    spans_received: int = 0
    spans_mapped: int = 0
    spans_ignored: int = 0
    spans_ignored_not_mcp: int = 0
    spans_ignored_client: int = 0
    spans_rejected: int = 0

    def add(self, batch: MappedBatch, rejected: int) -> None:
        """Count one processed request; ``rejected`` includes spans the pipeline refused."""
        self.spans_received += batch.received
        self.spans_ignored += batch.ignored
        self.spans_ignored_not_mcp += batch.ignored_not_mcp
        self.spans_ignored_client += batch.ignored_client
        self.spans_rejected += rejected
        self.spans_mapped += batch.received - batch.ignored - rejected

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def map_request(request: Any, validate: bool = True) -> MappedBatch:
    """Map every span of an ``ExportTraceServiceRequest``.

    With ``validate`` each event is checked with :func:`decode_event` here, so
    an invalid one is reported as a rejected span (with its ids and the
    reason, never its content) instead of reaching the dead-letter table.
    """
    batch = MappedBatch()
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                batch.received += 1
                attrs = _attributes(span.attributes)
                if not _text(attrs.get("mcp.method.name")):
                    batch.ignored_not_mcp += 1
                    continue
                if span.kind == _KIND_CLIENT:
                    batch.ignored_client += 1
                    continue
                try:
                    event = map_span(span, resource, scope, attrs)
                except SpanRejected as exc:
                    batch.rejections.append(_rejection(span, str(exc)))
                    continue
                assert event is not None
                if validate:
                    try:
                        decode_event(orjson.dumps(event))
                    except InvalidEvent as exc:
                        batch.rejections.append(_rejection(span, f"invalid event: {exc}"))
                        continue
                batch.events.append(event)
    return batch


def _rejection(span: Any, reason: str) -> Rejection:
    return Rejection(span.trace_id.hex(), span.span_id.hex(), _clip(span.name, 200), reason)


def map_span(
    span: Any, resource: dict[str, Any], scope: str = "", attrs: Optional[dict[str, Any]] = None
) -> Optional[dict[str, Any]]:
    """The event dict of one OTLP ``Span``, called for every span of an export.

    None when the span is not one the mapping takes: no ``mcp.method.name``,
    or recorded by an MCP client (``SPAN_KIND_CLIENT``). ``resource`` (and
    ``attrs``, when the caller already has them) map attribute keys to
    ``AnyValue`` messages. Raises :class:`SpanRejected` when the span is MCP
    but cannot be identified or placed in time.
    """
    if attrs is None:
        attrs = _attributes(span.attributes)
    method = _text(attrs.get("mcp.method.name"))
    if not method or span.kind == _KIND_CLIENT:
        return None
    trace_id, span_id = span.trace_id, span.span_id
    if len(trace_id) != 16 or not any(trace_id):
        raise SpanRejected("the span has no valid trace_id (16 bytes, not all zero)")
    if len(span_id) != 8 or not any(span_id):
        raise SpanRejected("the span has no valid span_id (8 bytes, not all zero)")
    start = span.start_time_unix_nano
    if not start:
        raise SpanRejected("the span has no start_time_unix_nano")
    try:
        time = _rfc3339(start)
    except (OverflowError, OSError, ValueError):
        raise SpanRejected(f"start_time_unix_nano {start} is out of range") from None

    service = _text(resource.get("service.name")) or "unknown_service"
    event: dict[str, Any] = {
        "schema": SCHEMA,
        "event_id": span_event_id(trace_id, span_id),
        "time": time,
        "type": "mcp.request",
        "source": _drop_none(
            {
                "kind": "server",
                "name": _clip(service, 256),
                "instance": _clip(_text(resource.get("service.instance.id")), 256),
                "version": _clip(_text(resource.get("service.version")), 256),
            }
        ),
    }
    if not service.startswith("unknown_service"):
        event["server"] = {"name": _clip(service, 256)}
    subject = _text(attrs.get("user.id")) or _text(attrs.get("enduser.id"))
    if subject:
        event["principal"] = {"subject": _clip(subject, 256)}
    session = _drop_none(
        {
            "id": _clip(_text(attrs.get("mcp.session.id")), 256),
            "transport": _transport(attrs),
            "protocol_version": _clip(_text(attrs.get("mcp.protocol.version")), 64),
        }
    )
    if session:
        event["session"] = session
    network = _drop_none(
        {
            "client_ip": _clip(_text(attrs.get("client.address")) or _text(attrs.get("network.peer.address")), 256),
            "user_agent": _scrub(_text(attrs.get("user_agent.original"))),
        }
    )
    if network:
        event["network"] = network

    error_type = _text(attrs.get("error.type"))
    failed = span.status.code == _STATUS_ERROR or bool(error_type)
    outcome: dict[str, Any] = {"status": "error" if failed else "ok"}
    if failed and error_type:
        outcome["reason"] = _clip(error_type, 128)
    if failed and span.status.message:
        outcome["error"] = _scrub(span.status.message)
    end = span.end_time_unix_nano
    if end >= start:
        outcome["duration_ms"] = (end - start) / 1e6
    event["outcome"] = outcome
    event["trace"] = {"trace_id": trace_id.hex(), "span_id": span_id.hex()}

    attributes: dict[str, Any] = {}
    request_id = _text(attrs.get("jsonrpc.request.id"))
    if request_id:
        attributes["jsonrpc_request_id"] = _clip(request_id, 128)
    status_code = _text(attrs.get("rpc.response.status_code"))
    if status_code:
        attributes["rpc_response_status_code"] = _clip(status_code, 64)
    if span.parent_span_id:
        attributes["parent_span_id"] = span.parent_span_id.hex()
    if scope:
        attributes["otel_scope"] = _clip(scope, 256)

    target = _target(span.name, method)
    if method == "tools/call" and (name := _text(attrs.get("gen_ai.tool.name")) or target):
        event["type"] = "mcp.tool_call"
        tool: dict[str, Any] = {"name": _clip(name, 256)}
        digest = _arguments_hash(attrs.get("gen_ai.tool.call.arguments"))
        if digest:
            tool["arguments_hash"] = digest
        if error_type == "tool_error":
            tool["result"] = {"is_error": True}
        elif not failed:
            tool["result"] = {"is_error": False}
        event["tool"] = tool
    elif method == "resources/read" and (uri := _text(attrs.get("mcp.resource.uri"))):
        event["type"] = "mcp.resource_read"
        event["resource"] = {"uri": _scrub(uri)}
    elif method == "prompts/get" and (name := _text(attrs.get("gen_ai.prompt.name")) or target):
        event["type"] = "mcp.prompt_get"
        event["prompt"] = {"name": _clip(name, 256)}
    elif method == "initialize" and not failed:
        event["type"] = "mcp.session_start"
    else:
        attributes["method"] = _clip(method, 256)
    if attributes:
        event["attributes"] = attributes
    return event


def span_event_id(trace_id: bytes, span_id: bytes) -> str:
    """The ``event_id`` of a span: a UUIDv5 of its trace and span ids (stable across re-sends)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{trace_id.hex()}/{span_id.hex()}"))


def _attributes(key_values: Any) -> dict[str, Any]:
    """Attribute key -> ``AnyValue`` (the last one wins for a repeated key)."""
    return {kv.key: kv.value for kv in key_values}


def _text(value: Any) -> Optional[str]:
    """A scalar ``AnyValue`` as a string (ints as decimal, e.g. a JSON-RPC id); else None."""
    if value is None:
        return None
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value or None
    if which == "int_value":
        return str(value.int_value)
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "double_value":
        return repr(value.double_value)
    return None


def _any_to_python(value: Any, depth: int = 0) -> Any:
    which = value.WhichOneof("value")
    if depth > 32:
        return None
    if which == "kvlist_value":
        return {kv.key: _any_to_python(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if which == "array_value":
        return [_any_to_python(v, depth + 1) for v in value.array_value.values]
    if which in ("string_value", "int_value", "bool_value", "double_value"):
        return getattr(value, which)
    return None


def _arguments_hash(value: Any) -> Optional[str]:
    if value is None:
        return None
    which = value.WhichOneof("value")
    if which == "string_value":
        try:
            arguments = orjson.loads(value.string_value)
        except orjson.JSONDecodeError:
            return None
    elif which == "kvlist_value":
        arguments = _any_to_python(value)
    else:
        return None
    return arguments_hash(arguments) if isinstance(arguments, dict) else None


def _target(span_name: str, method: str) -> Optional[str]:
    """``{target}`` of a span named ``{mcp.method.name} {target}``."""
    prefix = method + " "
    if span_name.startswith(prefix):
        return span_name[len(prefix):].strip() or None
    return None


def _transport(attrs: dict[str, Any]) -> Optional[str]:
    transport = (_text(attrs.get("network.transport")) or "").lower()
    protocol = (_text(attrs.get("network.protocol.name")) or "").lower()
    if transport == "pipe":
        return "stdio"
    if protocol == "http":
        return "streamable-http"
    if protocol:
        return "other"
    return None


def _rfc3339(unix_nano: int) -> str:
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    stamp = _dt.datetime.fromtimestamp(seconds, _UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos // 1000:06d}Z"


def _clip(text: Optional[str], limit: int = _MAX_STRING) -> Optional[str]:
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit]


def _scrub(text: Optional[str]) -> Optional[str]:
    """Free text: credential-looking parts replaced by ``[REDACTED:<kind>]`` (the
    collectors' redaction, which finds them anywhere in a text), 4 KiB at most."""
    if not text:
        return None
    return _clip(scrub(text))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------
# Answers


def encode_response(media_type: str, rejected: int = 0, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse`` (``partial_success`` when ``rejected`` or ``message``)."""
    pb = _proto()
    response = pb.ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return _serialise(response, media_type)


def encode_status(media_type: str, message: str, code: int = 3) -> bytes:
    """A ``google.rpc.Status`` (OTLP/HTTP's error body); ``code`` 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE."""
    try:
        from google.rpc import status_pb2
    except ImportError:  # googleapis-common-protos missing: still say what went wrong
        return orjson.dumps({"code": code, "message": message})
    return _serialise(status_pb2.Status(code=code, message=message), media_type)


def _serialise(message: Any, media_type: str) -> bytes:
    if media_type == PROTOBUF:
        return message.SerializeToString()
    from google.protobuf import json_format

    return json_format.MessageToJson(message, indent=None).encode("utf-8")


def iter_rejection_reasons(rejections: list[Rejection], limit: int = 3) -> Iterator[str]:
    """The first distinct reasons, for an answer's ``error_message``."""
    seen: set[str] = set()
    for rejection in rejections:
        if rejection.reason not in seen:
            seen.add(rejection.reason)
            yield f"span {rejection.span_id or '?'} ({rejection.name or 'no name'}): {rejection.reason}"
            if len(seen) >= limit:
                return
