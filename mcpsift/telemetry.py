"""mcpsift's own traces and metrics (not the MCP traffic it watches): the one
place its instruments are defined and exported.

One set of OpenTelemetry instruments per component (``serve``, ``api``,
``worker``), read two ways:

* a Prometheus reader, always: :meth:`Telemetry.metrics_text` (served as
  ``GET /metrics`` by ``serve`` / ``api`` and by :meth:`Telemetry.serve_metrics`
  in the worker);
* OTLP/HTTP, when ``telemetry.otlp_endpoint`` is set: spans through a batch
  span processor, metrics every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (default
  60,000), both flushed by :meth:`Telemetry.shutdown`.

Exposed names are ``mcpsift_<component>_<what>_<unit>``; counters end in
``_total``; the unit words allowed are :data:`UNIT_WORDS`
(docs/operations.md, "Self-telemetry"). Callers measure once per batch, never
per event: one span per ingest batch or detection round.

The providers are this module's own (the OTel *global* providers are left
alone, so a host application or a test may install its own).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Mapping, Optional

try:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from prometheus_client import CollectorRegistry, generate_latest
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"mcpsift telemetry needs opentelemetry-sdk and opentelemetry-exporter-prometheus ({exc.name} is missing): "
        "pip install 'mcpsift[all]'"
    ) from exc

import mcpsift
from mcpsift.settings import TelemetrySettings

__all__ = [
    "Telemetry",
    "TelemetryError",
    "COMPONENTS",
    "UNIT_WORDS",
    "METRICS_CONTENT_TYPE",
    "LATENCY_BUCKETS_S",
    "ROWS_BUCKETS",
]

#: the processes that report telemetry
COMPONENTS = ("serve", "api", "worker")
#: the last word of every exposed metric name: ``total`` for counters, else its unit
UNIT_WORDS = ("total", "seconds", "bytes", "rows", "messages", "events", "alerts", "batches", "keys", "ratio")
#: Prometheus text format 0.0.4: what every Prometheus version parses
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: histogram buckets, in seconds (a ClickHouse insert of a batch: milliseconds to tens of seconds)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: histogram buckets, in rows per sink flush
ROWS_BUCKETS = (1, 10, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000)

_GAUGE_NAME = re.compile(r"^[a-z0-9_]+$")
_SPAN_NAME = re.compile(r"^[a-z0-9_.]+$")
#: free-form gauges end in one of these (``total`` is for counters only)
_GAUGE_UNITS = tuple(u for u in UNIT_WORDS if u != "total")
_UNHEALTHY = ("starting", "error")


class TelemetryError(RuntimeError):
    """Telemetry could not start (e.g. the metrics port is taken); the message says what to change."""


class _ProcessRegistry:
    """The Prometheus registry every :meth:`Telemetry.get` instance of this process reports to."""

    registry = CollectorRegistry(auto_describe=False)
    lock = threading.Lock()


class Telemetry:
    """Spans and instruments of one component. Use :meth:`get` (one per
    component per process); constructing one directly gives a private
    registry and providers (tests, embedding)."""

    _instances: dict[str, "Telemetry"] = {}
    _instances_lock = threading.Lock()

    def __init__(
        self,
        component: str,
        settings: Optional[TelemetrySettings] = None,
        *,
        registry: Optional[CollectorRegistry] = None,
        registry_lock: Optional[threading.Lock] = None,
    ):
        if component not in COMPONENTS:
            raise ValueError(f"telemetry component {component!r} is not one of {', '.join(COMPONENTS)}")
        self.component = component
        self.settings = settings or TelemetrySettings()
        self._registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self._registry_lock = registry_lock or threading.Lock()
        self._closed = False
        self._close_lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        #: called by ``GET /healthz`` of :meth:`serve_metrics`; its dict is merged into the answer
        self.health: Optional[Callable[[], Mapping[str, Any]]] = None

        resource = Resource.create({"service.name": self.settings.service_name, "mcpsift.component": component})
        self._prometheus = PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=self._registry
        )
        readers: list[Any] = [self._prometheus]
        self.tracer_provider = TracerProvider(resource=resource)
        if self.settings.otlp_endpoint:
            readers.append(self._otlp_pipeline())
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.tracer = self.tracer_provider.get_tracer("mcpsift", mcpsift.__version__)
        meter = self.meter_provider.get_meter("mcpsift", mcpsift.__version__)
        self._meter = meter
        prefix = f"mcpsift_{component}_"
        self._prefix = prefix

        # counters: the exporter appends ``_total``; a ``{...}`` unit adds no suffix
        self.events_in = meter.create_counter(
            prefix + "events_in", "{events}", "events accepted for processing (valid), by source"
        )
        self.events_out = meter.create_counter(
            prefix + "events_out", "{events}", "events durably written, by sink"
        )
        self.deadletters = meter.create_counter(
            prefix + "deadletters", "{events}", "inputs that were not valid events, kept as dead letters, by source"
        )
        self.alerts = meter.create_counter(prefix + "alerts", "{alerts}", "alerts written, by rule_id")
        # histograms: the unit word is already in the name, so the exporter adds nothing
        self.sink_batch_rows = meter.create_histogram(
            prefix + "sink_batch_rows", "{rows}", "rows per sink flush, by sink",
            explicit_bucket_boundaries_advisory=ROWS_BUCKETS,
        )
        self.sink_latency_seconds = meter.create_histogram(
            prefix + "sink_latency_seconds", "s", "seconds per sink flush, by sink",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self.stage_latency_seconds = meter.create_histogram(
            prefix + "stage_latency_seconds", "s", "seconds per batch in a pipeline stage, by stage",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )
        self._consumer_lag = meter.create_gauge(
            prefix + "consumer_lag_messages", "{messages}", "messages behind the end of the partition, by topic and partition"
        )
        self._gauges: dict[str, Any] = {}
        self._gauges_lock = threading.Lock()

    # -- construction ------------------------------------------------------

    @classmethod
    def get(cls, component: str, settings: Optional[TelemetrySettings] = None) -> "Telemetry":
        """This process's telemetry of ``component``: made (providers, exporters)
        on the first call, the same object on later calls (``settings`` of later
        calls are ignored). All of them report to one process registry."""
        with cls._instances_lock:
            found = cls._instances.get(component)
            if found is None:
                found = cls(
                    component, settings, registry=_ProcessRegistry.registry, registry_lock=_ProcessRegistry.lock
                )
                cls._instances[component] = found
            return found

    def _otlp_pipeline(self) -> Any:
        """Add the OTLP/HTTP span exporter; return the periodic OTLP metric reader."""
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        base = str(self.settings.otlp_endpoint).rstrip("/")
        headers = dict(self.settings.otlp_headers)
        spans = OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(spans))
        return PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers))

    # -- recording -----------------------------------------------------------

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """One span named ``mcpsift.<component>.<name>`` around a *batch* (never
        one per event). An exception is recorded on it, its status set to
        error, and re-raised."""
        if not _SPAN_NAME.match(name):
            raise ValueError(f"span name {name!r} must match [a-z0-9_.]+")
        attrs = {k: v for k, v in attributes.items() if v is not None}
        with self.tracer.start_as_current_span(
            f"mcpsift.{self.component}.{name}", attributes=attrs, record_exception=True, set_status_on_exception=True
        ) as span:
            yield span

    def set_consumer_lag(self, topic: str, partition: int, lag_messages: float) -> None:
        """Messages a consumer is behind on ``topic``/``partition`` (set when it polls)."""
        self._consumer_lag.set(lag_messages, {"topic": str(topic), "partition": str(partition)})

    def set_gauge(self, name: str, value: float, attributes: Optional[Mapping[str, str]] = None) -> None:
        """A free-form gauge, exposed as ``mcpsift_<component>_<name>``; ``name`` is
        ``[a-z0-9_]+`` ending in a unit word (e.g. ``detect_backlog_events``)."""
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._new_gauge(name)
        gauge.set(value, attributes)

    def _new_gauge(self, name: str) -> Any:
        if not isinstance(name, str) or not _GAUGE_NAME.match(name):
            raise ValueError(f"gauge name {name!r} must match [a-z0-9_]+")
        if not any(name.endswith("_" + unit) for unit in _GAUGE_UNITS):
            raise ValueError(f"gauge name {name!r} must end in _<unit>, one of {', '.join(_GAUGE_UNITS)}")
        if name == "consumer_lag_messages":
            raise ValueError("gauge name 'consumer_lag_messages' is taken: use set_consumer_lag(topic, partition, lag)")
        with self._gauges_lock:
            gauge = self._gauges.get(name)
            if gauge is None:
                gauge = self._meter.create_gauge(self._prefix + name, "", f"{name.replace('_', ' ')}")
                self._gauges[name] = gauge
            return gauge

    # -- exposition ------------------------------------------------------------

    def metrics_text(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of this process's metrics
        (every component made by :meth:`get`; a directly built one: its own)."""
        with self._registry_lock:  # one collection at a time: the reader hands data over by a queue
            return generate_latest(self._registry)

    def serve_metrics(self, host: str, port: int) -> tuple[str, int]:
        """Answer ``GET /metrics`` and ``GET /healthz`` on ``host:port`` from a daemon
        thread (port 0: a free one); returns the bound address. ``/healthz`` is
        200 ``{"status": "ok", ...}`` merged with what :attr:`health` returns, 503
        when that sets ``status`` to ``starting`` or ``error`` (or raises)."""
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"worker.metrics_port {port!r} must be a port number from 0 to 65535")
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # scrapes every few seconds: not worth a log line
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, METRICS_CONTENT_TYPE, telemetry.metrics_text())
                elif path == "/healthz":
                    status, body = telemetry._health_answer()
                    self._reply(status, "application/json", body)
                else:
                    self._reply(404, "application/json", b'{"detail":"not found: GET /metrics or /healthz"}')

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        try:
            server = Server((host, port), Handler)
        except OSError as exc:
            raise TelemetryError(
                f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}; "
                "choose another worker.metrics_host / worker.metrics_port (0 disables the endpoint in the worker)"
            ) from None
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"mcpsift-{self.component}-metrics",
            daemon=True,
        ).start()
        self._servers.append(server)
        bound = server.server_address
        return str(bound[0]), int(bound[1])

    def _health_answer(self) -> tuple[int, bytes]:
        answer: dict[str, Any] = {"status": "ok"}
        if self.health is not None:
            try:
                answer.update(self.health())
            except Exception as exc:  # its message may quote data: the kind only
                answer = {"status": "error", "error": type(exc).__name__}
        status = 503 if answer.get("status") in _UNHEALTHY else 200
        return status, json.dumps(answer, default=str).encode()

    # -- shutdown ----------------------------------------------------------------

    def shutdown(self) -> None:
        """Flush the exporters and stop the metrics endpoints (at process exit);
        safe to call twice. A later :meth:`get` builds a fresh instance."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
        with Telemetry._instances_lock:
            if Telemetry._instances.get(self.component) is self:
                del Telemetry._instances[self.component]
        self.tracer_provider.shutdown()  # the batch span processor exports what it holds
        self.meter_provider.shutdown()  # a last OTLP export; the Prometheus reader leaves the registry
