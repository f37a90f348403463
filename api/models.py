"""Request and response models of the query API, separate from storage rows.

Routers build these from the dicts :mod:`mcpsift.store.queries` returns, by
naming fields; a new column in a table never reaches a response by accident.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Generic, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Page",
    "EventPublic",
    "EventDetail",
    "SessionTimeline",
    "SessionSummary",
    "TokenServer",
    "TokenVerdict",
    "TokenPublic",
    "ClientRegistration",
    "ClientPrincipal",
    "ClientServer",
    "ClientPublic",
    "ClientInventoryItem",
    "ServerInventoryItem",
    "ToolVersion",
    "ToolInventoryItem",
    "StatsSeries",
    "StatsPoint",
    "StatsPublic",
    "AlertPublic",
    "AlertChange",
    "AlertNote",
    "AlertDetail",
    "AlertUpdate",
    "AlertStatus",
]

T = TypeVar("T")
AlertStatus = Literal["open", "acknowledged", "resolved", "false_positive"]

_EXAMPLE_TIME = "2026-11-20T09:00:07.250Z"
_EXAMPLE_EVENT = {
    "event_id": "01936f2e-5a10-7c3e-9a1b-000000000004",
    "time": _EXAMPLE_TIME,
    "type": "auth.token",
    "tenant": "acme",
    "source_kind": "server",
    "source_name": "crm-mcp",
    "server_name": "crm-mcp",
    "server_resource": "https://mcp.acme.example/crm",
    "principal_subject": "alice@acme.example",
    "principal_issuer": "https://id.acme.example",
    "client_id": "https://assistant.example.com/oauth/client.json",
    "principal_tenant": None,
    "token_fingerprint": "sha256:5d41402abc4b2a76b9719d911017c592",
    "token_jti": None,
    "session_id": None,
    "client_ip": "203.0.113.24",
    "user_agent": "assistant-desktop/5.1",
    "outcome_status": "ok",
    "outcome_reason": None,
    "tool_name": None,
    "received_at": "2026-11-20T09:00:07.400Z",
}


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` back as ``cursor`` for the next (null: the last page)."""

    items: list[T]
    next_cursor: Optional[str] = Field(None, description="opaque; send it back as ?cursor= for the next page")


class EventPublic(BaseModel):
    """A stored event's searchable fields (empty fields are null)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_EVENT]})

    event_id: str
    time: _dt.datetime
    type: str
    tenant: str
    source_kind: str
    source_name: str
    server_name: Optional[str] = None
    server_resource: Optional[str] = None
    principal_subject: Optional[str] = None
    principal_issuer: Optional[str] = None
    client_id: Optional[str] = None
    principal_tenant: Optional[str] = None
    token_fingerprint: Optional[str] = None
    token_jti: Optional[str] = None
    session_id: Optional[str] = None
    client_ip: Optional[str] = None
    user_agent: Optional[str] = None
    outcome_status: Optional[str] = None
    outcome_reason: Optional[str] = None
    tool_name: Optional[str] = None
    received_at: _dt.datetime

    @classmethod
    def of(cls, row: dict[str, Any]) -> "EventPublic":
        return cls(**{name: (row[name] if row[name] != "" else None) for name in cls.model_fields})


class EventDetail(EventPublic):
    """An event with the full record as stored (docs/events.md)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_EXAMPLE_EVENT, "event": {"schema": "mcpsift.event/1", "type": "auth.token"}}]}
    )

    event: Optional[dict[str, Any]] = Field(None, description="the stored event record")

    @classmethod
    def of(cls, row: dict[str, Any]) -> "EventDetail":
        base = EventPublic.of(row).model_dump()
        return cls(**base, event=row.get("payload"))


class SessionSummary(BaseModel):
    session_id: str
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int
    tenants: list[str]
    principals: list[str]
    client_ids: list[str]
    token_fingerprints: list[str]
    servers: list[str]
    tools: list[str]
    tool_calls: int
    denied: int
    errors: int
    types: dict[str, int]
    alert_ids: list[str]


