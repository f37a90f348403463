"""``GET /v1/events``: search the event log; ``GET /v1/events/{event_id}``: one event.

Both read only the caller's tenants (the store applies ``principal.scope``)."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, Path, Query

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..models import EventDetail, EventPublic, Page
from ..querying import not_found, run_query

__all__ = ["router", "EventSearch", "event_filters"]

router = APIRouter(prefix="/v1", tags=["events"])

_V = Annotated[Optional[str], Query(max_length=1024)]


class EventSearch:
    """The filters of an event search (shared with the export)."""

    def __init__(
        self,
        tenant: _V = None,
        type: Annotated[Optional[str], Query(max_length=64, description="event type, e.g. mcp.tool_call")] = None,
        principal_subject: _V = None,
        client_id: _V = None,
        session_id: _V = None,
        token_fingerprint: _V = None,
        server: Annotated[Optional[str], Query(max_length=1024, description="server name or resource URI")] = None,
        tool_name: _V = None,
        outcome: Optional[Literal["ok", "error", "denied"]] = None,
        source: Annotated[Optional[str], Query(max_length=1024, description="source name or kind")] = None,
        since: Annotated[Optional[_dt.datetime], Query(description="from (inclusive); default: until minus 24 h")] = None,
        until: Annotated[Optional[_dt.datetime], Query(description="to (exclusive); default: now")] = None,
    ):
        self.filters = queries.EventFilters(
            tenant=tenant, type=type, principal_subject=principal_subject, client_id=client_id,
            session_id=session_id, token_fingerprint=token_fingerprint, server=server, tool_name=tool_name,
            outcome=outcome, source=source,
        )
        self.since = since
        self.until = until


def event_filters(search: Annotated[EventSearch, Depends()]) -> EventSearch:
    return search


@router.get(
    "/events",
    response_model=Page[EventPublic],
    summary="Search events (newest first unless order=asc)",
    description="Filters combine with AND. The time range defaults to the last 24 hours and may span at most "
    "31 days. Page with `cursor` (from `next_cursor`).",
)
async def search_events(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    search: Annotated[EventSearch, Depends(event_filters)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[Optional[str], Query(max_length=4096)] = None,
    order: Literal["desc", "asc"] = "desc",
) -> Page[EventPublic]:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(search.since, search.until, limits)
        return queries.search_events(
            store, principal.scope, search.filters, window, limit=limit, cursor=cursor,
            descending=order == "desc", limits=limits,
        )

    rows, next_cursor = await run_query(read)
    return Page[EventPublic](items=[EventPublic.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/events/{event_id}", response_model=EventDetail, summary="One event, with the stored record",
            responses={404: {"description": "no such event in your tenants"}})
async def get_event(
    principal: ViewerDep, store: StoreDep, event_id: Annotated[str, Path(max_length=1024)]
) -> EventDetail:
    row = await run_query(queries.get_event, store, principal.scope, event_id)
    if row is None:
        raise not_found("such event")
    return EventDetail.of(row)
