"""The pipeline's own guarantees: redeliveries dropped, detector failures contained, snapshots resumable."""

from __future__ import annotations

from pathlib import Path

from mcpsift.settings import Settings
from mcpsift.streams.pipeline import Pipeline

EXAMPLES = (Path(__file__).resolve().parents[1] / "docs" / "examples.jsonl").read_bytes().splitlines()


def _run(pipeline: Pipeline, lines: list[bytes]) -> list:
    for line in lines:
        pipeline.push(pipeline.validate(line))
    return pipeline.release() + pipeline.drain()


def test_a_redelivered_event_is_processed_once() -> None:
    p = Pipeline(Settings())
    alerts = _run(p, EXAMPLES + EXAMPLES)
    # once each: the examples' two new clients and the replayed token
    assert p.duplicates == len(EXAMPLES)
    assert sorted(a.rule_id for a in alerts) == ["auth.new_client", "auth.new_client", "auth.token_reuse_across_audiences"]


def test_a_failing_detector_is_contained(monkeypatch) -> None:
    p = Pipeline(Settings())
    hijack = next(d for d in p.detect.detectors if "session.hijack" in d.rule_ids)

    def broken(state, ev):
        raise RuntimeError("boom")

    monkeypatch.setattr(hijack, "step", broken)
    p.detect._build_plan()
    alerts = _run(p, EXAMPLES)
    # the others still ran
    assert sorted(a.rule_id for a in alerts) == ["auth.new_client", "auth.new_client", "auth.token_reuse_across_audiences"]
    with_session = sum(1 for line in EXAMPLES if b'"session": {"id"' in line)
    assert p.detect.detector_errors == {"SessionHijack": with_session}


def test_snapshot_and_restore_resume_where_it_stopped() -> None:
    whole = Pipeline(Settings())
    expected = _run(whole, EXAMPLES)
    first = Pipeline(Settings())
    for line in EXAMPLES[:6]:
        first.push(first.validate(line))  # still in the reorder buffer: nothing released
    resumed = Pipeline(Settings())
    resumed.restore(first.snapshot())
    assert len(resumed.buffer) == 6
    alerts = _run(resumed, EXAMPLES)  # redelivery of the first six is dropped
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected]
    assert resumed.duplicates == 6


def test_idle_state_expires_by_event_time() -> None:
    p = Pipeline(Settings())
    _run(p, EXAMPLES)
    held = p.detect.state_size()
    assert held > 0
    assert p.detect.expire(now=p.buffer.max_time + 3600) < held  # sessions and tokens of the hour stay
    assert p.detect.expire(now=2_000_000_000.0) > 0  # years later: everything is gone
    assert p.detect.state_size() == 0


def test_outcome_filters_and_the_reader_split_keep_every_alert() -> None:
    """A detector declaring ``outcomes`` only sees those statuses; splitting the
    catalogue between reader_alerts and process gives the alerts of one run."""
    from mcpsift.detectors.base import NO_ALERTS, Detector
    from mcpsift.streams.detect import DetectStage

    seen: list[tuple[str, object]] = []

    class DeniedCallsOnly(Detector):
        rule_ids = ("x.denied",)
        severities = {"x.denied": "low"}
        event_types = frozenset({"mcp.tool_call", "auth.token"})
        outcomes = {"mcp.tool_call": frozenset({"denied"})}
        key_kind = None

        def step(self, state, ev):
            seen.append((ev.type, ev.outcome.status if ev.outcome else None))
            return state, NO_ALERTS

    stage = DetectStage([DeniedCallsOnly()])
    p = Pipeline(Settings())
    for line in EXAMPLES:
        ev = p.validate(line)
        stage.process(ev, ev.time.timestamp())
    assert seen and all(s == "denied" for t, s in seen if t == "mcp.tool_call")
    assert any(t == "auth.token" for t, _ in seen)  # types without a filter: every outcome

    whole = _run(Pipeline(Settings()), EXAMPLES)
    reader, rest = Pipeline(Settings()), Pipeline(Settings())
    split = []
    for line in EXAMPLES:
        ev = reader.validate(line)
        at = ev.time.timestamp()
        split.extend(rest.detect.process(rest.validate(line), at, reader.detect.reader_alerts(ev, at)))
    assert sorted(a.alert_id for a in split) == sorted(a.alert_id for a in whole)
