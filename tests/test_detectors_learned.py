"""The learned detections (detectors/learned.py, detectors/models.py):
determinism, calibration, robust baselines when MAD is 0, snapshots, model
files, and ``mcpsift train`` against the real store.

Behaviour per spec clause lives in the data cases (tests/cases/tool.unusual_sequence,
tests/cases/volume.anomaly, written by tests/cases/make_learned_cases.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import msgspec
import pytest
from typer.testing import CliRunner

from mcpsift.detectors import build_detectors
from mcpsift.detectors import models as M
from mcpsift.detectors.learned import (
    MARKOV_FORMAT,
    VOLUME_FORMAT,
    UnusualSequence,
    UnusualSequenceParams,
    VolumeAnomaly,
    VolumeAnomalyParams,
    train_models,
)
from mcpsift.events import decode_event, encode_event
from mcpsift.settings import Settings
from mcpsift.store import event_row
from mcpsift.streams.detect import DetectStage
from mcpsift.streams.pipeline import Pipeline

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.timezone.utc)
CLIENT = "https://assistant.example.com/oauth/client.json"


# --------------------------------------------------------------------------
# event streams


class Stream:
    """Builds decoded events with unique ids and increasing times."""

    def __init__(self, tenant: str = "acme"):
        self.tenant = tenant
        self.n = 0
        self.events: list[Any] = []

    def _event(self, etype: str, at: dt.datetime, subject: str, session: Optional[str], client: str,
               **fields: Any) -> Any:
        self.n += 1
        doc: dict[str, Any] = {
            "schema": "mcpsift.event/1",
            "event_id": f"ev-{self.n:07d}",
            "time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "type": etype,
            "tenant": self.tenant,
            "source": {"kind": "server", "name": "docs-mcp"},
            "server": {"name": "docs-mcp", "resource": f"https://mcp.{self.tenant}.example/docs"},
            "principal": {"subject": subject, "client_id": client},
            **fields,
        }
        if session is not None:
            doc["session"] = {"id": session}
        ev = decode_event(json.dumps(doc))
        self.events.append(ev)
        return ev

    def call(self, at: dt.datetime, tool: str, subject: str = "dana@acme.example", session: Optional[str] = "s",
             client: str = CLIENT, status: str = "ok") -> Any:
        outcome: dict[str, Any] = {"status": status}
        if status != "ok":
            outcome["error" if status == "error" else "reason"] = "upstream timeout" if status == "error" else "policy"
        return self._event("mcp.tool_call", at, subject, session, client,
                           tool={"name": tool, "arguments": {"query": "renewal"}}, outcome=outcome)

    def end(self, at: dt.datetime, subject: str, session: str, client: str = CLIENT) -> Any:
        return self._event("mcp.session_end", at, subject, session, client)

    def session(self, names: list[str], start: dt.datetime, *, sid: str, subject: str = "dana@acme.example",
                client: str = CLIENT, end: bool = True) -> dt.datetime:
        at = start
        for name in names:
            at += dt.timedelta(seconds=3)
            self.call(at, name, subject, sid, client)
        if end:
            at += dt.timedelta(seconds=1)
            self.end(at, subject, sid, client)
        return at


def random_chain(rng: random.Random, tools: list[str]) -> dict[str, list[tuple[str, float]]]:
    """A random workflow: from each state, a few next tools with random weights (or the end)."""
    chain: dict[str, list[tuple[str, float]]] = {}
    for state in [M.START, *tools]:
        options = rng.sample(tools, 4) + ([M.END] if state != M.START else [])
        weights = [rng.random() ** 2 + 0.02 for _ in options]
        total = sum(weights)
        chain[state] = [(o, w / total) for o, w in zip(options, weights)]
    return chain


def walk(rng: random.Random, chain: dict[str, list[tuple[str, float]]], max_len: int = 12) -> list[str]:
    names: list[str] = []
    state = M.START
    while len(names) < max_len:
        r, acc = rng.random(), 0.0
        for nxt, p in chain[state]:
            acc += p
            if r < acc:
                break
        if nxt == M.END:
            break
        names.append(nxt)
        state = nxt
    return names or [chain[M.START][0][0]]


def sequence_stream(sessions: int, seed: int, chain_seed: int = 7, tools: int = 10) -> tuple[Stream, list[list[str]]]:
    rng = random.Random(seed)
    chain = random_chain(random.Random(chain_seed), [f"tool_{i}" for i in range(tools)])
    stream = Stream()
    sequences = []
    at = T0
    for i in range(sessions):
        names = walk(rng, chain)
        sequences.append(names)
        at = stream.session(names, at + dt.timedelta(seconds=30), sid=f"s{seed}-{i}",
                            subject=f"user{rng.randrange(30)}@acme.example")
    return stream, sequences


def run(detectors: list[Any], events: list[Any]) -> tuple[DetectStage, list[Any]]:
    """The detectors over ``events`` in event-time order (as the pipeline delivers them)."""
    stage = DetectStage(detectors)
    alerts = []
    for ev in sorted(events, key=lambda e: e.time):
        alerts.extend(stage.process(ev, ev.time.timestamp()))
    return stage, alerts


def tenant_state(stage: DetectStage, rule: str, tenant: str = "acme") -> Any:
    return stage.states[rule][tenant][0]


# --------------------------------------------------------------------------
# determinism


def test_the_same_events_give_the_same_state_and_alerts_byte_for_byte() -> None:
    stream, _ = sequence_stream(700, seed=1)
    params = {"volume.anomaly": {"min_history_s": 60, "min_baseline_minutes": 3, "if_min_samples": 32}}
    encoded = []
    for _ in range(2):
        detectors, _ = build_detectors(["tool.unusual_sequence", "volume.anomaly"], thresholds=params)
        stage, alerts = run(detectors, stream.events)
        encoded.append((msgspec.json.encode(stage.snapshot()), [a.model_dump_json() for a in alerts]))
    assert encoded[0] == encoded[1]
    assert tenant_state(stage, "volume.anomaly")["if"]["fit"] >= 1  # the forest took part


def test_a_forest_depends_on_its_seed_only_and_scores_like_scikit_learn() -> None:
    np = pytest.importorskip("numpy")
    from sklearn.ensemble import IsolationForest

    rng = random.Random(3)
    vectors = [[rng.gauss(0, 1), rng.gauss(0, 1), rng.gauss(0, 0.2)] for _ in range(600)]
    a, b, c = M.fit_forest(vectors, 50, seed=11), M.fit_forest(vectors, 50, seed=11), M.fit_forest(vectors, 50, seed=12)
    assert a.to_json() == b.to_json() != c.to_json()
    reference = IsolationForest(n_estimators=50, max_samples=256, random_state=11).fit(np.asarray(vectors))
    probe = [[rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-1, 1)] for _ in range(300)]
    expected = reference.score_samples(np.asarray(probe))
    assert max(abs(a.score(x) - e) for x, e in zip(probe, expected)) < 1e-12
    assert M.Forest.from_json(json.loads(json.dumps(a.to_json()))).score(probe[0]) == a.score(probe[0])


# --------------------------------------------------------------------------
# calibration


def test_at_most_half_a_percent_of_held_out_normal_sessions_exceed_the_threshold() -> None:
    params = UnusualSequenceParams(min_surprise=0.0, max_client_models=0)  # the tenant model alone, no floor
    stream, _ = sequence_stream(4000, seed=51, chain_seed=10)
    stage, _ = run([UnusualSequence(params)], stream.events)
    model = tenant_state(stage, "tool.unusual_sequence")["m"]
    assert model["s"] == 4000 and len(model["sc"]) == params.calibration_sessions
    threshold = model["thr"]
    _, held_out = sequence_stream(6000, seed=52, chain_seed=10)  # the same workflow, other sessions
    scores = sorted(
        M.sequence_score(model, [M.START, *names, M.END], params.alpha, params.window, frozen=True)
        for names in held_out
    )
    above = sum(score > threshold for score in scores) / len(scores)
    assert 0 < above <= 0.005, f"{above:.2%} of held-out sessions above the threshold {threshold:.3f}"
    # set at the tail of normal scores (the held-out 99.5th percentile), not far above it
    held_out_quantile = scores[math.ceil(0.995 * len(scores)) - 1]
    assert held_out_quantile - 0.1 <= threshold <= held_out_quantile + params.margin + 0.1


def test_the_threshold_floor_keeps_a_very_regular_tenant_quiet() -> None:
    stream = Stream()
    at = T0
    for i in range(600):
        at = stream.session(["search", "read", "summarize"], at + dt.timedelta(seconds=30), sid=f"s{i}")
    # one known-tool detour: a never-seen transition, diluted by two ordinary ones
    stream.session(["search", "read", "read", "summarize"], at + dt.timedelta(seconds=30), sid="odd")
    stage, alerts = run([UnusualSequence()], stream.events)
    model = tenant_state(stage, "tool.unusual_sequence")["m"]
    assert max(model["sc"]) < 0.5  # every session alike: the quantile alone would be tiny
    assert model["thr"] == UnusualSequenceParams().min_surprise
    assert alerts == []


def test_a_client_with_enough_sessions_is_scored_by_its_own_model() -> None:
    params = {"tool.unusual_sequence": {"min_sessions": 60, "client_min_sessions": 60}}
    stream = Stream()
    at = T0
    bot, people = "https://ci-bot.example/client.json", CLIENT
    for i in range(150):
        at = stream.session(["search", "read", "summarize"], at + dt.timedelta(seconds=30), sid=f"p{i}", client=people)
        at = stream.session(["list_jobs", "rerun_job"], at + dt.timedelta(seconds=30), sid=f"b{i}", client=bot)
    # ordinary for the tenant (people do it all day), never done by the bot
    stream.session(["search", "read", "summarize"], at + dt.timedelta(seconds=30), sid="bot-odd", client=bot)
    detectors, _ = build_detectors(["tool.unusual_sequence"], thresholds=params)
    stage, alerts = run(detectors, stream.events)
    state = tenant_state(stage, "tool.unusual_sequence")
    assert state["cl"][bot]["s"] >= 150
    assert [a.session_id for a in alerts] == ["bot-odd"]
    assert "client https://ci-bot.example/client.json's threshold" in alerts[0].description


def test_the_common_path_decides_as_the_general_one_for_tenant_and_client_models() -> None:
    # thresholds per tenant (even equal ones) send every call through _observe(), the
    # general path; without, most calls take step()'s inlined common path: same decisions
    params = UnusualSequenceParams(min_sessions=60, client_min_sessions=60, max_session_calls=16, window=2)
    stream, sequences = sequence_stream(260, seed=21, tools=8)
    pairs = Counter(pair for names in sequences for pair in zip(names, names[1:]) if pair[0] != pair[1])
    (a, b), _ = pairs.most_common(1)[0]  # the tenant's commonest transition
    bot = "https://ci-bot.example/client.json"
    at = stream.events[-1].time
    rng = random.Random(4)
    for i in range(140):  # a client of its own (its model in use from its 60th session), in long sessions too
        at = stream.session([a] * rng.choice([2, 3, 20]), at + dt.timedelta(seconds=20), sid=f"b{i}", client=bot)
    # the tenant's commonest transition, never made by the bot (new to its model only); then new to both
    at = stream.session([a, a, a, b], at + dt.timedelta(seconds=30), sid="bot-odd", client=bot)
    stream.session([a, "exfiltrate", "upload"], at + dt.timedelta(seconds=30), sid="odd", client=bot)
    common, general = UnusualSequence(params), UnusualSequence(params, {"acme": params})
    states, alerts = [], []
    for detector in (common, general):
        stage, found = run([detector], stream.events)
        states.append(msgspec.json.encode(stage.snapshot()["states"]))
        alerts.append([a.model_dump_json() for a in found])
    assert alerts[0] == alerts[1] and states[0] == states[1]
    assert {"bot-odd", "odd"} <= {json.loads(a)["session_id"] for a in alerts[0]}
    assert tenant_state(stage, "tool.unusual_sequence")["cl"][bot]["s"] >= 140


def test_window_scores_are_the_means_of_prefix_sums_whatever_the_shape() -> None:
    def reference(surprises: list[float], window: int) -> float:  # the definition, as first written
        if not surprises:
            return 0.0
        prefix = [0.0]
        for value in surprises:
            prefix.append(prefix[-1] + value)
        means = [prefix[i] / i for i in range(1, min(window, len(surprises)) + 1)]
        means += [(prefix[j + window] - prefix[j]) / window for j in range(1, len(surprises) - window + 1)]
        return max(means)

    rng = random.Random(8)
    for n in range(0, 40):
        for _ in range(40):
            values = [rng.choice([rng.random() * 9, 1 / 3, 2.5, 7.0]) for _ in range(n)]
            for window in range(1, 7):
                assert M.max_window_mean(values, window) == reference(values, window)
    model = M.new_markov()
    M.learn_sequence(model, M.transition_keys([M.START, "a", "b", "a", "c", M.END]))
    M.freeze(model, 0.1)
    keys = M.transition_keys([M.START, "a", "b", "new", "a", "c", "d"])  # two transitions unseen at the freeze
    for window in (1, 3, 5):
        expected = M.max_window_mean(M.sequence_surprises(model, keys, 0.1, frozen=True), window)
        assert M.frozen_window_score(model, keys, 0.1, window) == expected


def test_a_long_session_is_learned_in_chunks_and_its_state_stays_bounded() -> None:
    params = {"tool.unusual_sequence": {"max_session_calls": 64}}
    stream = Stream()
    at = T0
    for i in range(1000):  # every transition new and never repeated: always on the scoring path
        stream.call(at + dt.timedelta(seconds=i), f"tool_{i}", session="long")
    detectors, _ = build_detectors(["tool.unusual_sequence"], thresholds=params)
    stage, _ = run(detectors, stream.events)
    state = tenant_state(stage, "tool.unusual_sequence")
    (open_session,) = state["open"].values()
    assert max(len(open_session[1]), len(open_session[2]), len(open_session[8])) <= 65
    learned = sum(state["m"]["c"].values()) + len(open_session[8])
    assert learned == 1000  # START -> tool_0 ... tool_998 -> tool_999: each transition once


# --------------------------------------------------------------------------
# robust baselines


def test_a_constant_baseline_has_mad_zero_and_still_a_positive_scale() -> None:
    center, scale = M.robust_center_scale([1] * 40, 1.0, poisson=True)
    assert (center, scale) == (1, 1.0)
    center, scale = M.robust_center_scale([0.0] * 38 + [0.5, 1.0], 0.1, poisson=False)
    assert center == 0.0 and scale == pytest.approx(max(0.1, 1.2533 * 1.5 / 40))
    center, scale = M.robust_center_scale([60] * 30, 1.0, poisson=True)
    assert scale == pytest.approx(math.sqrt(60))  # the noise of a count of 60, not 0
    assert M.robust_center_scale([], 1.0, poisson=True) == (0.0, 1.0)


def _minutes(stream: Stream, subject: str, counts: list[int], errors: Optional[list[int]] = None,
             start: dt.datetime = T0) -> None:
    for m, calls in enumerate(counts):
        for i in range(calls):
            failed = errors is not None and i < errors[m]
            stream.call(start + dt.timedelta(minutes=m, seconds=1 + 58 * i / max(calls, 1)), f"tool_{i % 2}",
                        subject, session=f"{subject}-s", status="error" if failed else "ok")


def test_volume_with_mad_zero_neither_explodes_nor_goes_blind() -> None:
    stream = Stream()
    # a cron-like principal: exactly one call every minute (MAD 0 for every feature)
    _minutes(stream, "cron@acme.example", [1] * 40 + [3, 1, 1, 14, 1, 1])
    # a steady service account: 60 calls every minute, then 70
    _minutes(stream, "svc@acme.example", [60] * 40 + [60, 70, 60, 60, 60, 60])
    stage, alerts = run([VolumeAnomaly()], stream.events)
    fired = [(a.principal_subject, a.time.replace(second=0, microsecond=0)) for a in alerts]
    assert fired == [("cron@acme.example", T0 + dt.timedelta(minutes=43))]
    assert "calls per minute (14) is 13.0 robust z-scores above" in alerts[0].description


def test_idle_minutes_are_not_observations() -> None:
    stream = Stream()
    # 2 calls once every 10 minutes for 5 hours, then a minute of 5: ordinary for this principal
    for k in range(30):
        _minutes(stream, "dana@acme.example", [2], start=T0 + dt.timedelta(minutes=10 * k))
    _minutes(stream, "dana@acme.example", [5, 0, 0, 1], start=T0 + dt.timedelta(minutes=300))
    stage, alerts = run([VolumeAnomaly()], stream.events)
    profile = tenant_state(stage, "volume.anomaly")["p"]["dana@acme.example"]
    assert len(profile[2]) == 31  # 31 closed active minutes in the baseline, no idle zeros
    assert alerts == []


# --------------------------------------------------------------------------
# snapshots


def test_a_restored_snapshot_continues_exactly_as_an_uninterrupted_run() -> None:
    stream, _ = sequence_stream(900, seed=5)
    odd = Stream()
    last = stream.events[-1].time
    odd.n = stream.n
    odd.session(["tool_1", "exfiltrate", "upload"], last + dt.timedelta(seconds=30), sid="odd")
    burst_at = last + dt.timedelta(minutes=2)
    for i in range(80):
        odd.call(burst_at + dt.timedelta(milliseconds=500 * i), "tool_2", "user3@acme.example", session="burst")
    odd.call(burst_at + dt.timedelta(minutes=1, seconds=5), "tool_2", "user3@acme.example", session="burst")
    events = stream.events + odd.events
    settings = Settings(
        data_dir="/nonexistent/mcpsift-test",
        detectors={
            "enabled": ["tool.unusual_sequence", "volume.anomaly"],
            "thresholds": {"volume.anomaly": {"min_history_s": 600, "min_baseline_minutes": 5, "if_min_samples": 32}},
        },
    )

    def alerts_of(pipeline: Pipeline, evs: list[Any]) -> list[str]:
        for ev in evs:
            pipeline.push(ev)
        return [a.alert_id for a in pipeline.release()]

    whole = Pipeline(settings)
    for ev in events:
        whole.push(ev)
    found = whole.release() + whole.drain()
    assert {"odd", None} <= {a.session_id for a in found}  # the improbable session; the burst (per principal)
    assert {a.rule_id for a in found} == {"tool.unusual_sequence", "volume.anomaly"}
    expected = [a.alert_id for a in found]

    first = Pipeline(settings)
    got = alerts_of(first, events[: len(events) // 2])
    blob = first.snapshot()
    second = Pipeline(settings)
    second.restore(blob)
    got += alerts_of(second, events[len(events) // 2:]) + [a.alert_id for a in second.drain()]
    assert got == expected
    assert msgspec.json.encode(second.detect.snapshot()) == msgspec.json.encode(whole.detect.snapshot())


def test_volume_state_of_the_previous_layout_restores_and_continues_the_same() -> None:
    # the open minute's counters held their distinct tools in a list, and there was no "nx"
    stream = Stream()
    for subject, counts in (("cron@acme.example", [1] * 40 + [3, 1, 14, 1]), ("svc@acme.example", [12] * 44)):
        _minutes(stream, subject, counts)
    events = sorted(stream.events, key=lambda e: e.time)
    expected = [a.model_dump_json() for a in run([VolumeAnomaly()], events)[1]]
    assert expected
    half = len(events) // 2 + 7  # within a minute: the open minute has counters
    first, got = run([VolumeAnomaly()], events[:half])
    snap = json.loads(msgspec.json.encode(first.snapshot()))
    state = snap["states"]["volume.anomaly"]["acme"][0]
    assert state["cur"]
    del state["nx"]
    for rec in state["cur"].values():
        rec[2] = list(rec[2])
    second = DetectStage([VolumeAnomaly()])
    second.restore(snap)
    for ev in events[half:]:
        got.extend(second.process(ev, ev.time.timestamp()))
    assert [a.model_dump_json() for a in got] == expected


# --------------------------------------------------------------------------
# model files


def _trained(tmp_path: Path, sessions: int = 600) -> tuple[Path, Stream]:
    stream, _ = sequence_stream(sessions, seed=9)
    volume = VolumeAnomaly(VolumeAnomalyParams(min_history_s=60, min_baseline_minutes=3, if_min_samples=32))
    train_models(stream.events, tmp_path / "models", volume=volume, trained_from="a", trained_to="b")
    return tmp_path / "models", stream


def test_model_files_round_trip_and_are_used_from_the_first_event(tmp_path: Path) -> None:
    model_dir, stream = _trained(tmp_path)
    markov = json.loads((model_dir / "tool.unusual_sequence.v1.json").read_text())
    volume = json.loads((model_dir / "volume.anomaly.v1.json").read_text())
    assert markov["format"] == MARKOV_FORMAT and volume["format"] == VOLUME_FORMAT
    assert markov["tenants"]["acme"]["m"]["s"] == 600 and markov["tenants"]["acme"]["m"]["thr"] is not None
    assert volume["tenants"]["acme"]["forest"]["trees"] and volume["sklearn"]

    sequence = UnusualSequence()
    sequence.attach_models(model_dir)
    fresh = Stream()
    fresh.session(["tool_1", "exfiltrate", "upload"], T0 + dt.timedelta(days=1), sid="odd")
    stage, alerts = run([sequence], fresh.events)
    assert [a.rule_id for a in alerts] == ["tool.unusual_sequence"]  # no warm-up: the file model has 600 sessions
    assert tenant_state(stage, "tool.unusual_sequence")["m"]["s"] == 601

    loaded = VolumeAnomaly()
    loaded.attach_models(model_dir)
    state = loaded.initial_state()
    loaded._seed(state, "acme")
    forest = loaded._forest("acme", state, loaded.params)
    original = M.Forest.from_json(volume["tenants"]["acme"]["forest"])
    assert forest is not None and forest.score([3.0, 4.0, 0.0]) == original.score([3.0, 4.0, 0.0])
    assert state["p"] == volume["tenants"]["acme"]["p"]


def test_a_model_file_of_another_version_is_refused_with_a_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir, _ = _trained(tmp_path, sessions=50)
    path = model_dir / "tool.unusual_sequence.v1.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format": "mcpsift.markov/2"}))
    (model_dir / "volume.anomaly.v1.json").write_text("{not json")
    caplog.set_level(logging.ERROR)
    sequence, volume = UnusualSequence(), VolumeAnomaly()
    sequence.attach_models(model_dir)
    volume.attach_models(model_dir)
    assert sequence.file_models == {} and volume.file_models == {}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "has format 'mcpsift.markov/2', this mcpsift reads 'mcpsift.markov/1'" in messages
    assert "retrain with `mcpsift train`" in messages
    assert "volume.anomaly.v1.json cannot be read" in messages

    caplog.clear()
    path.rename(model_dir / "tool.unusual_sequence.v9.json")
    UnusualSequence().attach_models(model_dir)
    assert "tool.unusual_sequence.v9.json exist(s)" in " ".join(r.getMessage() for r in caplog.records)


def test_detection_runs_without_model_files(tmp_path: Path) -> None:
    detectors, _ = build_detectors(["tool.unusual_sequence", "volume.anomaly"], model_dir=tmp_path / "nothing")
    assert all(d.file_models == {} for d in detectors)


# --------------------------------------------------------------------------
# mcpsift train


def _store_events(store: Any, events: list[Any]) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    store.insert_events([event_row(ev, encode_event(ev), seq, now) for seq, ev in enumerate(events, start=1)])


def test_mcpsift_train_learns_from_the_store_and_serve_detection_uses_it(
    store_factory: Any, chdb_path: str, tmp_path: Path
) -> None:
    from mcpsift.cli import app

    store = store_factory()
    stream, _ = sequence_stream(560, seed=13)
    late = Stream()
    late.n = stream.n
    late.session(["tool_2", "tool_3"], T0 + dt.timedelta(days=3), sid="after-the-range")
    _store_events(store, stream.events + late.events)
    _store_events(store, stream.events[:100])  # a redelivered batch: FINAL reads it once
    config = tmp_path / "config.yaml"
    config.write_text(
        f"clickhouse_dsn: chdb://{chdb_path}\ndatabase: {store.database}\n"
        "detectors:\n  thresholds:\n    volume.anomaly: {min_history_s: 60, min_baseline_minutes: 3, if_min_samples: 32}\n"
    )
    result = CliRunner().invoke(
        app, ["train", "--from", "2026-11-20", "--to", "2026-11-21T00:00:00Z", "--config", str(config),
              "--data-dir", str(tmp_path / "data")],
    )
    assert result.exit_code == 0, result.output
    assert "tool.unusual_sequence  tenant acme: 560 sessions," in result.stdout
    assert "volume.anomaly         tenant acme: 30 principals" in result.stdout
    model_dir = tmp_path / "data" / "models"
    markov = json.loads((model_dir / "tool.unusual_sequence.v1.json").read_text())
    assert markov["tenants"]["acme"]["m"]["s"] == 560  # the session after --to is not in it
    assert markov["trained_from"].startswith("2026-11-20T00:00:00")

    pipeline = Pipeline(Settings(data_dir=tmp_path / "data", detectors={"enabled": ["tool.unusual_sequence"]}))
    odd = Stream()
    odd.session(["tool_1", "exfiltrate", "upload"], T0 + dt.timedelta(days=4), sid="odd")
    for ev in odd.events:
        pipeline.push(ev)
    assert [a.session_id for a in pipeline.drain()] == ["odd"]


def test_mcpsift_train_refuses_an_empty_range_and_a_reversed_one(store_factory: Any, chdb_path: str, tmp_path: Path) -> None:
    from mcpsift.cli import app

    store = store_factory()
    config = tmp_path / "config.yaml"
    config.write_text(f"clickhouse_dsn: chdb://{chdb_path}\ndatabase: {store.database}\n")
    args = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    empty = CliRunner().invoke(app, ["train", "--from", "2026-01-01", "--to", "2026-01-02", *args])
    assert empty.exit_code == 1 and "nothing to learn" in empty.output
    assert not (tmp_path / "data" / "models").exists()
    reversed_ = CliRunner().invoke(app, ["train", "--from", "2026-01-02", "--to", "2026-01-01", *args])
    assert reversed_.exit_code == 2 and "must be before --to" in reversed_.output
    bad = CliRunner().invoke(app, ["train", "--from", "yesterday", "--to", "2026-01-01", *args])
    assert bad.exit_code == 2 and "is not a date" in bad.output


def test_store_reads_a_time_range_in_event_time_order_across_pages(store_factory: Any) -> None:
    store = store_factory()
    stream = Stream()
    rng = random.Random(4)
    for i in range(250):
        stream.call(T0 + dt.timedelta(seconds=rng.randrange(600)), f"tool_{i % 3}")  # many equal times
    _store_events(store, stream.events)
    since, until = T0 + dt.timedelta(seconds=100), T0 + dt.timedelta(seconds=500)
    decoded = [decode_event(p) for p in store.iter_payloads_between(since, until, batch=7)]
    want = sorted((e for e in stream.events if since <= e.time < until), key=lambda e: (e.time, e.event_id))
    assert [e.event_id for e in decoded] == [e.event_id for e in want]
    assert store.count_events_between(since, until) == len(want) > 100


def test_training_scores_from_scikit_learn_equal_the_pure_python_scores() -> None:
    """Calibration uses the scores scikit-learn computes at fit time (vectorised);
    they must be the values Forest.score gives one vector at a time (up to the
    last bit: numpy sums the path lengths in another order)."""
    import random

    rng = random.Random(5)
    vectors = [[rng.gauss(0, 1), rng.gauss(0, 1), abs(rng.gauss(0, 0.1))] for _ in range(600)]
    forest = M.fit_forest(vectors, 50, seed=3)
    assert forest.training_scores is not None
    assert forest.training_scores == pytest.approx([forest.score(v) for v in vectors], rel=1e-12, abs=0)
