"""``GET /v1/clients``: the client inventory; ``GET /v1/clients/{client_id}``: one client's history."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Optional

from fastapi import APIRouter, Path, Query

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..models import ClientInventoryItem, ClientPublic, Page
from ..querying import not_found, run_query

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["clients"])


@router.get(
    "/clients",
    response_model=Page[ClientInventoryItem],
    summary="Clients seen (by tenant and client_id), with how they registered",
    description="The range defaults to the last 31 days.",
)
async def list_clients(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    tenant: Annotated[Optional[str], Query(max_length=1024)] = None,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[Optional[str], Query(max_length=4096)] = None,
) -> Page[ClientInventoryItem]:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits, default_span=limits.lookup_span)
        return queries.list_clients(store, principal.scope, window, tenant=tenant, limit=limit, cursor=cursor,
                                    limits=limits)

    rows, next_cursor = await run_query(read)
    return Page[ClientInventoryItem](items=[ClientInventoryItem(**r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/clients/{client_id:path}",
    response_model=ClientPublic,
    summary="A client: CIMD fetches and DCR registrations, principals, servers",
    description="`client_id` may be a URL (CIMD); percent-encode it. The range defaults to the last 31 days.",
    responses={404: {"description": "no such client in your tenants and range"}},
)
async def client_detail(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    client_id: Annotated[str, Path(max_length=1024)],
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
) -> ClientPublic:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits, default_span=limits.lookup_span)
        return queries.client_detail(store, principal.scope, client_id, window)

    found = await run_query(read)
    if found is None:
        raise not_found("such client")
    return ClientPublic(**found)