class SessionTimeline(BaseModel):
    """A session: its summary and one page of its events in event-time order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "summary": {
                        "session_id": "mcp-session-7a1f", "first_seen": _EXAMPLE_TIME, "last_seen": _EXAMPLE_TIME,
                        "events": 1, "tenants": ["acme"], "principals": ["alice@acme.example"], "client_ids": [],
                        "token_fingerprints": [], "servers": ["https://mcp.acme.example/crm"], "tools": [],
                        "tool_calls": 0, "denied": 0, "errors": 0, "types": {"mcp.session_start": 1}, "alert_ids": [],
                    },
                    "events": [_EXAMPLE_EVENT],
                    "next_cursor": None,
                }
            ]
        }
    )

    summary: SessionSummary
    events: list[EventPublic]
    next_cursor: Optional[str] = None


class TokenVerdict(BaseModel):
    status: Optional[str] = Field(None, description="outcome status (ok, denied, error) or null")
    reason: Optional[str] = None
    count: int


class TokenServer(BaseModel):
    tenant: str
    server_name: Optional[str] = None
    server_resource: Optional[str] = None
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int
    verdicts: list[TokenVerdict]


class TokenPublic(BaseModel):
    """Where a token (by fingerprint) was presented, with what verdicts, by whom."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token_fingerprint": "sha256:5d41402abc4b2a76b9719d911017c592", "first_seen": _EXAMPLE_TIME,
                    "last_seen": _EXAMPLE_TIME, "events": 2, "tenants": ["acme"], "principals": ["alice@acme.example"],
                    "client_ids": [], "sessions": 0, "issued": 1, "revoked": False, "jtis": [],
                    "servers": [{"tenant": "acme", "server_name": "crm-mcp", "server_resource": "https://mcp.acme.example/crm",
                                 "first_seen": _EXAMPLE_TIME, "last_seen": _EXAMPLE_TIME, "events": 1,
                                 "verdicts": [{"status": "ok", "reason": None, "count": 1}]}],
                }
            ]
        }
    )

    token_fingerprint: str
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int
    tenants: list[str]
    principals: list[str]
    client_ids: list[str]
    sessions: int
    issued: int
    revoked: bool
    jtis: list[str]
    servers: list[TokenServer]


class ClientRegistration(BaseModel):
    time: _dt.datetime
    tenant: str
    type: str = Field(description="auth.client_registered (DCR) or auth.client_metadata (CIMD fetch)")
    event_id: str
    source_name: Optional[str] = None
    client_name: Optional[str] = None
    redirect_uris: list[str]
    document_hash: Optional[str] = None
    software_id: Optional[str] = None
    fetch_status: Optional[int] = None


class ClientPrincipal(BaseModel):
    tenant: str
    subject: str
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int


class ClientServer(BaseModel):
    tenant: str
    server_name: Optional[str] = None
    server_resource: Optional[str] = None
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int


class ClientPublic(BaseModel):
    """A client: its CIMD/DCR history, the principals who used it, the servers it reached."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "client_id": "https://assistant.example.com/oauth/client.json", "first_seen": _EXAMPLE_TIME,
                    "last_seen": _EXAMPLE_TIME, "events": 3, "tenants": ["acme"],
                    "registrations": [{"time": _EXAMPLE_TIME, "tenant": "acme", "type": "auth.client_metadata",
                                       "event_id": "01936f2e-5a10-7c3e-9a1b-000000000002", "source_name": "id.acme.example",
                                       "client_name": "Assistant", "redirect_uris": ["https://assistant.example.com/oauth/callback"],
                                       "document_hash": "sha256:3b90b0ac", "software_id": None, "fetch_status": 200}],
                    "principals": [{"tenant": "acme", "subject": "alice@acme.example", "first_seen": _EXAMPLE_TIME,
                                    "last_seen": _EXAMPLE_TIME, "events": 2}],
                    "servers": [],
                }
            ]
        }
    )

    client_id: str
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int
    tenants: list[str]
    registrations: list[ClientRegistration]
    principals: list[ClientPrincipal]
    servers: list[ClientServer]


class ClientInventoryItem(BaseModel):
    tenant: str
    client_id: str
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int
    principals: int
    servers: int
    dcr_registrations: int
    cimd_fetches: int


class ServerInventoryItem(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"tenant": "acme", "server_resource": "https://mcp.acme.example/crm", "server_name": "crm-mcp",
                          "first_seen": _EXAMPLE_TIME, "last_seen": _EXAMPLE_TIME, "events": 120, "tool_calls": 80,
                          "tools": 6, "principals": 12, "denied": 3}]
        }
    )

    tenant: str
    server_resource: Optional[str] = None
    server_name: Optional[str] = None
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    events: int
    tool_calls: int
    tools: int
    principals: int
    denied: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> "ServerInventoryItem":
        return cls(**{k: (row[k] if row[k] != "" else None) for k in cls.model_fields})


class ToolVersion(BaseModel):
    definition_hash: Optional[str] = None
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    sightings: int = Field(description="tools/list results that carried this definition")


class ToolInventoryItem(BaseModel):
    """A tool of a server and the history of its definition hash (drift view)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"tenant": "acme", "server_resource": "https://mcp.acme.example/files", "server_name": "files",
                          "name": "read_file", "current_hash": "sha256:89e6", "drifted": True,
                          "first_seen": _EXAMPLE_TIME, "last_seen": _EXAMPLE_TIME,
                          "history": [{"definition_hash": "sha256:745e", "first_seen": _EXAMPLE_TIME,
                                       "last_seen": _EXAMPLE_TIME, "sightings": 14},
                                      {"definition_hash": "sha256:89e6", "first_seen": _EXAMPLE_TIME,
                                       "last_seen": _EXAMPLE_TIME, "sightings": 5}]}]
        }
    )

    tenant: str
    server_resource: Optional[str] = None
    server_name: Optional[str] = None
    name: str
    current_hash: Optional[str] = None
    drifted: bool
    first_seen: _dt.datetime
    last_seen: _dt.datetime
    history: list[ToolVersion]


