"""Client and identity detections (spec/detections.md, "Authentication and identity").

Being filled in by the detection-catalogue work (issue 3).
"""

from __future__ import annotations

__all__ = ["DETECTORS"]

DETECTORS: tuple[type, ...] = ()
