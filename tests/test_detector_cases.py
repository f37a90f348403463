"""Behaviour tests of the detectors, written as data.

Every ``tests/cases/**/<name>.jsonl`` is a case: spec-valid events, one JSON
object a line, with ``<name>.expect.json`` beside it::

    {"description": "which spec clause this covers",
     "alerts": {"<rule_id>": <exact count>, ...},
     "settings": {...}}            # optional: Settings the case runs with

Counts are exact for every registered rule: a rule not listed must raise no
alert on that file. ``settings`` is for clauses that need configuration (an
approved-server registry, a label map, a lowered model warm-up); it is given
to :class:`~mcpsift.settings.Settings` as keyword arguments. Adding a case is
adding two files; no test code changes.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcpsift.detectors import RULES
from mcpsift.events import InvalidEvent
from mcpsift.settings import Settings
from mcpsift.streams.pipeline import Pipeline

CASES_DIR = Path(__file__).parent / "cases"
EXPECT_SUFFIX = ".expect.json"

#: events of the shuffled run move by less than this (default allowed lateness is 30 s)
MAX_SHIFT_S = 25.0
SHUFFLE_SEED = 20261120
#: shuffles per case (fixed seeds): several, so that near-simultaneous events really do swap
SHUFFLE_ROUNDS = 8


@pytest.fixture(autouse=True)
def _default_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Cases are written against the spec's defaults: ignore MCPSIFT_* from the environment,
    and start from no trained models (a ./.mcpsift/models left by `mcpsift train` must not leak in)."""
    for name in list(os.environ):
        if name.upper().startswith("MCPSIFT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MCPSIFT_DATA_DIR", str(tmp_path / "data"))


def _discover() -> list[Any]:
    """One param per case: every ``*.jsonl`` and every orphan ``*.expect.json``."""
    events = {p.with_suffix("") for p in CASES_DIR.rglob("*.jsonl")}
    expects = {p.with_name(p.name[: -len(EXPECT_SUFFIX)]) for p in CASES_DIR.rglob("*" + EXPECT_SUFFIX)}
    stems = sorted(events | expects)
    if not stems:
        return [pytest.param(None, id="no-cases-found")]
    return [pytest.param(stem, id=str(stem.relative_to(CASES_DIR)) + ".jsonl") for stem in stems]


CASES = _discover()


# --------------------------------------------------------------------------
# loading


def _load_expect(stem: Path) -> tuple[str, dict[str, int], dict[str, Any]]:
    path = stem.with_name(stem.name + EXPECT_SUFFIX)
    if not path.is_file():
        pytest.fail(f"{path}: missing expect file for case {stem.name}.jsonl", pytrace=False)
    error = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        error = str(exc)
    if error is not None:
        pytest.fail(f"{path}: malformed expect file: not valid JSON: {error}", pytrace=False)
    problems: list[str] = []
    if not isinstance(data, dict):
        pytest.fail(f"{path}: malformed expect file: must be a JSON object, got {type(data).__name__}", pytrace=False)
    unknown_keys = sorted(set(data) - {"description", "alerts", "settings"})
    if unknown_keys:
        problems.append(f"unknown key(s) {unknown_keys} (allowed: description, alerts, settings)")
    overrides = data.get("settings", {})
    if not isinstance(overrides, dict):
        problems.append("'settings' must be an object of Settings fields")
        overrides = {}
    elif overrides:
        try:
            Settings(**overrides)
        except Exception as exc:  # pydantic's message names the field
            problems.append(f"'settings' is not valid: {exc}")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append("'description' must be a non-empty string naming the spec clause covered")
    alerts = data.get("alerts")
    if not isinstance(alerts, dict):
        problems.append("'alerts' must be an object {rule_id: exact count}")
        alerts = {}
    for rule, count in alerts.items():
        if rule not in RULES:
            problems.append(f"unknown rule id {rule!r} in 'alerts' (known: {', '.join(sorted(RULES))})")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            problems.append(f"count for {rule!r} must be a non-negative integer, got {count!r}")
    if problems:
        pytest.fail(f"{path}: malformed expect file: " + "; ".join(problems), pytrace=False)
    return description, dict(alerts), dict(overrides)


