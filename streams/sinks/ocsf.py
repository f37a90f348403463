"""The ``ocsf`` output: each alert as an OCSF 1.8.0 Detection Finding
(class_uid 2004, category Findings, activity Create), POSTed to ``url`` (one
finding per request) or written as JSON lines to ``path`` (rotated like the
``file`` output).

What maps where (:func:`detection_finding`): ``time`` and
``finding_info.created_time`` are the alert's time in ms since the epoch;
severity low/medium/high/critical -> ``severity_id`` 2/3/4/5; ``finding_info``
holds the alert id (``uid``, also ``metadata.uid``), title, description, the
rule (``types`` and ``analytic``, type Rule), the evidence event ids
(``related_events``) and the MITRE ids (``attacks``: ATT&CK and ATLAS
techniques, sub-techniques and tactics); the principal is ``actor.user.uid``,
the session ``actor.session.uid``, the MCP server the one entry of
``resources``; the score (0..1) becomes ``risk_score`` and
``confidence_score`` (0..100); tenant, client id, token fingerprint, detector
(and any attack tag that is not a MITRE id) go to ``unmapped``. Text is never
truncated.

Every finding is checked with :func:`validate_finding` before it is sent; one
that lacks a required attribute is ``failed`` with the problem, not sent.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import orjson
from pydantic import PrivateAttr, SecretStr, model_validator

from mcpsift import __version__
from mcpsift.alerts import Alert

from .file import RotationOptions, json_line, write_outcomes
from .http import USER_AGENT, HeaderMap, HttpUrl, JsonPostOutput, redact_url
from .outputs import Outcome, OutputConfig, config_error, config_secret, register_output

__all__ = ["OCSF_VERSION", "OcsfConfig", "OcsfOutput", "detection_finding", "validate_finding"]

OCSF_VERSION = "1.8.0"
CLASS_UID = 2004  # Detection Finding
CATEGORY_UID = 2  # Findings
ACTIVITY_CREATE = 1
SEVERITY_IDS = {"low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_CAPTIONS = {2: "Low", 3: "Medium", 4: "High", 5: "Critical"}
#: base_event severity_id enum: Unknown .. Fatal, Other
_SEVERITY_ENUM = frozenset({0, 1, 2, 3, 4, 5, 6, 99})

_TECHNIQUE = re.compile(r"^(?P<technique>(?:AML\.)?T\d{4})(?P<sub>\.\d{3})?$")
_TACTIC = re.compile(r"^(?:AML\.)?TA\d{4}$")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_MS = _dt.timedelta(milliseconds=1)


def _attack(tag: str) -> Optional[dict[str, Any]]:
    """The OCSF attack object for a MITRE ATT&CK/ATLAS id, or None for another tag."""
    if _TACTIC.match(tag):
        return {"tactic": {"uid": tag}}
    match = _TECHNIQUE.match(tag)
    if match is None:
        return None
    attack: dict[str, Any] = {"technique": {"uid": match["technique"]}}
    if match["sub"]:
        attack["sub_technique"] = {"uid": tag}
    return attack


def detection_finding(alert: Alert) -> dict[str, Any]:
    """``alert`` as an OCSF 1.8.0 Detection Finding (a JSON-ready dict)."""
    time_ms = (alert.time - _EPOCH) // _MS
    severity_id = SEVERITY_IDS[alert.severity]
    score = round(alert.score * 100)
    attacks, other_tags = [], []
    for tag in alert.attack:
        attack = _attack(tag)
        if attack is None:
            other_tags.append(tag)
        else:
            attacks.append(attack)
    finding_info: dict[str, Any] = {
        "uid": alert.alert_id,
        "title": alert.title,
        "desc": alert.description,
        "types": [alert.rule_id],
        "analytic": {"uid": alert.rule_id, "name": alert.rule_id, "type_id": 1, "type": "Rule"},
        "created_time": time_ms,
        "related_events": [{"uid": event_id} for event_id in alert.event_ids],
    }
    if attacks:
        finding_info["attacks"] = attacks
    finding: dict[str, Any] = {
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": SEVERITY_CAPTIONS[severity_id],
        "status_id": 1,
        "status": "New",
        "is_alert": True,
        "time": time_ms,
        "message": alert.title,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": alert.alert_id,
            "product": {"name": "mcpsift", "vendor_name": "mcpsift", "version": __version__},
        },
        "finding_info": finding_info,
        "risk_score": score,
        "confidence_score": score,
    }
    actor = {}
    if alert.principal_subject is not None:
        actor["user"] = {"uid": alert.principal_subject}
    if alert.session_id is not None:
        actor["session"] = {"uid": alert.session_id}
    if actor:
        finding["actor"] = actor
    if alert.server_resource is not None:
        finding["resources"] = [{"uid": alert.server_resource, "name": alert.server_resource, "type": "MCP server"}]
    unmapped: dict[str, Any] = {"tenant": alert.tenant}
    for key in ("client_id", "token_fingerprint", "detector"):
        value = getattr(alert, key)
        if value is not None:
            unmapped[key] = value
    if other_tags:
        unmapped["attack"] = other_tags
    finding["unmapped"] = unmapped
    return finding


#: the attributes OCSF 1.8.0 requires of a Detection Finding and of its required
#: objects, with their JSON types, parents before children; plus
#: finding_info.title, only recommended by OCSF but what every SIEM shows
_REQUIRED: tuple[tuple[str, type], ...] = (
    ("activity_id", int),
    ("category_uid", int),
    ("class_uid", int),
    ("type_uid", int),
    ("severity_id", int),
    ("time", int),
    ("metadata", dict),
    ("metadata.product", dict),
    ("metadata.version", str),
    ("finding_info", dict),
    ("finding_info.uid", str),
    ("finding_info.title", str),
)
_TYPE_NAMES = {int: "an integer", str: "a non-empty string", dict: "an object"}


def validate_finding(finding: Mapping[str, Any]) -> list[str]:
    """The problems that make ``finding`` an invalid Detection Finding (empty when it is valid)."""
    problems: list[str] = []
    bad: set[str] = set()
    for path, kind in _REQUIRED:
        parent, _, key = path.rpartition(".")
        if parent in bad:
            continue
        container: Any = finding
        for part in parent.split(".") if parent else ():
            container = container[part]
        if key not in container or container[key] is None:
            problems.append(f"{path} is missing")
        else:
            value = container[key]
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if kind is str:
                ok = ok and bool(value.strip())
            if ok:
                continue
            problems.append(f"{path} must be {_TYPE_NAMES[kind]}, not {value!r:.40}")
        bad.add(path)
    if problems:
        return problems
    if finding["class_uid"] != CLASS_UID or finding["category_uid"] != CATEGORY_UID:
        problems.append(f"class_uid/category_uid must be {CLASS_UID}/{CATEGORY_UID} (Detection Finding)")
    if finding["type_uid"] != finding["class_uid"] * 100 + finding["activity_id"]:
        problems.append("type_uid must be class_uid * 100 + activity_id")
    if finding["severity_id"] not in _SEVERITY_ENUM:
        problems.append(f"severity_id {finding['severity_id']} is not an OCSF severity")
    return problems


class OcsfConfig(OutputConfig, RotationOptions):
    type: Literal["ocsf"]
    #: POST each finding here ...
    url: Optional[HttpUrl] = None
    #: ... or append it to this JSONL file (rotated: max_bytes, backups, fsync)
    path: Optional[Path] = None
    #: extra request headers (url mode)
    headers: HeaderMap = {}
    #: sent as "Authorization: Bearer <token>" (url mode)
    token: Optional[SecretStr] = None
    token_file: Optional[Path] = None
    token_env: Optional[str] = None

    _authorization: Optional[str] = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _target(self) -> "OcsfConfig":
        if (self.url is None) == (self.path is None):
            raise config_error("give exactly one of url (POST each finding) or path (write JSON lines)")
        token = config_secret(self.token, self.token_file, self.token_env, "token")
        token = token.strip() if token is not None else None
        if self.path is not None and (token is not None or self.headers):
            raise config_error("token and headers are for url mode; with path, leave them out")
        if token is not None:
            if not token or any(c in token for c in "\r\n\x00"):
                raise config_error("token: empty, or holds CR, LF or NUL")
            if "authorization" in self.headers:
                raise config_error("give the token either as token or as an Authorization header, not both")
            self._authorization = f"Bearer {token}"
        return self

    def request_headers(self) -> dict[str, str]:
        """The headers of every request (holds the token: never log them)."""
        headers = {"user-agent": USER_AGENT, **self.headers, "content-type": "application/json"}
        if self._authorization is not None:
            headers["authorization"] = self._authorization
        return headers


@register_output
class OcsfOutput(JsonPostOutput):
    """OCSF Detection Findings, over HTTP or to a file."""

    type = "ocsf"
    Config = OcsfConfig

    def __init__(self, config: OcsfConfig):
        super().__init__(config)
        self.config: OcsfConfig = config
        self._writer = config.writer(config.path) if config.path is not None else None
        self._headers = config.request_headers()

    async def open(self) -> None:
        if self._writer is None:
            await super().open()

    def headers_for(self, doc_id: str, body: bytes) -> Mapping[str, str]:
        return self._headers

    async def send(self, alerts: Sequence[Alert]) -> list[Outcome]:
        outcomes: list[Optional[Outcome]] = [None] * len(alerts)
        ready: list[int] = []
        findings = []
        for index, alert in enumerate(alerts):
            finding = detection_finding(alert)
            problems = validate_finding(finding)
            if problems:
                outcomes[index] = Outcome("failed", "invalid OCSF Detection Finding: " + "; ".join(problems))
            else:
                ready.append(index)
                findings.append(finding)
        if self._writer is not None:
            sent = await write_outcomes(self._writer, [json_line(f) for f in findings])
        else:
            assert self.config.url is not None
            documents = [(f["finding_info"]["uid"], orjson.dumps(f)) for f in findings]
            sent = await self.post_each(self.config.url, documents)
        for index, outcome in zip(ready, sent):
            outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]  # every slot is filled

    async def close(self) -> None:
        await super().close()
        if self._writer is not None:
            self._writer.close()

    def describe(self) -> str:
        if self._writer is not None:
            return f"ocsf file {self._writer.path}"
        assert self.config.url is not None
        return f"ocsf {redact_url(self.config.url)}"
