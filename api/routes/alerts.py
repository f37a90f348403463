"""Alerts: list and filter, one alert with its evidence and history, and triage (PATCH).

Triage is event-sourced (``alert_changes``): a PATCH appends one change record
naming the caller; the alert's status and assignee are derived from them. Every
read and write is scoped to the caller's tenants by the store.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Body, HTTPException, Path, Query
from fastapi.concurrency import run_in_threadpool

from mcpsift.store import queries, triage

from ..deps import AdminDep, AnalystDep, QueryLimitsDep, StoreDep, ViewerDep
from ..models import AlertDetail, AlertPublic, AlertUpdate, Page
from ..querying import not_found, run_query

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["alerts"])

_V = Annotated[Optional[str], Query(max_length=1024)]


@router.get(
    "/alerts",
    response_model=Page[AlertPublic],
    summary="Alerts, newest first, with their triage state",
    description="Filter by rule, severity, status, entity (principal_subject, session_id, token_fingerprint, "
    "client_id, server_resource) and time (alert time; no default range: the alert table is small). "
    "Page with `cursor`.",
)
async def list_alerts(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    tenant: _V = None,
    rule_id: _V = None,
    severity: Optional[Literal["low", "medium", "high", "critical"]] = None,
    status: Optional[Literal["open", "acknowledged", "resolved", "false_positive"]] = None,
    principal_subject: _V = None,
    session_id: _V = None,
    token_fingerprint: _V = None,
    client_id: _V = None,
    server_resource: _V = None,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[Optional[str], Query(max_length=4096)] = None,
) -> Page[AlertPublic]:
    filters = queries.AlertFilters(
        tenant=tenant, rule_id=rule_id, severity=severity, status=status, principal_subject=principal_subject,
        session_id=session_id, token_fingerprint=token_fingerprint, client_id=client_id,
        server_resource=server_resource, since=since, until=until,
    )
    rows, next_cursor = await run_query(
        queries.list_alerts, store, principal.scope, filters, limit=limit, cursor=cursor, limits=limits
    )
    return Page[AlertPublic](items=[AlertPublic.of(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertDetail,
    summary="One alert with its evidence events inline and its change history",
    responses={404: {"description": "no such alert in your tenants"}},
)
async def get_alert(
    principal: ViewerDep, store: StoreDep, alert_id: Annotated[str, Path(max_length=1024)]
) -> AlertDetail:
    row = await run_query(queries.get_alert, store, principal.scope, alert_id)
    if row is None:
        raise not_found("such alert")
    return AlertDetail.of(row)


@router.patch(
    "/alerts/{alert_id}",
    response_model=AlertDetail,
    summary="Triage an alert: status, assignee, a note (analyst role)",
    description="Stored as a change record (who: you, when: now, what: the fields you send); fields you leave "
    "out stay as they are; `assignee: \"\"` unassigns.",
    responses={404: {"description": "no such alert in your tenants"}, 403: {"description": "needs the analyst role"}},
)
async def update_alert(
    principal: AnalystDep,
    store: StoreDep,
    alert_id: Annotated[str, Path(max_length=1024)],
    update: Annotated[AlertUpdate, Body(openapi_examples={
        "acknowledge": {"summary": "take it", "value": {"status": "acknowledged", "assignee": "bob@acme.example"}},
        "resolve": {"summary": "close with a note", "value": {"status": "resolved", "note": "token revoked"}},
        "false positive": {"summary": "not an attack", "value": {"status": "false_positive", "note": "CI runner"}},
    })],
) -> AlertDetail:
    sent = update.model_dump(include=update.model_fields_set)
    if not sent:
        raise HTTPException(400, "send at least one of status, assignee or note")
    if any(value is None for value in sent.values()):
        raise HTTPException(400, "status and note cannot be null; leave a field out to keep it (assignee \"\" unassigns)")

    def write():  # type: ignore[no-untyped-def]
        try:
            triage.record_change(store, principal.scope, alert_id, actor=principal.subject, **sent)
        except triage.AlertNotFound:
            return None
        return queries.get_alert(store, principal.scope, alert_id)

    row = await run_query(write)
    if row is None:
        raise not_found("such alert")
    return AlertDetail.of(row)


@router.get(
    "/dead-letters",
    summary="Latest rejected inputs with the reason (all-tenant admin only)",
    description="Rejected inputs are not attributed to a tenant (they failed validation), so only an admin "
    "whose scope is every tenant may read them.",
)
async def list_dead_letters(
    principal: AdminDep, store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict]:
    if principal.scope.tenants is not None:
        raise HTTPException(403, "dead letters belong to no tenant: this needs an admin whose scope is all tenants")
    return await run_in_threadpool(store.list_dead_letters, limit)
