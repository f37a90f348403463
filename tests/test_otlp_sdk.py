"""The ``mcp`` SDK's own OpenTelemetry middleware exporting OTLP/HTTP to a running
``mcpsift serve``: a real SDK server and client, the real opentelemetry-sdk
``TracerProvider`` + ``BatchSpanProcessor`` + ``OTLPSpanExporter`` (gzip)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator

import anyio
import httpx
import pytest
import uvicorn
from mcp import Client
from mcp.server.mcpserver import MCPServer
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mcpsift.streams.otlp import span_event_id
from tests.helpers.read_store import stored_events


def _provider() -> TracerProvider:
    """The process's SDK tracer provider (OpenTelemetry allows setting it once)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-mcp", "service.version": "0.9.1"}))
    trace.set_tracer_provider(provider)
    return provider


class Tracing:
    """Spans of one test: exported to mcpsift over OTLP/HTTP, and recorded here to compare."""

    def __init__(self, endpoint: str, headers: dict[str, str]):
        self.provider = _provider()
        self.recorder = InMemorySpanExporter()
        self._recording = SimpleSpanProcessor(self.recorder)
        self.exporting = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint, compression=Compression.Gzip, headers=headers), schedule_delay_millis=100
        )
        self.provider.add_span_processor(self._recording)
        self.provider.add_span_processor(self.exporting)

    def flush(self) -> None:
        assert self.exporting.force_flush(10_000), "the OTLP export did not finish"

    def close(self) -> None:
        self.exporting.shutdown()
        self._recording.shutdown()

    def spans(self) -> list[ReadableSpan]:
        return [s for s in self.recorder.get_finished_spans() if s.attributes and "mcp.method.name" in s.attributes]

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.kind == SpanKind.SERVER]


@pytest.fixture
def tracing_to(serve_factory) -> Iterator[Any]:
    made: list[Tracing] = []

    def make(server: Any) -> Tracing:
        made.append(Tracing(server.url + "/v1/traces", server.ingest_headers))
        return made[-1]

    yield make
    for t in made:
        t.close()


def _event_id(span: ReadableSpan) -> str:
    return span_event_id(span.context.trace_id.to_bytes(16, "big"), span.context.span_id.to_bytes(8, "big"))


def _weather_server(**kwargs: Any) -> MCPServer:
    server = MCPServer("weather", **kwargs)

    @server.tool()
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        if city == "Atlantis":
            raise ValueError("no weather station in Atlantis")
        return f"sunny in {city}"

    @server.resource("file:///stations.txt")
    def stations() -> str:
        return "Paris\nOslo"

    @server.prompt()
    def forecast(city: str) -> str:
        return f"Write a forecast for {city}"

    return server


