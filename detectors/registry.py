"""The registry of detectors and building the enabled set from settings.

Adding a detection is one module plus one line in :data:`DETECTOR_CLASSES`
(and its data-file cases under ``detectors/cases/``).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from pydantic import ValidationError

from .auth_tokens import AudienceMismatch, ExpiredTokenAccepted, TokenReuseAcrossAudiences
from .base import Detector
from .sessions import SessionHijack
from .tools import DefinitionDrift

__all__ = ["DETECTOR_CLASSES", "RULES", "UnknownDetector", "build_detectors", "rule_ids"]

DETECTOR_CLASSES: tuple[type[Detector], ...] = (
    AudienceMismatch,
    TokenReuseAcrossAudiences,
    ExpiredTokenAccepted,
    DefinitionDrift,
    SessionHijack,
)

#: rule id -> the detector class that emits it
RULES: dict[str, type[Detector]] = {rule: cls for cls in DETECTOR_CLASSES for rule in cls.rule_ids}


class UnknownDetector(ValueError):
    """Settings name a rule or a threshold that does not exist."""


def rule_ids() -> list[str]:
    return sorted(RULES)


def _check_known(names: Iterable[str], where: str) -> None:
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise UnknownDetector(
            f"{where}: unknown rule id(s) {', '.join(repr(u) for u in unknown)}; known rule ids: {', '.join(rule_ids())}"
        )


def build_detectors(
    enabled: Optional[Iterable[str]] = None,
    disabled: Iterable[str] = (),
    thresholds: Optional[dict[str, dict[str, Any]]] = None,
) -> tuple[list[Detector], frozenset[str]]:
    """Instantiate the detectors the settings ask for.

    Returns the detectors and the set of rule ids whose alerts are wanted (a
    detector emitting several rules runs when any of them is enabled; alerts
    of its disabled rules are dropped by the runner).
    """
    enabled = list(enabled) if enabled is not None else None
    disabled = list(disabled)
    thresholds = dict(thresholds or {})
    if enabled is not None:
        _check_known(enabled, "detectors.enabled")
    _check_known(disabled, "detectors.disabled")
    _check_known(thresholds, "detectors.thresholds")
    wanted = frozenset((enabled if enabled is not None else RULES.keys())) - frozenset(disabled)
    detectors: list[Detector] = []
    for cls in DETECTOR_CLASSES:
        if not wanted.intersection(cls.rule_ids):
            continue
        values: dict[str, Any] = {}
        for rule in cls.rule_ids:
            values.update(thresholds.get(rule, {}))
        try:
            params = cls.Params(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: "
                + ("unknown threshold" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors()
            )
            known = ", ".join(cls.Params.model_fields) or "(none)"
            raise UnknownDetector(
                f"detectors.thresholds for {'/'.join(cls.rule_ids)}: {problems} (known thresholds: {known})"
            ) from None
        detectors.append(cls(params))
    return detectors, wanted