class StatsPoint(BaseModel):
    t: _dt.datetime = Field(description="start of the bucket")
    count: int


class StatsSeries(BaseModel):
    key: str
    total: int
    points: list[StatsPoint]


class StatsPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"by": "severity", "bucket": "hour", "since": "2026-11-20T00:00:00Z", "until": "2026-11-21T00:00:00Z",
                          "total": 3, "series": [{"key": "high", "total": 3,
                                                  "points": [{"t": "2026-11-20T09:00:00Z", "count": 3}]}]}]
        }
    )

    by: str
    bucket: str
    since: _dt.datetime
    until: _dt.datetime
    total: int
    series: list[StatsSeries]


_EXAMPLE_ALERT = {
    "alert_id": "9b2f4c1d0e6a7b8c9d0e1f2a3b4c5d6e",
    "rule_id": "auth.token_reuse_across_audiences",
    "severity": "high",
    "time": _EXAMPLE_TIME,
    "tenant": "acme",
    "principal_subject": "alice@acme.example",
    "client_id": None,
    "session_id": None,
    "token_fingerprint": "sha256:5d41402abc4b2a76b9719d911017c592",
    "server_resource": "https://mcp.acme.example/billing",
    "event_ids": ["01936f2e-5a10-7c3e-9a1b-000000000004"],
    "title": "Token presented to a second resource",
    "description": "A token issued for https://mcp.acme.example/crm was presented to https://mcp.acme.example/billing.",
    "score": 1.0,
    "attack": ["T1550.001"],
    "detector": "TokenReuse",
    "created_at": _EXAMPLE_TIME,
    "status": "acknowledged",
    "assignee": "bob@acme.example",
    "updated_at": "2026-11-20T09:12:00Z",
    "changes": 1,
}


class AlertPublic(BaseModel):
    """An alert and its current triage state (derived from its change records)."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_ALERT]})

    alert_id: str
    rule_id: str
    severity: str
    time: _dt.datetime
    tenant: str
    principal_subject: Optional[str] = None
    client_id: Optional[str] = None
    session_id: Optional[str] = None
    token_fingerprint: Optional[str] = None
    server_resource: Optional[str] = None
    event_ids: list[str]
    title: str
    description: str
    score: float
    attack: list[str]
    detector: Optional[str] = None
    created_at: _dt.datetime
    status: AlertStatus
    assignee: Optional[str] = None
    updated_at: Optional[_dt.datetime] = Field(None, description="when its triage state last changed")
    changes: int = Field(0, description="how many change records it has")

    @classmethod
    def of(cls, row: dict[str, Any]) -> "AlertPublic":
        return cls(**{k: row[k] for k in AlertPublic.model_fields})


class AlertChange(BaseModel):
    """One triage change (null fields were left as they were)."""

    changed_at: _dt.datetime
    actor: str
    status: Optional[AlertStatus] = None
    assignee: Optional[str] = None
    note: Optional[str] = None


class AlertNote(BaseModel):
    at: _dt.datetime
    actor: str
    note: str


class AlertDetail(AlertPublic):
    """An alert with its evidence events inline and its change history."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {**_EXAMPLE_ALERT, "evidence": [{**_EXAMPLE_EVENT, "event": {"schema": "mcpsift.event/1"}}],
                 "history": [{"changed_at": "2026-11-20T09:12:00Z", "actor": "bob@acme.example",
                              "status": "acknowledged", "assignee": "bob@acme.example", "note": "on it"}],
                 "notes": [{"at": "2026-11-20T09:12:00Z", "actor": "bob@acme.example", "note": "on it"}]}
            ]
        }
    )

    evidence: list[EventDetail]
    history: list[AlertChange]
    notes: list[AlertNote]

    @classmethod
    def of(cls, row: dict[str, Any]) -> "AlertDetail":
        return cls(
            **AlertPublic.of(row).model_dump(),
            evidence=[EventDetail.of(e) for e in row["evidence"]],
            history=[AlertChange(**{k: c[k] for k in AlertChange.model_fields}) for c in row["history"]],
            notes=[AlertNote(**n) for n in row["notes"]],
        )


class AlertUpdate(BaseModel):
    """A triage change: any of status, assignee (``""`` unassigns) and a note. Fields left out stay as they are."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"status": "acknowledged", "assignee": "bob@acme.example", "note": "looking into it"}]
        },
    )

    status: Optional[AlertStatus] = None
    assignee: Optional[str] = Field(None, max_length=200)
    note: Optional[str] = Field(None, min_length=1, max_length=4000)
