"""Detectors: the Detector interface, one module per detection family, the registry."""

from .base import Detector, Params
from .registry import DETECTOR_CLASSES, RULES, UnknownDetector, build_detectors, build_from_settings, rule_ids

__all__ = ["Detector", "Params", "DETECTOR_CLASSES", "RULES", "UnknownDetector", "build_detectors", "build_from_settings", "rule_ids"]
