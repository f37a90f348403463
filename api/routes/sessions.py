"""``GET /v1/sessions/{session_id}``: what one MCP session did, in order."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Optional

from fastapi import APIRouter, Path, Query

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..models import EventPublic, SessionSummary, SessionTimeline
from ..querying import not_found, run_query

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["timelines"])


@router.get(
    "/sessions/{session_id}",
    response_model=SessionTimeline,
    summary="A session's summary and its events in event-time order",
    description="The range defaults to the last 31 days. Page through the events with `cursor`.",
    responses={404: {"description": "no such session in your tenants and range"}},
)
async def session_timeline(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    session_id: Annotated[str, Path(max_length=1024)],
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    cursor: Annotated[Optional[str], Query(max_length=4096)] = None,
) -> SessionTimeline:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits, default_span=limits.lookup_span)
        summary = queries.session_summary(store, principal.scope, session_id, window)
        if summary is None:
            return None, [], None
        rows, next_cursor = queries.search_events(
            store, principal.scope, queries.EventFilters(session_id=session_id), window,
            limit=limit, cursor=cursor, descending=False, limits=limits,
        )
        return summary, rows, next_cursor

    summary, rows, next_cursor = await run_query(read)
    if summary is None:
        raise not_found("such session")
    return SessionTimeline(
        summary=SessionSummary(**summary), events=[EventPublic.of(r) for r in rows], next_cursor=next_cursor
    )
