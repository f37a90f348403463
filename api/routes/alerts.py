"""``GET /v1/alerts``: the latest alerts (the full incident-response API is its own issue)."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Optional

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from mcpsift.alerts import Alert

from ..deps import StoreDep

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["alerts"])


@router.get("/alerts", response_model=list[Alert], summary="Latest alerts, newest first")
async def list_alerts(
    store: StoreDep,
    tenant: Optional[str] = None,
    rule_id: Optional[str] = None,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[Alert]:
    return await run_in_threadpool(
        store.list_alerts, tenant=tenant, rule_id=rule_id, since=since, until=until, limit=limit
    )


@router.get("/dead-letters", summary="Latest rejected inputs with the reason")
async def list_dead_letters(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> list[dict]:
    return await run_in_threadpool(store.list_dead_letters, limit)
