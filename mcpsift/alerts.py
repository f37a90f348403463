"""The alert: the one output of every detector (spec/detections.md, "Alert").

An alert is produced once, in this canonical form; SIEM outputs format it at
the edge. ``alert_id`` is deterministic (:func:`make_alert_id`): the same
detector on the same evidence yields the same id, so a replay or a redelivery
never duplicates a row or an outgoing alert.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Alert", "Severity", "SEVERITIES", "make_alert_id"]

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")


def make_alert_id(rule_id: str, *identity: object) -> str:
    """A stable id from the rule and the values that identify the case.

    ``identity`` is what makes two firings "the same alert" for that rule (for
    example the server, the tool and the new definition hash of a rug pull).
    """
    h = hashlib.sha256(rule_id.encode("utf-8"))
    for part in identity:
        h.update(b"\x1f")
        h.update(str(part).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


class Alert(BaseModel):
    """One alert; field order is the order of the JSONL that ``mcpsift detect`` writes."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str
    rule_id: str
    severity: Severity
    time: _dt.datetime
    tenant: str = "default"
    principal_subject: Optional[str] = None
    client_id: Optional[str] = None
    session_id: Optional[str] = None
    token_fingerprint: Optional[str] = None
    server_resource: Optional[str] = None
    event_ids: list[str] = Field(min_length=1)
    title: str
    description: str
    score: float = Field(default=1.0, ge=0.0, le=1.0)
    attack: list[str] = Field(default_factory=list)
    detector: Optional[str] = None