def _load_events(stem: Path) -> list[tuple[int, str]]:
    """(line number, raw line) of every non-blank line."""
    path = stem.with_name(stem.name + ".jsonl")
    if not path.is_file():
        pytest.fail(f"{path}: missing event file for expect file {stem.name}{EXPECT_SUFFIX}", pytrace=False)
    lines = [
        (number, line)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        pytest.fail(f"{path}: case has no events", pytrace=False)
    return lines


@dataclass
class Case:
    path: Path
    description: str
    expected: dict[str, int]
    lines: list[tuple[int, str]]
    settings: dict[str, Any]

    def new_settings(self) -> Settings:
        return Settings(**self.settings)


def _case(stem: Path | None) -> Case:
    if stem is None:
        pytest.fail(f"no cases found under {CASES_DIR}", pytrace=False)
    events_path = stem.with_name(stem.name + ".jsonl")
    lines = _load_events(stem)
    description, expected, overrides = _load_expect(stem)
    return Case(events_path, description, expected, lines, overrides)


# --------------------------------------------------------------------------
# running


def _validated(pipeline: Pipeline, path: Path, lines: list[tuple[int, str]]) -> list[Any]:
    events = []
    seen: dict[str, int] = {}
    for number, line in lines:
        try:
            ev = pipeline.validate(line)
        except InvalidEvent as exc:
            ev, error = None, str(exc)
        if ev is None:
            pytest.fail(f"{path}:{number}: invalid event: {error}", pytrace=False)
        if ev.event_id in seen:
            pytest.fail(
                f"{path}:{number}: event_id {ev.event_id!r} already used on line {seen[ev.event_id]} "
                "(event ids must be unique within a case file)",
                pytrace=False,
            )
        seen[ev.event_id] = number
        events.append(ev)
    return events


def _run_in_order(case: Case) -> tuple[list[Any], list[Any]]:
    """File order, all pushed, then release + drain. Returns (events, alerts)."""
    path = case.path
    p = Pipeline(case.new_settings())
    events = _validated(p, path, case.lines)
    for ev in events:
        assert p.push(ev), f"{path}: event {ev.event_id} was dropped as a redelivery"
    return events, p.release() + p.drain()


def _run_shuffled(case: Case, round_: int) -> tuple[list[str], list[Any]]:
    """Arrival order = event time + a random shift in [0, MAX_SHIFT_S) s, released as it goes."""
    path = case.path
    p = Pipeline(case.new_settings())
    lateness = p.settings.allowed_lateness_s
    assert MAX_SHIFT_S < lateness, "the shuffle must stay within the default allowed lateness"
    events = _validated(p, path, case.lines)
    rng = random.Random(f"{SHUFFLE_SEED}:{round_}:{path.relative_to(CASES_DIR)}")
    keyed = [(ev.time.timestamp() + rng.uniform(0.0, MAX_SHIFT_S), i, ev) for i, ev in enumerate(events)]
    keyed.sort(key=lambda item: (item[0], item[1]))
    arrival = [ev.event_id for _, _, ev in keyed]
    alerts = []
    for _, _, ev in keyed:
        p.push(ev)
        alerts.extend(p.release())
    alerts.extend(p.drain())
    assert p.buffer.late_events == 0, f"{path}: {p.buffer.late_events} event(s) arrived beyond the allowed lateness"
    return arrival, alerts


def _describe(alerts: list[Any]) -> str:
    if not alerts:
        return "  (no alerts)"
    return "\n".join(f"  - {a.rule_id} [{', '.join(a.event_ids)}]: {a.description}" for a in alerts)


# --------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("stem", CASES)
def test_case_alerts(stem: Path | None) -> None:
    case = _case(stem)
    path, description, expected = case.path, case.description, case.expected
    events, alerts = _run_in_order(case)

    got = Counter(a.rule_id for a in alerts)
    rules = sorted(set(RULES) | set(expected) | set(got))
    want_all = {rule: expected.get(rule, 0) for rule in rules}
    got_all = {rule: got.get(rule, 0) for rule in rules}
    mismatched = [f"{r}: expected {want_all[r]}, got {got_all[r]}" for r in rules if want_all[r] != got_all[r]]
    assert not mismatched, (
        f"{path}: alert counts differ from the expect file\n"
        f"case: {description}\n"
        "mismatch:\n  " + "\n  ".join(mismatched) + "\n"
        f"alerts raised ({len(alerts)}):\n{_describe(alerts)}"
    )

    input_ids = {ev.event_id for ev in events}
    for a in alerts:
        foreign = [i for i in a.event_ids if i not in input_ids]
        assert not foreign, f"{path}: alert {a.rule_id} ({a.alert_id}) cites event ids not in the input: {foreign}"

    ids = Counter(a.alert_id for a in alerts)
    repeated = {i: n for i, n in ids.items() if n > 1}
    assert not repeated, f"{path}: alert ids repeated: {repeated}\n{_describe(alerts)}"


@pytest.mark.parametrize("stem", CASES)
def test_case_out_of_order_within_lateness(stem: Path | None) -> None:
    case = _case(stem)
    path, description = case.path, case.description
    _, in_order = _run_in_order(case)
    want = {a.alert_id for a in in_order}
    for round_ in range(SHUFFLE_ROUNDS):
        arrival, shuffled = _run_shuffled(case, round_)
        got = {a.alert_id for a in shuffled}
        assert got == want, (
            f"{path}: events shuffled within the allowed lateness (round {round_}) gave different alerts\n"
            f"case: {description}\n"
            f"arrival order: {arrival}\n"
            f"in order:\n{_describe(in_order)}\n"
            f"shuffled:\n{_describe(shuffled)}"
        )
        assert len(shuffled) == len(got), f"{path}: shuffled run (round {round_}) repeated alert ids\n{_describe(shuffled)}"