def test_sdk_spans_become_events(serve_factory, tracing_to) -> None:
    serve = serve_factory()
    tracing = tracing_to(serve)
    server = _weather_server()

    async def drive() -> None:
        async with Client(server, mode="legacy") as client:  # legacy: the initialize handshake
            assert not (await client.call_tool("get_weather", {"city": "Paris"})).is_error
            assert (await client.call_tool("get_weather", {"city": "Atlantis"})).is_error
            assert (await client.call_tool("get_tide", {"port": "Brest"})).is_error  # no such tool
            await client.read_resource("file:///stations.txt")
            await client.get_prompt("forecast", {"city": "Oslo"})

    anyio.run(drive)
    tracing.flush()
    recorded = tracing.spans()
    server_spans = tracing.server_spans()
    assert len(server_spans) >= 7 and len(recorded) > len(server_spans)  # the client's spans too

    health = httpx.get(serve.url + "/healthz").json()["otlp"]
    assert health["spans_mapped"] == len(server_spans) and health["spans_rejected"] == 0
    assert health["spans_ignored_client"] == len(recorded) - len(server_spans)
    assert serve.stop() in (0, -15)

    report = stored_events(serve.data_dir)
    events = {e["event_id"]: e for e in report["stored_events"]}
    assert set(report["event_id_counts"]) == {_event_id(s) for s in server_spans}
    assert set(report["event_id_counts"].values()) == {1} and report["dead_letters"] == []

    service = tracing.provider.resource.attributes["service.name"]
    calls = [s for s in server_spans if s.attributes["mcp.method.name"] == "tools/call"]
    assert [s.attributes["gen_ai.tool.name"] for s in calls] == ["get_weather", "get_weather", "get_tide"]
    ok, raised, unknown = (events[_event_id(s)] for s in calls)
    span = calls[0]
    assert ok == {
        "schema": "mcpsift.event/1",
        "event_id": _event_id(span),
        "time": ok["time"],
        "type": "mcp.tool_call",
        "source": {"kind": "server", "name": service, **_source_extras(tracing)},
        **({"server": {"name": service}} if not service.startswith("unknown_service") else {}),
        # the SDK's spans carry no mcp.session.id: the protocol version is all there is
        "session": {"protocol_version": "2025-11-25"},
        "outcome": {"status": "ok", "duration_ms": ok["outcome"]["duration_ms"]},
        "trace": {"trace_id": f"{span.context.trace_id:032x}", "span_id": f"{span.context.span_id:016x}"},
        "tool": {"name": "get_weather", "result": {"is_error": False}},
        "attributes": {
            "jsonrpc_request_id": span.attributes["jsonrpc.request.id"],
            # the client's span: the SDK propagates the trace context in _meta
            "parent_span_id": f"{span.parent.span_id:016x}",
            "otel_scope": "mcp-python-sdk",
        },
    }
    assert ok["outcome"]["duration_ms"] == pytest.approx((span.end_time - span.start_time) / 1e6, abs=1e-3)
    assert abs(_epoch(ok["time"]) - span.start_time / 1e9) < 1e-3
    for failed, tool in ((raised, "get_weather"), (unknown, "get_tide")):
        assert failed["tool"] == {"name": tool, "result": {"is_error": True}}
        assert failed["outcome"]["status"] == "error" and failed["outcome"]["reason"] == "tool_error"

    kinds = {}
    for s in server_spans:
        event = events[_event_id(s)]
        kinds.setdefault(s.attributes["mcp.method.name"], set()).add(event["type"])
    assert kinds["initialize"] == {"mcp.session_start"}
    assert kinds["prompts/get"] == {"mcp.prompt_get"}
    assert kinds["resources/read"] == {"mcp.request"}  # mcp 2.3 records no mcp.resource.uri
    assert kinds["notifications/initialized"] == {"mcp.request"}
    prompt = next(events[_event_id(s)] for s in server_spans if s.attributes["mcp.method.name"] == "prompts/get")
    assert prompt["prompt"] == {"name": "forecast"} and prompt["outcome"]["status"] == "ok"


class _SpanSessionContext:
    """A server middleware that adds what the SDK's spans lack: ``mcp.session.id``
    and ``client.address`` (the README's recipe). Runs inside the SDK's
    OpenTelemetry middleware, so the current span is the request's span."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        request = ctx.request  # the Starlette request on streamable HTTP, None in process
        if request is not None:
            span = trace.get_current_span()
            session_id = request.headers.get("mcp-session-id")
            if session_id:
                span.set_attribute("mcp.session.id", session_id)
                self.seen.append(session_id)
            if request.client is not None:
                span.set_attribute("client.address", request.client.host)
            if "user-agent" in request.headers:
                span.set_attribute("user_agent.original", request.headers["user-agent"])
        return await call_next(ctx)


def test_streamable_http_spans_carry_the_session(serve_factory, tracing_to) -> None:
    serve = serve_factory()
    tracing = tracing_to(serve)
    stamp = _SpanSessionContext()
    server = _weather_server(middleware=[stamp])
    with _uvicorn(server.streamable_http_app()) as url:

        async def drive() -> None:
            async with Client(url, mode="legacy") as client:
                for city in ("Paris", "Oslo"):
                    assert not (await client.call_tool("get_weather", {"city": city})).is_error

        anyio.run(drive)
    tracing.flush()
    assert serve.stop() in (0, -15)

    (session_id,) = set(stamp.seen)
    events = {e["event_id"]: e for e in stored_events(serve.data_dir, "mcp.tool_call")["stored_events"]}
    calls = [s for s in tracing.server_spans() if s.attributes["mcp.method.name"] == "tools/call"]
    assert len(calls) == 2 and set(events) == {_event_id(s) for s in calls}
    for event in events.values():
        assert event["tool"]["name"] == "get_weather" and event["outcome"]["status"] == "ok"
        assert event["session"] == {"id": session_id, "protocol_version": "2025-11-25"}
        assert event["network"]["client_ip"] == "127.0.0.1"
        assert event["network"]["user_agent"].startswith("python-httpx")


# -- helpers ---------------------------------------------------------------------


def _source_extras(tracing: Tracing) -> dict[str, str]:
    attributes = tracing.provider.resource.attributes
    out = {}
    if "service.instance.id" in attributes:
        out["instance"] = attributes["service.instance.id"]
    if "service.version" in attributes:
        out["version"] = attributes["service.version"]
    return out


def _epoch(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class _uvicorn:
    """An ASGI app served on a free loopback port in a thread."""

    def __init__(self, app: Any):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)
