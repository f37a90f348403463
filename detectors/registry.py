"""The registry of detectors and building the enabled set from settings.

Each family module lists its detector classes in a module-level ``DETECTORS``
tuple; :data:`FAMILY_MODULES` names the modules, in the order their detectors
run. Adding a detection is one class in a family module (or a new module named
here) plus its data-file cases under ``tests/cases/<rule_id>/``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterable, Optional

from pydantic import ValidationError

from .base import Detector, Params

__all__ = [
    "DETECTOR_CLASSES",
    "FAMILY_MODULES",
    "RULES",
    "UnknownDetector",
    "build_detectors",
    "build_from_settings",
    "rule_ids",
]

#: the family modules (under ``mcpsift.detectors``), each with a ``DETECTORS`` tuple
FAMILY_MODULES: tuple[str, ...] = (
    "auth_tokens",
    "auth_clients",
    "servers",
    "sessions",
    "tools",
    "tool_definitions",
    "tool_arguments",
    "flows",
    "learned",
)


def _load_classes() -> tuple[type[Detector], ...]:
    classes: list[type[Detector]] = []
    for name in FAMILY_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        classes.extend(module.DETECTORS)
    return tuple(classes)


DETECTOR_CLASSES: tuple[type[Detector], ...] = _load_classes()

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


def _params(cls: type[Detector], values: dict[str, Any], where: str) -> Params:
    try:
        return cls.Params(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: "
            + ("unknown threshold" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        )
        known = ", ".join(cls.Params.model_fields) or "(none)"
        raise UnknownDetector(
            f"{where} for {'/'.join(cls.rule_ids)}: {problems} (known thresholds: {known})"
        ) from None


def build_detectors(
    enabled: Optional[Iterable[str]] = None,
    disabled: Iterable[str] = (),
    thresholds: Optional[dict[str, dict[str, Any]]] = None,
    tenant_thresholds: Optional[dict[str, dict[str, dict[str, Any]]]] = None,
    model_dir: Optional[Path] = None,
) -> tuple[list[Detector], frozenset[str]]:
    """Instantiate the detectors the settings ask for.

    Returns the detectors and the set of rule ids whose alerts are wanted (a
    detector emitting several rules runs when any of them is enabled; alerts
    of its disabled rules are dropped by the runner). ``tenant_thresholds``
    overrides ``thresholds`` per tenant; ``model_dir`` is where learned models
    are loaded from (none are loaded without it).
    """
    enabled = list(enabled) if enabled is not None else None
    disabled = list(disabled)
    thresholds = dict(thresholds or {})
    tenant_thresholds = dict(tenant_thresholds or {})
    if enabled is not None:
        _check_known(enabled, "detectors.enabled")
    _check_known(disabled, "detectors.disabled")
    _check_known(thresholds, "detectors.thresholds")
    for tenant, per_rule in tenant_thresholds.items():
        _check_known(per_rule, f"detectors.tenant_thresholds.{tenant}")
    wanted = frozenset((enabled if enabled is not None else RULES.keys())) - frozenset(disabled)
    detectors: list[Detector] = []
    for cls in DETECTOR_CLASSES:
        if not wanted.intersection(cls.rule_ids):
            continue
        values: dict[str, Any] = {}
        for rule in cls.rule_ids:
            values.update(thresholds.get(rule, {}))
        params = _params(cls, values, "detectors.thresholds")
        per_tenant: dict[str, Params] = {}
        for tenant, per_rule in tenant_thresholds.items():
            overrides: dict[str, Any] = {}
            for rule in cls.rule_ids:
                overrides.update(per_rule.get(rule, {}))
            if overrides:
                per_tenant[tenant] = _params(cls, {**values, **overrides}, f"detectors.tenant_thresholds.{tenant}")
        detector = cls(params, per_tenant)
        if model_dir is not None:
            detector.attach_models(model_dir)
        detectors.append(detector)
    return detectors, wanted


def build_from_settings(settings: Any) -> tuple[list[Detector], frozenset[str]]:
    """:func:`build_detectors` from a :class:`~mcpsift.settings.Settings` (what every runner calls)."""
    det = settings.detectors
    return build_detectors(
        det.enabled,
        det.disabled,
        det.thresholds,
        det.tenant_thresholds,
        model_dir=Path(settings.data_dir) / "models",
    )
