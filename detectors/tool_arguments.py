"""Tool-argument content detections (spec/detections.md, "Tools").

Being filled in by the detection-catalogue work (issue 3).
"""

from __future__ import annotations

__all__ = ["DETECTORS"]

DETECTORS: tuple[type, ...] = ()
