"""``GET /v1/inventory/servers`` and ``/v1/inventory/tools``: what exists, and how tools drifted."""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Optional

from fastapi import APIRouter, Query

from mcpsift.store import queries

from ..deps import QueryLimitsDep, StoreDep, ViewerDep
from ..models import Page, ServerInventoryItem, ToolInventoryItem
from ..querying import run_query

__all__ = ["router"]

router = APIRouter(prefix="/v1/inventory", tags=["inventory"])


@router.get(
    "/servers",
    response_model=Page[ServerInventoryItem],
    summary="MCP servers seen, with traffic, tools and principals",
    description="The range defaults to the last 31 days.",
)
async def list_servers(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    tenant: Annotated[Optional[str], Query(max_length=1024)] = None,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[Optional[str], Query(max_length=4096)] = None,
) -> Page[ServerInventoryItem]:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits, default_span=limits.lookup_span)
        return queries.list_servers(store, principal.scope, window, tenant=tenant, limit=limit, cursor=cursor,
                                    limits=limits)

    rows, next_cursor = await run_query(read)
    return Page[ServerInventoryItem](items=[ServerInventoryItem.of(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/tools",
    response_model=Page[ToolInventoryItem],
    summary="Tools per server with their definition-hash history (drift view)",
    description="From `mcp.tools_list` events. `drifted=true` keeps only tools whose definition changed. "
    "The range defaults to the last 31 days.",
)
async def list_tools(
    principal: ViewerDep,
    store: StoreDep,
    limits: QueryLimitsDep,
    tenant: Annotated[Optional[str], Query(max_length=1024)] = None,
    server: Annotated[Optional[str], Query(max_length=1024, description="server name or resource URI")] = None,
    tool_name: Annotated[Optional[str], Query(max_length=1024)] = None,
    drifted: bool = False,
    since: Optional[_dt.datetime] = None,
    until: Optional[_dt.datetime] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[Optional[str], Query(max_length=4096)] = None,
) -> Page[ToolInventoryItem]:
    def read():  # type: ignore[no-untyped-def]
        window = queries.resolve_range(since, until, limits, default_span=limits.lookup_span)
        return queries.list_tools(
            store, principal.scope, window, tenant=tenant, server=server, tool_name=tool_name,
            drifted_only=drifted, limit=limit, cursor=cursor, limits=limits,
        )

    rows, next_cursor = await run_query(read)
    return Page[ToolInventoryItem](items=[ToolInventoryItem(**r) for r in rows], next_cursor=next_cursor)
