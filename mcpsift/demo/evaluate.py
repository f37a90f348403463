"""Score the detectors on labelled demo traffic (``mcpsift demo evaluate DIR``).

The detectors run exactly as ``mcpsift detect`` runs them
(:func:`mcpsift.streams.offline.detect_file`), with the settings in
``DIR/config.yaml`` over the defaults and the data directory pointed at a
fresh temporary directory, so no learned model of another run leaks in.

Matching, per rule:

* an attack instance is *detected* when an alert of its rule cites any of its
  evidence event ids;
* an alert is a *true positive* when it matches some attack instance of its
  rule, else a *false positive*;
* a false positive that cites an event labelled as a benign case of its rule
  is an alert *on a must-not-fire case*.

The quality gate (the exit code of the command): every rule with attacks has
recall >= ``min_recall``, overall precision >= ``min_precision``, and no
alert fires on a must-not-fire case.
"""

from __future__ import annotations

import json
import tempfile
import time as _time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

__all__ = ["RuleScore", "FalsePositive", "Report", "evaluate", "load_settings_for", "MIN_RECALL", "MIN_PRECISION"]

MIN_RECALL = 0.95
MIN_PRECISION = 0.98


@dataclass
class RuleScore:
    rule_id: str
    implemented: bool
    attacks: int = 0
    detected: int = 0
    alerts: int = 0
    true_positives: int = 0
    false_positives: int = 0
    benign_cases: int = 0
    benign_alerts: int = 0

    @property
    def recall(self) -> Optional[float]:
        return self.detected / self.attacks if self.attacks else None

    @property
    def precision(self) -> Optional[float]:
        return self.true_positives / self.alerts if self.alerts else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "implemented": self.implemented,
            "attacks": self.attacks,
            "detected": self.detected,
            "recall": None if self.recall is None else round(self.recall, 4),
            "alerts": self.alerts,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "precision": None if self.precision is None else round(self.precision, 4),
            "benign_cases": self.benign_cases,
            "alerts_on_must_not_fire_cases": self.benign_alerts,
        }


@dataclass
class FalsePositive:
    rule_id: str
    alert_id: str
    event_ids: list[str]
    description: str
    #: the must-not-fire clause it hit, when it cites a benign case
    clause: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "alert_id": self.alert_id, "event_ids": self.event_ids,
                "description": self.description, "must_not_fire_clause": self.clause}


@dataclass
class Report:
    directory: str
    events: int
    alerts: int
    seconds: float
    rules: list[RuleScore]
    false_positives: list[FalsePositive]
    missed: dict[str, list[str]] = field(default_factory=dict)
    ignored_settings: list[str] = field(default_factory=list)
    min_recall: float = MIN_RECALL
    min_precision: float = MIN_PRECISION

    @property
    def attacks(self) -> int:
        return sum(r.attacks for r in self.rules)

    @property
    def detected(self) -> int:
        return sum(r.detected for r in self.rules)

    @property
    def true_positives(self) -> int:
        return sum(r.true_positives for r in self.rules)

    @property
    def recall(self) -> float:
        return self.detected / self.attacks if self.attacks else 1.0

    @property
    def precision(self) -> float:
        return self.true_positives / self.alerts if self.alerts else 1.0

    @property
    def benign_alerts(self) -> int:
        return sum(r.benign_alerts for r in self.rules)

    def failures(self) -> list[str]:
        """Why the quality gate fails (empty when it passes)."""
        out = []
        for r in self.rules:
            if r.attacks and (r.recall or 0.0) < self.min_recall:
                out.append(f"{r.rule_id}: recall {r.recall:.2f} < {self.min_recall:.2f}"
                           + ("" if r.implemented else " (rule not implemented in this build)"))
        if self.precision < self.min_precision:
            out.append(f"overall precision {self.precision:.3f} < {self.min_precision:.2f}")
        for r in self.rules:
            if r.benign_alerts:
                out.append(f"{r.rule_id}: {r.benign_alerts} alert(s) on must-not-fire cases")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "events": self.events,
            "alerts": self.alerts,
            "seconds": self.seconds,
            "attacks": self.attacks,
            "detected": self.detected,
            "recall": round(self.recall, 4),
            "precision": round(self.precision, 4),
            "alerts_on_must_not_fire_cases": self.benign_alerts,
            "min_recall": self.min_recall,
            "min_precision": self.min_precision,
            "passed": self.passed,
            "failures": self.failures(),
            "rules": [r.as_dict() for r in self.rules],
            "false_positives": [fp.as_dict() for fp in self.false_positives],
            "missed": self.missed,
            "ignored_settings": self.ignored_settings,
        }


