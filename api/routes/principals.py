"""``GET /v1/principals/{subject}/timeline``: everything one principal did, in order."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Optional

from fastapi import APIRouter, Path, Query

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..models import EventPublic, Page
from ..querying import run_query

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["timelines"])


@router.get(
    "/principals/{subject}/timeline",
    response_model=Page[EventPublic],
    summary="A principal's events in event-time order",
    description="The range defaults to the last 31 days. An unknown subject is an empty page.",
)
async def principal_timeline(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    subject: Annotated[str, Path(max_length=1024)],
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    type: Annotated[Optional[str], Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    cursor: Annotated[Optional[str], Query(max_length=4096)] = None,
) -> Page[EventPublic]:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits, default_span=limits.lookup_span)
        return queries.search_events(
            store, principal.scope, queries.EventFilters(principal_subject=subject, type=type), window,
            limit=limit, cursor=cursor, descending=False, limits=limits,
        )

    rows, next_cursor = await run_query(read)
    return Page[EventPublic](items=[EventPublic.of(r) for r in rows], next_cursor=next_cursor)
