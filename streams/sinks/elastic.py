"""Elasticsearch / Elastic Security output (``type: elastic``): ECS documents via ``_bulk``.

Each batch is one ``POST <url>/_bulk`` (``Content-Type: application/x-ndjson``;
``?pipeline=`` when set; ``filter_path`` keeps the reply to what is read) with
two lines per alert, each ending in a newline::

    {"create":{"_index":"mcpsift-alerts","_id":"<alert_id>"}}
    {<the ECS document>}

``create`` with ``_id`` = ``alert_id`` makes a redelivery idempotent: the item
answers 409 (``version_conflict_engine_exception``), which counts as delivered.
It also works with a data stream as ``index``. JSON escapes every control
character, so a document is always one line; text is never cut (Elasticsearch
keeps it whole in ``_source``; ECS templates skip indexing keyword values over
1,024 characters).

Outcome per alert, from the reply's ``items`` (in request order): 200/201 and
409 delivered; 429 retry and pause the output (``Retry-After`` of the reply);
5xx retry; any other status failed with the item's ``error.type: reason``
(mapping and parse errors will not go away). A non-2xx reply for the whole
request reads as :func:`outcome_of_status`; a reply without one item per alert
retries the batch.

ECS mapping (ECS 8.11): ``@timestamp`` = alert time; ``event.kind`` "alert";
``event.category`` by rule family (the part of ``rule_id`` before the first
dot, see :data:`CATEGORIES`), ``event.type`` ["info"] (allowed for each of those
categories); ``event.severity`` low 21 / medium 47 / high 73 / critical 99 (the
Elastic detection-rule scale); ``event.risk_score`` = score × 100;
``event.created`` = when the document was made; ``rule.id``/``rule.name`` =
rule_id, ``rule.description`` = title; ``message`` = description;
``user.id``/``user.name`` = principal_subject (an OAuth subject: an id, often
also the login); ``url.full`` = server_resource (the server's canonical
resource URI, RFC 8707: the URL clients call); ``threat.*`` from the ATT&CK ids
in ``attack`` (``T1550.001`` gives technique ``T1550`` and subtechnique
``T1550.001``), or from the ATLAS ids (``AML.T0051``, framework "MITRE ATLAS")
when there are no ATT&CK ids, since ECS holds one framework per document;
``labels.tenant``; and ``mcpsift.*`` for client_id, session_id,
token_fingerprint, event_ids, detector and every ``attack`` id as given.
No ``source.ip``: alerts do not carry a client address.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal, Optional, Sequence
from urllib.parse import urlencode

import orjson
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from mcpsift.alerts import Alert

from .http import USER_AGENT, HttpOutput, HttpUrl, outcome_of_status, redact_url, retry_after_s
from .outputs import Outcome, OutputConfig, alert_document, config_error, config_secret, register_output

__all__ = ["CATEGORIES", "ECS_VERSION", "SEVERITY_NUMBERS", "ElasticConfig", "ElasticOutput", "ecs_document"]

ECS_VERSION = "8.11.0"

#: event.severity per alert severity: Elastic detection rules' scale
SEVERITY_NUMBERS = {"low": 21, "medium": 47, "high": 73, "critical": 99}

#: rule family -> event.category; every other family (tool, flow, volume ...)
#: gets only "intrusion_detection"
CATEGORIES: dict[str, list[str]] = {
    "auth": ["authentication", "intrusion_detection"],
    "token": ["authentication", "intrusion_detection"],
    "client": ["authentication", "intrusion_detection"],
    "session": ["session", "intrusion_detection"],
    "server": ["network", "intrusion_detection"],
}
DEFAULT_CATEGORY = ["intrusion_detection"]

#: (threat.framework, technique id pattern: group 1 is the parent technique)
FRAMEWORKS = (
    ("MITRE ATT&CK", re.compile(r"(T\d{4})(?:\.\d{3})?")),
    ("MITRE ATLAS", re.compile(r"(AML\.T\d{4})(?:\.\d{3})?")),
)

#: characters Elasticsearch refuses in an index name
_INDEX_FORBIDDEN = set(' \\/*?"<>|,#:')


class ElasticConfig(OutputConfig):
    """Options of ``type: elastic``."""

    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["elastic"]
    #: Elasticsearch URL, e.g. https://es.example.com:9200
    url: HttpUrl
    #: index, alias or data stream written to
    index: str = "mcpsift-alerts"
    #: ingest pipeline to run the documents through
    pipeline: Optional[str] = Field(default=None, min_length=1)
    #: API key, the base64 "id:key" form Kibana shows ("encoded"); or username + password
    api_key: Optional[SecretStr] = None
    api_key_file: Optional[Path] = None
    api_key_env: Optional[str] = None
    username: Optional[str] = Field(default=None, min_length=1)
    password: Optional[SecretStr] = None
    password_file: Optional[Path] = None
    password_env: Optional[str] = None

    _authorization: Optional[str] = PrivateAttr(default=None)

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        forbidden = _INDEX_FORBIDDEN.intersection(value)
        if not value or value != value.lower() or forbidden or value[0] in "-_+" or value in (".", ".."):
            raise config_error(
                f"{value!r} is not a valid index name: lowercase, not starting with - _ +, "
                "none of the characters space \\ / * ? \" < > | , # :"
            )
        return value

    @model_validator(mode="after")
    def _resolve_auth(self) -> "ElasticConfig":
        api_key = config_secret(self.api_key, self.api_key_file, self.api_key_env, "api_key")
        password = config_secret(self.password, self.password_file, self.password_env, "password")
        if api_key is not None and (self.username is not None or password is not None):
            raise config_error("give either api_key or username + password, not both")
        if (self.username is None) != (password is None):
            raise config_error("username and password go together: give both or neither")
        if api_key is not None:
            api_key = api_key.strip()
            if not (api_key and api_key.isascii() and api_key.isprintable()):
                # checked here: an HTTP client's "illegal header" error would quote it
                raise config_error("api_key: must be non-empty printable ASCII (no line break or control character)")
            self._authorization = f"ApiKey {api_key}"
        elif self.username is not None and password is not None:
            basic = base64.b64encode(f"{self.username}:{password}".encode("utf-8")).decode("ascii")
            self._authorization = f"Basic {basic}"
        return self

    @property
    def authorization(self) -> Optional[str]:
        """The ``Authorization`` header value, if any (never shown)."""
        return self._authorization


def _threat(attack: Sequence[str]) -> Optional[dict[str, Any]]:
    for framework, pattern in FRAMEWORKS:
        matches = [m for m in map(pattern.fullmatch, attack) if m]
        if matches:
            technique: dict[str, Any] = {"id": list(dict.fromkeys(m.group(1) for m in matches))}
            subs = [m.group(0) for m in matches if m.group(0) != m.group(1)]
            if subs:
                technique["subtechnique"] = {"id": list(dict.fromkeys(subs))}
            return {"framework": framework, "technique": technique}
    return None


def ecs_document(alert: Alert, created: str) -> dict[str, Any]:
    """The ECS document for ``alert``; ``created`` is ``event.created`` (RFC 3339)."""
    canonical = alert_document(alert)
    doc: dict[str, Any] = {
        "@timestamp": canonical["time"],
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "alert",
            "category": CATEGORIES.get(alert.rule_id.split(".", 1)[0], DEFAULT_CATEGORY),
            "type": ["info"],
            "severity": SEVERITY_NUMBERS[alert.severity],
            "risk_score": round(alert.score * 100, 2),
            "id": alert.alert_id,
            "created": created,
            "module": "mcpsift",
            "dataset": "mcpsift.alert",
        },
        "rule": {"id": alert.rule_id, "name": alert.rule_id, "description": alert.title, "ruleset": "mcpsift"},
        "message": alert.description,
    }
    if alert.principal_subject is not None:
        doc["user"] = {"id": alert.principal_subject, "name": alert.principal_subject}
    if alert.server_resource is not None:
        doc["url"] = {"full": alert.server_resource}
    threat = _threat(alert.attack)
    if threat is not None:
        doc["threat"] = threat
    doc["labels"] = {"tenant": alert.tenant}
    own = ("client_id", "session_id", "token_fingerprint", "event_ids", "detector", "attack")
    doc["mcpsift"] = {k: canonical[k] for k in own if canonical[k] not in (None, [])}
    return doc


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _item_outcome(item: Any, throttle_after: Optional[float]) -> Outcome:
    """The outcome of one ``items[]`` entry (``{"create": {"status": ..., "error": ...}}``)."""
    result = next(iter(item.values()), None) if isinstance(item, dict) and len(item) == 1 else None
    status = result.get("status") if isinstance(result, dict) else None
    if not isinstance(status, int):
        return Outcome("retry", f"unreadable bulk item: {orjson.dumps(item)[:200].decode('utf-8', 'replace')}")
    if 200 <= status < 300 or status == 409:
        return Outcome.ok()
    error = result.get("error")
    if isinstance(error, dict):
        detail = f"HTTP {status} {error.get('type', '?')}: {str(error.get('reason', ''))[:300]}"
    else:
        detail = f"HTTP {status} {str(error or '')[:300]}".rstrip()
    if status == 429:
        return Outcome("retry", detail, retry_after_s=throttle_after, throttle=True)
    if status >= 500:
        return Outcome("retry", detail)
    return Outcome("failed", detail)


@register_output
class ElasticOutput(HttpOutput):
    """Indexes alerts as ECS documents into Elasticsearch (see the module docstring)."""

    type = "elastic"
    Config = ElasticConfig
    config: ElasticConfig

    def __init__(self, config: ElasticConfig):
        super().__init__(config)
        query = {"filter_path": "errors,items.*.status,items.*.error"}
        if config.pipeline:
            query["pipeline"] = config.pipeline
        self._bulk_url = f"{config.url.rstrip('/')}/_bulk?{urlencode(query)}"
        self._headers = {"User-Agent": USER_AGENT, "Content-Type": "application/x-ndjson"}
        if config.authorization:
            self._headers["Authorization"] = config.authorization

    def bulk_body(self, alerts: Sequence[Alert]) -> bytes:
        """The NDJSON ``_bulk`` body for ``alerts``."""
        created = _now()
        lines = []
        for alert in alerts:
            lines.append(orjson.dumps({"create": {"_index": self.config.index, "_id": alert.alert_id}}))
            lines.append(orjson.dumps(ecs_document(alert, created)))
        lines.append(b"")
        return b"\n".join(lines)

    async def send(self, alerts: Sequence[Alert]) -> list[Outcome]:
        if not alerts:
            return []
        response = await self.post(self._bulk_url, self.bulk_body(alerts), self._headers)
        if isinstance(response, Outcome):
            return [response] * len(alerts)
        if not 200 <= response.status_code < 300:
            return [outcome_of_status(response.status_code, response.headers, response.text)] * len(alerts)
        try:
            items = orjson.loads(response.content).get("items")
        except (orjson.JSONDecodeError, AttributeError):
            items = None
        if not isinstance(items, list) or len(items) != len(alerts):
            got = f"{len(items)} items" if isinstance(items, list) else response.text.strip()[:200]
            return [Outcome("retry", f"unexpected _bulk reply for {len(alerts)} alerts: {got}")] * len(alerts)
        throttle_after = retry_after_s(response.headers)
        return [_item_outcome(item, throttle_after) for item in items]

    def describe(self) -> str:
        return f"elastic {redact_url(self.config.url.rstrip('/'))} index {self.config.index}"
