"""``GET /v1/audit``: who called this API for what (admin of every tenant)."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Any, Optional

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from mcpsift.store.queries import QueryError, checked_time

from ..deps import AdminDep, StoreDep

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", summary="The API's own access log, newest first")
async def api_audit(
    principal: AdminDep,
    store: StoreDep,
    subject: Optional[str] = Query(None, max_length=256, description="only this caller"),
    since: Optional[_dt.datetime] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    if principal.scope.tenants is not None:  # callers of every tenant are in it
        raise HTTPException(403, "the access log needs an admin of every tenant")
    if since is not None:
        try:
            since = checked_time("since", since)
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
    return await run_in_threadpool(store.list_api_audit, subject=subject, since=since, limit=limit)