def _sanitise(config: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """Drop detector settings this build does not know (rules or thresholds still being written).

    The demo's config.yaml names thresholds of every rule in the catalogue; a
    build that lacks one of them would refuse the whole file.
    """
    from mcpsift.detectors import RULES

    detectors = config.get("detectors")
    if not isinstance(detectors, dict):
        return config

    def keep(rule: str, values: Any, where: str) -> Optional[dict[str, Any]]:
        cls = RULES.get(rule)
        if cls is None:
            notes.append(f"{where}.{rule}: no such rule in this build, ignored")
            return None
        if not isinstance(values, dict):
            return values
        known = cls.Params.model_fields
        out = {}
        for key, value in values.items():
            if key in known:
                out[key] = value
            else:
                notes.append(f"{where}.{rule}.{key}: {cls.__name__} has no such threshold in this build, ignored")
        return out

    thresholds = detectors.get("thresholds")
    if isinstance(thresholds, dict):
        detectors["thresholds"] = {r: v for r, v in ((r, keep(r, v, "detectors.thresholds")) for r, v in thresholds.items()) if v is not None}
    per_tenant = detectors.get("tenant_thresholds")
    if isinstance(per_tenant, dict):
        cleaned = {}
        for tenant, rules in per_tenant.items():
            if isinstance(rules, dict):
                rules = {r: v for r, v in ((r, keep(r, v, f"detectors.tenant_thresholds.{tenant}")) for r, v in rules.items()) if v is not None}
            cleaned[tenant] = rules
        detectors["tenant_thresholds"] = cleaned
    for key in ("enabled", "disabled"):
        names = detectors.get(key)
        if isinstance(names, list):
            unknown = [n for n in names if n not in RULES]
            for n in unknown:
                notes.append(f"detectors.{key}: {n}: no such rule in this build, ignored")
            detectors[key] = [n for n in names if n in RULES]
    return config


def load_settings_for(directory: Path, config: Optional[Path], data_dir: Path, notes: list[str]) -> Any:
    """The settings the demo traffic assumes, with the data directory at ``data_dir``."""
    from mcpsift.settings import load_settings

    path = config if config is not None else directory / "config.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of settings")
        data = loaded or {}
    elif config is not None:
        raise FileNotFoundError(f"config file {path} not found")
    data = _sanitise(data, notes)
    data.pop("data_dir", None)
    clean = data_dir / "demo-config.yaml"
    clean.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_settings(clean, data_dir=data_dir)


def evaluate(
    directory: str | Path,
    *,
    config: Optional[str | Path] = None,
    min_recall: float = MIN_RECALL,
    min_precision: float = MIN_PRECISION,
    processes: Optional[int] = None,
    on_progress: Optional[Callable[[int, int], None]] = None,
) -> Report:
    """Run the detectors over ``directory/events.jsonl`` and score the alerts against ``labels.json``."""
    from mcpsift.detectors import RULES
    from mcpsift.streams.offline import detect_file

    directory = Path(directory)
    events_path = directory / "events.jsonl"
    labels_path = directory / "labels.json"
    for path in (events_path, labels_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: generate the traffic first with `mcpsift demo generate --out {directory}`")
    labels = json.loads(labels_path.read_bytes())
    notes: list[str] = []
    started = _time.perf_counter()
    total = events_path.stat().st_size
    with tempfile.TemporaryDirectory(prefix="mcpsift-demo-") as tmp:
        settings = load_settings_for(directory, Path(config) if config is not None else None, Path(tmp), notes)
        alerts_path = Path(tmp) / "alerts.jsonl"
        with open(alerts_path, "wb") as out:
            report = detect_file(
                events_path, out, settings, processes=processes,
                on_progress=(lambda done: on_progress(done, total)) if on_progress else None, progress_every=4 << 20,
            )
        alerts = [json.loads(line) for line in alerts_path.read_bytes().splitlines() if line.strip()]
    if on_progress:
        on_progress(total, total)
    seconds = round(_time.perf_counter() - started, 2)

    attacks = labels.get("attacks", [])
    benign = labels.get("benign", [])
    # evidence event id -> attack indices, per rule
    evidence: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, attack in enumerate(attacks):
        for event_id in attack["evidence"]:
            evidence[attack["rule_id"]][event_id].append(i)
    benign_ids: dict[str, dict[str, str]] = defaultdict(dict)
    benign_cases: dict[str, int] = defaultdict(int)
    for case in benign:
        benign_cases[case["rule_id"]] += 1
        for event_id in case["event_ids"]:
            benign_ids[case["rule_id"]].setdefault(event_id, case["clause"])

    rules = sorted(set(RULES) | {a["rule_id"] for a in attacks} | set(benign_cases))
    scores = {r: RuleScore(r, implemented=r in RULES, benign_cases=benign_cases.get(r, 0)) for r in rules}
    for attack in attacks:
        scores[attack["rule_id"]].attacks += 1
    detected: set[int] = set()
    false_positives: list[FalsePositive] = []
    for alert in alerts:
        rule = alert["rule_id"]
        score = scores.setdefault(rule, RuleScore(rule, implemented=rule in RULES))
        score.alerts += 1
        matched = set()
        for event_id in alert.get("event_ids", []):
            matched.update(evidence[rule].get(event_id, ()))
        if matched:
            score.true_positives += 1
            detected.update(matched)
            continue
        score.false_positives += 1
        clause = next((benign_ids[rule][e] for e in alert.get("event_ids", []) if e in benign_ids[rule]), None)
        if clause is not None:
            score.benign_alerts += 1
        false_positives.append(FalsePositive(rule, alert.get("alert_id", ""), list(alert.get("event_ids", [])),
                                             alert.get("description", ""), clause))
    missed: dict[str, list[str]] = defaultdict(list)
    for i, attack in enumerate(attacks):
        if i in detected:
            scores[attack["rule_id"]].detected += 1
        else:
            missed[attack["rule_id"]].append(attack.get("note", ""))
    return Report(
        directory=str(directory), events=report.events, alerts=len(alerts), seconds=seconds,
        rules=[scores[r] for r in sorted(scores)], false_positives=false_positives, missed=dict(missed),
        ignored_settings=notes, min_recall=min_recall, min_precision=min_precision,
    )
