"""Self-telemetry (mcpsift.telemetry): exact Prometheus names and values after a
real EmbeddedRunner on chDB, spans and metrics over OTLP/HTTP to a real
loopback listener, the worker's /metrics + /healthz endpoint, and /metrics on a
real ``mcpsift serve`` subprocess and on the query API."""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from mcpsift.settings import Settings, TelemetrySettings
from mcpsift.streams.embedded import EmbeddedRunner
from mcpsift.telemetry import Telemetry, TelemetryError

CASES = Path(__file__).resolve().parent / "cases"
BURST = CASES / "auth.failure_burst" / "fires_20_denied_tokens_within_60s"
#: what every exposed name must look like (docs/operations.md, "Self-telemetry": the unit words)
NAME = re.compile(r"^mcpsift_(serve|api|worker)_[a-z0-9_]+_(total|seconds|bytes|rows|messages|events|alerts|batches|keys|ratio)$")


def _lines(case: Path) -> list[bytes]:
    return [line for line in case.with_suffix(".jsonl").read_bytes().splitlines() if line.strip()]


def _exposed(text: bytes) -> tuple[list[str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """(the ``# TYPE`` names, {(sample name, labels): value})."""
    types = [line.split()[2] for line in text.decode().splitlines() if line.startswith("# TYPE ")]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return types, samples


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_runner_metrics_have_exact_names_and_values(store_factory: Any, tmp_path: Path) -> None:
    store = store_factory()
    tel = Telemetry("serve", TelemetrySettings())  # private registry: exact counts
    runner = EmbeddedRunner(Settings(data_dir=tmp_path, allowed_lateness_s=0), store, telemetry=tel)
    runner.start()
    burst = _lines(BURST)
    invalid = [b'{"schema": "mcpsift.event/1", "event_id": "bad-1"}', b"42"]
    try:
        runner.ingest(burst + invalid, source="http")
        runner.dead_letter("otlp", "not protobuf", b"\x00\x01")
    finally:
        runner.stop()
    expected_alerts = json.loads(BURST.with_suffix(".expect.json").read_text())["alerts"]
    stored_alerts = Counter(a.rule_id for a in store.list_alerts(limit=1000))
    assert stored_alerts == Counter(expected_alerts)

    types, samples = _exposed(tel.metrics_text())
    bad = [n for n in types if not NAME.match(n)]
    assert not bad, f"names outside mcpsift_<component>_<what>_<unit>: {bad}"
    assert {
        "mcpsift_serve_events_in_total", "mcpsift_serve_events_out_total", "mcpsift_serve_deadletters_total",
        "mcpsift_serve_alerts_total", "mcpsift_serve_sink_batch_rows", "mcpsift_serve_sink_latency_seconds",
        "mcpsift_serve_stage_latency_seconds", "mcpsift_serve_detect_backlog_events",
    } <= set(types)

    assert _value(samples, "mcpsift_serve_events_in_total", source="http") == len(burst)
    assert _value(samples, "mcpsift_serve_events_out_total", sink="clickhouse") == len(burst)
    assert _value(samples, "mcpsift_serve_deadletters_total", source="http") == 2
    assert _value(samples, "mcpsift_serve_deadletters_total", source="otlp") == 1
    for rule_id, count in expected_alerts.items():
        assert _value(samples, "mcpsift_serve_alerts_total", rule_id=rule_id) == count
    # one ingest batch: one events flush of every row; alerts flushed in as many batches as rounds
    assert _value(samples, "mcpsift_serve_sink_batch_rows_count", sink="events") == 1
    assert _value(samples, "mcpsift_serve_sink_batch_rows_sum", sink="events") == len(burst)
    assert _value(samples, "mcpsift_serve_sink_batch_rows_sum", sink="alerts") == sum(expected_alerts.values())
    assert _value(samples, "mcpsift_serve_sink_latency_seconds_count", sink="events") == 1
    assert _value(samples, "mcpsift_serve_sink_latency_seconds_sum", sink="events") > 0
    assert _value(samples, "mcpsift_serve_sink_latency_seconds_count", sink="alerts") >= 1
    assert _value(samples, "mcpsift_serve_stage_latency_seconds_count", stage="ingest") == 1
    assert _value(samples, "mcpsift_serve_stage_latency_seconds_count", stage="detect") == 1
    assert _value(samples, "mcpsift_serve_detect_backlog_events") == 0
    # a histogram's +Inf bucket holds every observation
    assert _value(samples, "mcpsift_serve_sink_batch_rows_bucket", sink="events", le="+Inf") == 1


def test_get_is_one_per_component_and_components_do_not_clash() -> None:
    serve, api = Telemetry.get("serve"), Telemetry.get("api")
    assert Telemetry.get("serve") is serve and Telemetry.get("api") is api and serve is not api
    serve.events_in.add(7, {"source": "test-get-components"})
    api.alerts.add(2, {"rule_id": "test.get_components"})
    types, samples = _exposed(serve.metrics_text())  # the whole process: both components
    assert _value(samples, "mcpsift_serve_events_in_total", source="test-get-components") == 7
    assert _value(samples, "mcpsift_api_alerts_total", rule_id="test.get_components") == 2
    assert len(types) == len(set(types)), "a metric family exposed twice"
    # built again (privately) for the same component: no "duplicated timeseries"
    again = Telemetry("serve")
    again.events_in.add(1, {"source": "x"})
    assert b"mcpsift_serve_events_in_total" in again.metrics_text()
    again.shutdown()


def test_user_supplied_names_are_validated() -> None:
    tel = Telemetry("worker")
    with pytest.raises(ValueError, match="component 'gateway'"):
        Telemetry("gateway")
    with pytest.raises(ValueError, match=r"'Backlog' must match \[a-z0-9_\]\+"):
        tel.set_gauge("Backlog", 1)
    with pytest.raises(ValueError, match="'detect_backlog' must end in _<unit>"):
        tel.set_gauge("detect_backlog", 1)
    with pytest.raises(ValueError, match="'queued_total' must end in _<unit>"):
        tel.set_gauge("queued_total", 1)  # _total is for counters
    with pytest.raises(ValueError, match="set_consumer_lag"):
        tel.set_gauge("consumer_lag_messages", 1)
    tel.set_consumer_lag("mcp.events", 3, 42)
    tel.set_gauge("changelog_size_bytes", 1024)
    _, samples = _exposed(tel.metrics_text())
    assert _value(samples, "mcpsift_worker_consumer_lag_messages", topic="mcp.events", partition="3") == 42
    assert _value(samples, "mcpsift_worker_changelog_size_bytes") == 1024
    tel.shutdown()


def _spans(receiver: Any) -> list[tuple[Any, Any]]:
    """(resource, span) of every span the receiver got."""
    out = []
    for req in receiver.ok_requests():
        if req.path == "/v1/traces":
            msg = ExportTraceServiceRequest.FromString(req.body)
            for rs in msg.resource_spans:
                for ss in rs.scope_spans:
                    out.extend((rs.resource, span) for span in ss.spans)
    return out


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which)
    return out


def test_spans_and_metrics_are_exported_over_otlp(http_receiver: Any, store_factory: Any, tmp_path: Path) -> None:
    receiver = http_receiver()
    settings = TelemetrySettings(otlp_endpoint=receiver.url + "/", otlp_headers={"x-otlp-key": "k-123"}, service_name="mcpsift-test")
    tel = Telemetry("serve", settings)
    runner = EmbeddedRunner(Settings(data_dir=tmp_path), store_factory(), telemetry=tel)
    burst = _lines(BURST)
    runner.ingest(burst[:15], source="http")
    runner.ingest(burst[15:] + [b"not json"], source="otlp")
    with pytest.raises(RuntimeError, match="boom"):
        with tel.span("detect", events=3):
            raise RuntimeError("boom")
    tel.shutdown()  # flushes the batch span processor and the periodic metric reader
    tel.shutdown()  # twice is harmless

    spans = _spans(receiver)
    ingest = [(res, s) for res, s in spans if s.name == "mcpsift.serve.ingest"]
    assert len(ingest) == 2, [s.name for _, s in spans]  # one span per batch, not per event
    by_source = {_attrs(s.attributes)["source"]: _attrs(s.attributes) for _, s in ingest}
    assert by_source["http"] == {"events": 15, "source": "http", "accepted": 15, "rejected": 0}
    assert by_source["otlp"] == {"events": len(burst) - 15 + 1, "source": "otlp", "accepted": len(burst) - 15, "rejected": 1}
    resource = _attrs(ingest[0][0].attributes)
    assert resource["service.name"] == "mcpsift-test" and resource["mcpsift.component"] == "serve"
    failed = [s for _, s in spans if s.name == "mcpsift.serve.detect"]
    assert len(failed) == 1 and failed[0].status.code == 2  # STATUS_CODE_ERROR
    assert [e.name for e in failed[0].events] == ["exception"]
    assert all(r.headers.get("x-otlp-key") == "k-123" for r in receiver.ok_requests())

    sums: dict[tuple[str, str], float] = {}
    for req in receiver.ok_requests():
        if req.path == "/v1/metrics":
            for rm in ExportMetricsServiceRequest.FromString(req.body).resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.WhichOneof("data") == "sum":
                            for point in metric.sum.data_points:
                                sums[(metric.name, _attrs(point.attributes).get("source", ""))] = point.as_double or point.as_int
    assert sums[("mcpsift_serve_events_in", "http")] == 15
    assert sums[("mcpsift_serve_events_in", "otlp")] == len(burst) - 15
    assert sums[("mcpsift_serve_deadletters", "otlp")] == 1


def test_serve_metrics_answers_metrics_and_healthz() -> None:
    tel = Telemetry("worker")
    tel.events_in.add(5, {"source": "kafka"})
    host, port = tel.serve_metrics("127.0.0.1", 0)
    url = f"http://{host}:{port}"
    try:
        r = httpx.get(url + "/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        _, samples = _exposed(r.content)
        assert _value(samples, "mcpsift_worker_events_in_total", source="kafka") == 5

        r = httpx.get(url + "/healthz", timeout=10)
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        tel.health = lambda: {"partitions": 4}
        assert httpx.get(url + "/healthz", timeout=10).json() == {"status": "ok", "partitions": 4}
        tel.health = lambda: {"status": "starting"}
        assert httpx.get(url + "/healthz", timeout=10).status_code == 503
        tel.health = lambda: {"status": "error", "error": "ConnectionError"}
        r = httpx.get(url + "/healthz", timeout=10)
        assert (r.status_code, r.json()) == (503, {"status": "error", "error": "ConnectionError"})

        def broken() -> dict:
            raise KeyError("secret-partition-key")

        tel.health = broken
        r = httpx.get(url + "/healthz", timeout=10)
        assert (r.status_code, r.json()) == (503, {"status": "error", "error": "KeyError"})
        assert httpx.get(url + "/other", timeout=10).status_code == 404

        with pytest.raises(TelemetryError, match=rf"127.0.0.1:{port}.*worker.metrics_port"):
            Telemetry("worker").serve_metrics("127.0.0.1", port)  # taken
        with pytest.raises(ValueError, match="worker.metrics_port"):
            tel.serve_metrics("127.0.0.1", 70000)
    finally:
        tel.shutdown()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/metrics", timeout=5)
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


def test_metrics_route_on_a_real_serve(serve_factory: Any, http_receiver: Any) -> None:
    server = serve_factory()
    events = _lines(BURST)[:4]
    r = server.post("/v1/events", content=b"\n".join(events), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 401
    assert httpx.get(server.url + "/metrics", headers={"authorization": "Bearer mcps_wrong"}, timeout=10).status_code == 401
    r = httpx.get(server.url + "/metrics", headers=server.ingest_headers, timeout=10)  # any role will do
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    types, samples = _exposed(r.content)
    assert _value(samples, "mcpsift_serve_events_in_total", source="http") == 4
    assert types and all(NAME.match(n) for n in types), types
    assert "/metrics" not in httpx.get(server.url + "/openapi.json", headers=server.admin_headers, timeout=10).json()["paths"]

    collector = http_receiver()
    open_server = serve_factory(
        data_dir=server.data_dir.with_name("open"),
        telemetry__metrics_require_auth="false",
        telemetry__otlp_endpoint=collector.url,
    )
    r = httpx.get(open_server.url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    r = open_server.post("/v1/events", content=b"\n".join(events), headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    assert open_server.stop() in (0, -15)  # SIGTERM: the app's shutdown flushes the OTLP exporters
    ingest = [s for _, s in _spans(collector) if s.name == "mcpsift.serve.ingest"]
    assert [_attrs(s.attributes)["accepted"] for s in ingest] == [4]


def test_metrics_route_on_the_query_api(store_factory: Any, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from mcpsift.api.app import create_api_app
    from mcpsift.api.auth import ApiAuthenticator
    from mcpsift.store.keys import ApiKeys

    store = store_factory()
    settings = Settings(data_dir=tmp_path, database=store.database)
    _, key = ApiKeys(store).create(["viewer"], None, name="scraper")
    app = create_api_app(settings, store, authenticator=ApiAuthenticator(settings, store))
    app.state.telemetry.stage_latency_seconds.record(0.01, {"stage": "query"})
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        r = client.get("/metrics", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200 and b"mcpsift_api_stage_latency_seconds_count" in r.content
