"""The detection catalogue as a whole: every rule id of the spec is implemented,
with the spec's severity, documented in docs/detections.md, and covered by
data cases for both its "fires when" and its "must not fire when" sides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcpsift.detectors import DETECTOR_CLASSES, RULES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "detections.md"
CASES = Path(__file__).parent / "cases"

#: a catalogue table row: | `rule_id` | sev | fires when | must not fire when |
_ROW = re.compile(r"^\|\s*`([a-z_]+\.[a-z_]+)`\s*\|\s*(low|medium|high|critical)\s*\|")


def _spec_rules() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    catalogue = text.split("## Implementation notes", 1)[0]
    rules = {m.group(1): m.group(2) for line in catalogue.splitlines() if (m := _ROW.match(line))}
    assert len(rules) >= 20, f"{DOCS}: could not read the catalogue tables (found {sorted(rules)})"
    return rules


SPEC = _spec_rules()


def test_every_spec_rule_is_registered_and_nothing_else() -> None:
    missing = sorted(set(SPEC) - set(RULES))
    extra = sorted(set(RULES) - set(SPEC))
    assert not missing, f"rule ids of docs/detections.md with no detector: {missing}"
    assert not extra, f"registered rule ids missing from docs/detections.md (add them there first): {extra}"


@pytest.mark.parametrize("rule_id", sorted(SPEC))
def test_severity_matches_the_spec(rule_id: str) -> None:
    cls = RULES[rule_id]
    assert cls.severities[rule_id] == SPEC[rule_id], f"{cls.__name__}: {rule_id} severity differs from the spec"


@pytest.mark.parametrize("rule_id", sorted(SPEC))
def test_rule_has_fires_and_quiet_cases(rule_id: str) -> None:
    folder = CASES / rule_id
    fires = sorted(folder.glob("fires_*.jsonl"))
    quiet = sorted(folder.glob("quiet_*.jsonl"))
    assert fires, f"no tests/cases/{rule_id}/fires_*.jsonl case for the 'fires when' clause(s)"
    assert quiet, f"no tests/cases/{rule_id}/quiet_*.jsonl case for the 'must not fire when' clause(s)"


@pytest.mark.parametrize("rule_id", sorted(SPEC))
def test_rule_has_implementation_notes(rule_id: str) -> None:
    notes = DOCS.read_text(encoding="utf-8").split("## Implementation notes", 1)
    assert len(notes) == 2 and f"| `{rule_id}` |" in notes[1], (
        f"docs/detections.md: no row for `{rule_id}` in the Implementation notes table (thresholds and choices)"
    )


def test_every_detector_declares_what_it_emits() -> None:
    for cls in DETECTOR_CLASSES:
        assert cls.rule_ids, f"{cls.__name__} declares no rule_ids"
        assert set(cls.severities) == set(cls.rule_ids), f"{cls.__name__}: severities must cover exactly its rule_ids"
