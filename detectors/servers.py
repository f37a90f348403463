"""Server detections (spec/detections.md, "Servers").

Being filled in by the detection-catalogue work (issue 3).
"""

from __future__ import annotations

__all__ = ["DETECTORS"]

DETECTORS: tuple[type, ...] = ()
